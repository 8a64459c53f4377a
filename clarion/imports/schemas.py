"""Wire models for CSV user imports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clarion.api.schemas import ResponseModel


class UserImportOut(ResponseModel):
    id: int
    project_id: int
    state: str
    filename: str | None
    list_id: int | None
    processed_rows: int
    imported_rows: int
    failed_rows: int
    errors: list[dict[str, Any]]
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
