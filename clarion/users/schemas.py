"""Wire models for users (§B8). Batch items are validated one by one (see ``validation``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clarion.api.errors import ErrorCode
from clarion.api.schemas import RequestModel, ResponseModel


class UserUpsertItem(RequestModel):
    anonymous_id: str | None = None
    external_id: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    data: dict[str, Any] | None = None


class UserOut(ResponseModel):
    id: int
    project_id: int
    external_id: str | None
    anonymous_id: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    data: dict[str, Any]
    has_push_device: bool
    devices: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class ItemError(ResponseModel):
    code: ErrorCode
    message: str


class UserBatchResult(ResponseModel):
    index: int
    external_id: str | None = None
    anonymous_id: str | None = None
    user: UserOut | None = None
    error: ItemError | None = None


class UserBatchResponse(ResponseModel):
    results: list[UserBatchResult]
    succeeded: int
    failed: int


class ItemResult(ResponseModel):
    """§E5 per-item result of `POST /events` and `PATCH /users` when some items are invalid."""

    index: int
    id: str | None = None
    error: ItemError | None = None


class ItemResults(ResponseModel):
    results: list[ItemResult]
    succeeded: int
    failed: int


class SessionOut(ResponseModel):
    token: str
    expires_at: datetime | None


USER_ITEMS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "maxItems": 100,
                    "items": UserUpsertItem.model_json_schema(),
                }
            }
        },
    }
}
MAX_ITEMS = 100
