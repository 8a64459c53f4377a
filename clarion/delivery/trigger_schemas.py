"""Request and response bodies of `POST /campaigns/{id}/trigger` (contract §B3, §E1)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clarion.api.schemas import contains_nul

MAX_RECIPIENTS = 1000


class TriggerRecipient(BaseModel):
    """One per-call recipient: at least one identifier; other keys are custom attributes."""

    model_config = ConfigDict(extra="allow")

    external_id: str | None = Field(default=None, max_length=255)
    anonymous_id: str | None = Field(default=None, max_length=255)
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    device_token: str | None = None


class TriggerUser(TriggerRecipient):
    """The one-user shape (CampaignTriggerUser): ``external_id`` required."""

    external_id: str = Field(min_length=1, max_length=255)


class CampaignTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[TriggerRecipient] | None = Field(default=None, min_length=1, max_length=MAX_RECIPIENTS)
    user: TriggerUser | None = None
    event: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _reject_nul(cls, data: Any) -> Any:
        if contains_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data


class TriggeredMessage(BaseModel):
    message_id: str
    user_id: int
    external_id: str | None = None
    state: str
    skip_reason: str | None = None


class TriggerResponse(BaseModel):
    success: bool
    trigger_id: str
    campaign_id: int
    recipients: int | None = None
    messages: list[TriggeredMessage] | None = None
