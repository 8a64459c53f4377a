from __future__ import annotations

from datetime import datetime

from pydantic import Field

from clarion.api.schemas import RequestModel, ResponseModel
from clarion.templates.schemas import LOCALE_PATTERN


class LocaleCreate(RequestModel):
    key: str = Field(pattern=LOCALE_PATTERN)
    label: str | None = Field(default=None, max_length=100)


class LocaleOut(ResponseModel):
    id: int
    project_id: int
    key: str
    label: str
    created_at: datetime
    updated_at: datetime
