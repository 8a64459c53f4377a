"""Tracked events: append-only, attached to one user."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, JSONDoc, UTCDateTime
from clarion.core.models import IntPK
from clarion.core.tenancy import ProjectOwned


class Event(ProjectOwned, IntPK, Base):
    """One tracked event. ``uid`` is the public ``evt_…`` id; ``created_at`` is the event time."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_project_created", "project_id", "created_at"),
        Index("ix_events_project_user_name_created", "project_id", "user_id", "name", "created_at"),
    )

    # Every index of this table leads with project_id, so the mixin's single-column index is dropped
    # (one index fewer to maintain on the hot insert path), and so is its foreign key: a row-by-row
    # check on every insert, for projects that are never deleted (docs/decisions/0005).
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uid: Mapped[str] = mapped_column(String(32), nullable=False)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    campaign_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
