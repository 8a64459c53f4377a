"""Signed tokens carried in tracking, unsubscribe and preference URLs.

A token is ``base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload)[:16])``; the key is
derived from the process secret for the ``tracking`` purpose. Verification uses
``hmac.compare_digest``; a token whose signature or payload does not check out is ``None``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from clarion.core.crypto import derive_key

KINDS = ("c", "o", "u", "p")  # click, open, unsubscribe, preferences
_SIG_BYTES = 16


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    # ``base64.urlsafe_b64encode`` without its two wrapper calls (this runs ~26 times per email).
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies tokens with one derived key (cheap to build; cache one per secret)."""

    def __init__(self, secret_key: str) -> None:
        self._key = derive_key(secret_key, "tracking")

    def _mac(self, body: bytes) -> bytes:
        return hmac.digest(self._key, body, hashlib.sha256)[:_SIG_BYTES]

    def sign(self, kind: str, payload: dict[str, Any]) -> str:
        body = orjson.dumps({"k": kind, **payload})
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def verify(self, kind: str, token: str) -> dict[str, Any] | None:
        head, sep, sig = token.partition(".")
        if not sep or not head or not sig:
            return None
        try:
            body = _unb64(head)
            given = _unb64(sig)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(body)):
            return None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict) or payload.get("k") != kind:
            return None
        return payload
