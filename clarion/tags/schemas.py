from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from clarion.api.schemas import RequestModel, ResponseModel

TagName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Field()]


class TagCreate(RequestModel):
    name: TagName


class TagUpdate(RequestModel):
    name: TagName


class TagOut(ResponseModel):
    id: int
    project_id: int
    name: str
    created_at: datetime
    updated_at: datetime
