"""Encryption at rest for secrets (provider credentials, webhook signing secrets) and signing of
URL tokens. One Fernet key derived from ``CLARION_SECRET_KEY`` with HKDF, one per purpose."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarion.core.settings import Settings

__all__ = [
    "InvalidToken",
    "decrypt_bytes",
    "decrypt_json",
    "decrypt_text",
    "derive_key",
    "encrypt_bytes",
    "encrypt_json",
    "encrypt_text",
    "fernet_for",
]


@lru_cache(maxsize=32)
def derive_key(secret_key: str, purpose: str) -> bytes:
    """32 bytes for ``purpose`` derived from the process secret (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"clarion:{purpose}".encode()).derive(
        secret_key.encode()
    )


@lru_cache(maxsize=8)
def _fernet(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "encryption-at-rest")))


def encrypt_bytes(secret_key: str, plaintext: bytes) -> bytes:
    return _fernet(secret_key).encrypt(plaintext)


def decrypt_bytes(secret_key: str, token: bytes) -> bytes:
    return _fernet(secret_key).decrypt(token)


def encrypt_json(secret_key: str, value: Any) -> bytes:
    return encrypt_bytes(secret_key, orjson.dumps(value))


def decrypt_json(secret_key: str, token: bytes) -> Any:
    return orjson.loads(decrypt_bytes(secret_key, token))


def fernet_for(settings: Settings) -> Fernet:
    """The deployment's Fernet for secrets at rest (one key, from ``CLARION_SECRET_KEY``)."""
    return _fernet(settings.resolved_secret_key())


def encrypt_text(settings: Settings, plaintext: str) -> str:
    return fernet_for(settings).encrypt(plaintext.encode()).decode()


def decrypt_text(settings: Settings, token: str) -> str:
    """Raises :class:`InvalidToken` when the value was encrypted under another secret key."""
    return fernet_for(settings).decrypt(token.encode()).decode()
