"""The public URLs of tracking, unsubscribe and preference endpoints (outside ``/api``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from clarion.tracking.tokens import TokenSigner

CLICK_PATH = "/t/c/"
OPEN_PATH = "/t/o/"
UNSUBSCRIBE_PATH = "/u/"
PREFERENCES_PATH = "/p/"


@dataclass(frozen=True)
class TrackingUrls:
    """Builds signed URLs on ``base_url`` for one project."""

    base_url: str
    signer: TokenSigner
    project_id: int

    @cached_property
    def root(self) -> str:
        return self.base_url.rstrip("/")

    def is_wrapped(self, url: str) -> bool:
        return url.startswith(self.root + CLICK_PATH)

    def click(self, message_id: str, url: str) -> str:
        return self.root + CLICK_PATH + self.signer.sign("c", {"p": self.project_id, "m": message_id, "u": url})

    def open_pixel(self, message_id: str) -> str:
        return self.root + OPEN_PATH + self.signer.sign("o", {"p": self.project_id, "m": message_id})

    def unsubscribe(self, message_id: str, user_id: int | None, subscription_id: int | None) -> str:
        payload = {"p": self.project_id, "m": message_id, "u": user_id, "s": subscription_id}
        return self.root + UNSUBSCRIBE_PATH + self.signer.sign("u", payload)

    def preferences(self, user_id: int | None) -> str:
        return self.root + PREFERENCES_PATH + self.signer.sign("p", {"p": self.project_id, "u": user_id})
