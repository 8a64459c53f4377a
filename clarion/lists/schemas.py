"""Wire models for lists (contract §B4, §E8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from clarion.api.schemas import RequestModel, ResponseModel

ListName = Annotated[str, Field(min_length=1, max_length=255)]


class RulePeriod(RequestModel):
    type: Literal["rolling", "fixed"]
    unit: str | None = None
    value: float | None = None
    start_date: str | None = None
    end_date: str | None = None


class RuleFrequency(RequestModel):
    period: RulePeriod
    operator: str
    count: float


class RuleNode(RequestModel):
    """One node of a rule tree; ``type``/``group``/``operator`` are checked by the rule validator so
    that errors name the node's ``uuid``."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    uuid: Annotated[str, Field(min_length=1, max_length=100)]
    root_uuid: str | None = None
    parent_uuid: str | None = None
    type: str
    group: str
    path: str = ""
    operator: str
    value: str | float | bool | None = None
    frequency: RuleFrequency | None = None
    children: list[RuleNode] | None = None


class StaticListCreate(RequestModel):
    name: ListName
    type: Literal["static"]
    tags: list[str] | None = None
    is_visible: bool | None = None


class DynamicListCreate(RequestModel):
    name: ListName
    type: Literal["dynamic"]
    rule: RuleNode
    tags: list[str] | None = None
    is_visible: bool | None = None


ListCreate = Annotated[StaticListCreate | DynamicListCreate, Field(discriminator="type")]


class ListUpdate(RequestModel):
    name: ListName
    rule: RuleNode | None = None
    tags: list[str] | None = None
    published: bool | None = None
    is_visible: bool | None = None


class ImportStatus(ResponseModel):
    state: str
    filename: str | None = None
    processed_rows: int = 0
    added_rows: int = 0
    failed_rows: int = 0
    errors: list[dict[str, Any]] = []
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ListOut(ResponseModel):
    id: int
    project_id: int
    name: str
    type: Literal["static", "dynamic"]
    state: Literal["draft", "ready", "loading"]
    rule: dict[str, Any] | None = None
    rule_id: int | None = None
    version: int
    users_count: int | None = None
    tags: list[str] | None = None
    is_visible: bool
    published: bool
    refreshed_at: datetime | None = None
    archived_at: datetime | None = None
    import_status: ImportStatus | None = Field(default=None, alias="import")
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class ListMembersAdd(RequestModel):
    external_ids: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=255)]], Field(min_length=1, max_length=1000)
    ]


class ListMembersResult(ResponseModel):
    added: int = 0
    removed: int = 0
    missing: list[str] = []


class ListMemberOut(ResponseModel):
    """A member of a list: identity fields only (``data`` is read through ``GET /users/{id}``)."""

    id: int
    project_id: int
    external_id: str | None = None
    anonymous_id: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    created_at: datetime
    updated_at: datetime
