"""Wire models for following a send: trigger progress and a message's timeline (§E1, §E8)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clarion.api.schemas import ResponseModel


class TriggerProgress(ResponseModel):
    trigger_id: str
    campaign_id: int
    kind: str
    state: str
    recipients: int | None = None
    messages: dict[str, int]
    created_at: datetime
    materialised_at: datetime | None = None


class MessageEventOut(ResponseModel):
    id: str
    type: str
    data: dict[str, Any] | None = None
    created_at: datetime


class MessageTimeline(ResponseModel):
    message_id: str
    campaign_id: int
    trigger_id: str
    user_id: int
    channel: str
    state: str
    attempts: int
    skip_reason: str | None = None
    last_error: str | None = None
    provider_id: int | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    events: list[MessageEventOut]
