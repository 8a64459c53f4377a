"""Lists and their membership.

``lists`` holds both kinds: static lists (membership edited through the API or a CSV import) and
dynamic lists (membership materialised from ``rule``). ``list_users`` is the membership of both;
campaigns select their audience from it in SQL (:func:`clarion.lists.queries.audience_user_ids`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, JSONDoc, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned

# Importing the models registers the SQLite functions the rule compiler needs on every connection.
from clarion.lists import sqlite_functions  # noqa: F401


class UserList(ProjectOwned, IntPK, Timestamps, Base):
    """A list. ``state``: draft → loading → ready; ``version`` counts rule edits.

    ``rule_event_names`` and ``rule_reads_user`` say which writes can change a dynamic list's
    membership, so user upserts and event ingestion re-evaluate only the lists they can affect.
    ``import_status`` reports the progress of the latest CSV import into a static list.
    """

    __tablename__ = "lists"
    __table_args__ = (Index("ix_lists_project_updated", "project_id", "updated_at"),)

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    type: Mapped[str] = mapped_column(String(10), nullable=False)
    state: Mapped[str] = mapped_column(String(10), nullable=False, default="ready")
    rule: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    published: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    users_count: Mapped[int | None] = mapped_column(BigInteger)
    is_visible: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rule_event_names: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False, default=list)
    rule_reads_user: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    import_status: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)


class ListUser(Base):
    """Membership: one row per (list, user). Project-scoped by ``project_id`` (Core SQL filters it)."""

    __tablename__ = "list_users"
    __table_args__ = (Index("ix_list_users_project_user", "project_id", "user_id"),)

    list_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # The list's project, copied for scoping; no foreign key of its own (the list's cascades).
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
