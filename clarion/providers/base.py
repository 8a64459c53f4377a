"""What a provider must do: take a batch of rendered messages and say what happened to each.

One small interface for every channel (architecture §7). The pipeline renders, a provider only
delivers; results carry enough for the pipeline to retry (``transient``), fail, or suppress.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["sent", "delivered", "failed", "bounced"]


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message ready for a provider.

    ``message_id`` is the ``msg_`` id (or a proof id); ``to`` the channel address (email, E.164
    phone, device token, URL); ``content`` the rendered fields of the channel; ``mime`` the full
    RFC 5322 bytes for email; ``envelope_from`` the SMTP MAIL FROM.
    """

    message_id: str
    channel: str
    to: str
    content: dict[str, Any]
    mime: bytes | None = None
    envelope_from: str | None = None


@dataclass
class SendResult:
    message_id: str
    outcome: Outcome
    provider_message_id: str | None = None
    transient: bool = False  # a failure worth retrying (timeouts, 4xx SMTP, 429, 5xx HTTP)
    error: str | None = None
    # Protocol-level observations (e.g. "delivery.rcpt-to-rejected") for delivery events.
    observations: list[dict[str, Any]] = field(default_factory=list)


class ChannelProvider(Protocol):
    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Deliver ``messages``; return one result per message, in order."""
        ...

    async def close(self) -> None: ...
