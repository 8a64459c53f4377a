from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from clarion.api.schemas import NonEmptyName, RequestModel, ResponseModel


class CapturedMessageOut(ResponseModel):
    id: int
    project_id: int
    provider_id: int | None = None
    message_id: str
    channel: str
    to: str
    content: dict[str, Any]
    mime: str | None = None
    created_at: datetime


ProviderGroup = Literal["email", "text", "push", "webhook", "in_app", "analytics"]
RateInterval = Literal["second", "minute", "hour", "day"]


class ProviderCreate(RequestModel):
    type: str = Field(min_length=1, max_length=30)
    group: ProviderGroup
    name: NonEmptyName
    data: dict[str, Any] | None = None
    is_default: bool = False
    rate_limit: int = Field(default=0, ge=0, le=1_000_000_000)
    rate_interval: RateInterval = "second"


class ProviderUpdate(RequestModel):
    """Every field optional. ``data`` is merged into the stored credentials (a key set to null is
    removed), so a password need not be sent again to change a port."""

    name: NonEmptyName | None = None
    data: dict[str, Any] | None = None
    is_default: bool | None = None
    rate_limit: int | None = Field(default=None, ge=0, le=1_000_000_000)
    rate_interval: RateInterval | None = None


class ProviderOut(ResponseModel):
    """The redacted Provider (§B13): credentials are never part of a response."""

    id: int
    project_id: int
    type: str
    name: str
    group: str
    is_default: bool
    rate_limit: int
    rate_interval: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


class ProviderTestResult(ResponseModel):
    success: bool
    message: str
