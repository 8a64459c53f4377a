"""Wire models for events (§B2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clarion.api.schemas import RequestModel, ResponseModel


class EventIdentify(RequestModel):
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    data: dict[str, Any] | None = None


class EventInput(RequestModel):
    name: str
    external_id: str | None = None
    anonymous_id: str | None = None
    data: dict[str, Any] | None = None
    user: EventIdentify | None = None
    created_at: datetime | None = None


class EventUser(ResponseModel):
    external_id: str | None
    anonymous_id: str | None


class EventRecord(ResponseModel):
    id: str
    name: str
    created_at: datetime
    user: EventUser
    campaign_id: int | None
    data: dict[str, Any] | None = None


class EventAggregationRecord(ResponseModel):
    event_name: str | None = None
    campaign_id: int | None = None
    user: EventUser | None = None
    day: str | None = None
    count: int
    unique_user_count: int
    first_seen_at: datetime | None
    last_seen_at: datetime | None


_schema = EventInput.model_json_schema()
_schema.pop("$defs", None)
_schema["properties"]["user"] = {"anyOf": [EventIdentify.model_json_schema(), {"type": "null"}]}
EVENT_ITEMS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "minItems": 1, "maxItems": 100, "items": _schema}}
        },
    }
}
