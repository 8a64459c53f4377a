"""Turning a configured provider row into something that can send (one place for every type)."""

from __future__ import annotations

from clarion.api.errors import ApiError, ErrorCode
from clarion.core.db import Database
from clarion.providers.base import ChannelProvider
from clarion.providers.capture import CaptureProvider
from clarion.providers.email.smtp import SmtpProvider, pool_for
from clarion.providers.models import Provider
from clarion.providers.service import smtp_settings


def get_sender(db: Database, provider: Provider) -> ChannelProvider:
    """A sender for ``provider``; its credentials are decrypted only here, when needed.

    SMTP senders share the provider's process-wide connection pool, so calling this once per
    batch reuses open sessions; ``close()`` on the sender leaves the pool open.
    """
    if provider.type == "capture":
        return CaptureProvider(db, provider.project_id, provider.id)
    if provider.type == "smtp":
        settings = smtp_settings(db.settings.resolved_secret_key(), provider)
        return SmtpProvider(settings, pool_for(provider.id, settings))
    raise ApiError(
        ErrorCode.validation_failed, f"Provider type {provider.type!r} cannot send in this build.", param="provider_id"
    )
