"""Wire models for `/data-schema` (§E8)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from clarion.api.schemas import RequestModel, ResponseModel

Visibility = Literal["public", "hidden", "classified"]


class DataSchemaPathOut(ResponseModel):
    id: int
    project_id: int
    kind: Literal["user", "event"]
    event_name: str | None
    path: str
    type: str
    visibility: Visibility
    created_at: datetime
    updated_at: datetime


class DataSchemaPathUpdate(RequestModel):
    visibility: Visibility


class RebuildOut(ResponseModel):
    success: bool
