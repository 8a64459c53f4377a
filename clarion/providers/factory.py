"""Turning a configured provider row into something that can send (one place for every type)."""

from __future__ import annotations

from clarion.api.errors import ApiError, ErrorCode
from clarion.core.db import Database
from clarion.providers.base import ChannelProvider
from clarion.providers.capture import CaptureProvider
from clarion.providers.models import Provider


def get_sender(db: Database, provider: Provider) -> ChannelProvider:
    """A sender for ``provider``; its credentials are decrypted only here, when needed."""
    if provider.type == "capture":
        return CaptureProvider(db, provider.project_id, provider.id)
    raise ApiError(
        ErrorCode.validation_failed, f"Provider type {provider.type!r} cannot send in this build.", param="provider_id"
    )
