from __future__ import annotations

from datetime import datetime
from typing import Any

from clarion.api.schemas import ResponseModel


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
