"""Encryption of secrets at rest (webhook signing secrets, provider credentials, …).

One Fernet key per deployment, derived with HKDF-SHA256 from ``Settings.resolved_secret_key()``,
so a single ``CLARION_SECRET_KEY`` protects everything and no second key has to be managed.
Every domain that stores a secret it must read back goes through :func:`encrypt_text` /
:func:`decrypt_text`.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarion.core.settings import Settings

_HKDF_INFO = b"clarion/secrets-at-rest/fernet/v1"

__all__ = ["InvalidToken", "decrypt_text", "encrypt_text", "fernet_for"]


@lru_cache(maxsize=8)
def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def fernet_for(settings: Settings) -> Fernet:
    return _fernet(settings.resolved_secret_key())


def encrypt_text(settings: Settings, plaintext: str) -> str:
    return fernet_for(settings).encrypt(plaintext.encode()).decode()


def decrypt_text(settings: Settings, token: str) -> str:
    """Raises :class:`InvalidToken` when the value was encrypted under another secret key."""
    return fernet_for(settings).decrypt(token.encode()).decode()
