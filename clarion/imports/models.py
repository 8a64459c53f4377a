"""CSV user imports: one row per uploaded file, tracking progress and per-row errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, JSONDoc, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned


class UserImport(ProjectOwned, IntPK, Timestamps, Base):
    """``state``: queued → running → finished | failed. ``errors`` keeps the first rejected rows."""

    __tablename__ = "user_imports"

    state: Mapped[str] = mapped_column(String(12), nullable=False, default="queued")
    filename: Mapped[str | None] = mapped_column(String(255))
    stored_path: Mapped[str] = mapped_column(Text, nullable=False)
    list_id: Mapped[int | None] = mapped_column(BigInteger)
    processed_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    imported_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed_rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False, default=list)
    last_error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
