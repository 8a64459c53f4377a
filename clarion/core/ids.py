"""Prefixed identifiers (`req_`, `trg_`, `msg_`, `evt_`, `whd_`) and API key values."""

from __future__ import annotations

import hashlib
import secrets

from ulid import ULID


def prefixed_ulid(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def request_id() -> str:
    return prefixed_ulid("req")


def new_key_value(prefix: str) -> str:
    """A key value with 32 bytes (256 bits) of entropy, e.g. ``sk_…``."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_key(value: str) -> str:
    """Keys carry 256 bits of entropy, so a fast cryptographic hash is a safe one-way store."""
    return hashlib.sha256(value.encode()).hexdigest()


def mask_key(prefix: str, last4: str) -> str:
    return f"{prefix}_...{last4}"
