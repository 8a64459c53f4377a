"""Wire models for subscriptions (§B5) and suppressions (§E8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from clarion.api.schemas import RequestModel, ResponseModel

Channel = Literal["email", "text", "push", "webhook", "in_app"]
State = Literal[0, 1, 2]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class SubscriptionCreate(RequestModel):
    name: Name
    channel: Channel
    is_public: bool = False


class SubscriptionUpdate(RequestModel):
    name: Name
    is_public: bool


class SubscriptionOut(ResponseModel):
    id: int
    project_id: int
    name: str
    channel: Channel
    is_public: bool
    created_at: datetime
    updated_at: datetime


class StateChange(RequestModel):
    subscription_id: int = Field(ge=1, le=2**63 - 1)
    state: State


class UserSubscriptionOut(ResponseModel):
    subscription_id: int
    state: int
    name: str
    channel: str


class ToggleItem(RequestModel):
    external_id: str | None = None
    anonymous_id: str | None = None
    subscription_id: int = Field(ge=1, le=2**63 - 1)
    state: State


class ToggleError(ResponseModel):
    code: str
    message: str


class ToggleResult(ResponseModel):
    index: int
    external_id: str | None = None
    anonymous_id: str | None = None
    subscription_id: int | None = None
    state: int | None = None
    error: ToggleError | None = None


class ToggleResponse(ResponseModel):
    results: list[ToggleResult]
    succeeded: int
    failed: int


class SuppressionCreate(RequestModel):
    channel: Literal["email", "text"]
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    reason: Literal["hard_bounce", "complaint", "manual", "stop_keyword"] = "manual"


class SuppressionOut(ResponseModel):
    id: int
    project_id: int
    channel: str
    address: str
    reason: str
    created_at: datetime
    updated_at: datetime
