"""Signing secrets and the three signature schemes Clarion emits.

- ``Spotzee-Signature: t=<unix>,v1=<hex>`` — HMAC-SHA256 keyed by the whole secret string over
  ``"<t>.<raw body>"`` (the Stripe scheme, so ``stripe.WebhookSignature`` verifies it);
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``
  keyed by the base64-decoded part after ``whsec_`` over ``"<id>.<t>.<raw body>"``;
- test sends: ``X-Spotzee-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.

During a rotation grace period every scheme carries one signature per valid secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_BYTES = 32


def new_signing_secret() -> str:
    """``whsec_`` + standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def standard_webhooks_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key: the bytes behind ``whsec_``; a secret not in that form
    (one supplied by the user) is used as its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :] + "==", validate=False)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def signature_headers(webhook_id: str, timestamp: int, body: bytes, secrets_: Sequence[str]) -> dict[str, str]:
    """Every signature header of one production delivery, for each secret in ``secrets_``."""
    t = str(timestamp).encode()
    stripe_parts = [f"t={timestamp}"]
    standard_parts = []
    standard_message = webhook_id.encode() + b"." + t + b"." + body
    for secret in secrets_:
        stripe_parts.append("v1=" + _hmac_sha256(secret.encode(), t + b"." + body).hex())
        digest = _hmac_sha256(standard_webhooks_key(secret), standard_message)
        standard_parts.append("v1," + base64.b64encode(digest).decode())
    return {
        "Spotzee-Signature": ",".join(stripe_parts),
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(standard_parts),
    }


def sign_test_send(body: bytes, secret: str) -> str:
    """``X-Spotzee-Signature`` of a test send."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
