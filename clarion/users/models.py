"""People of a project: identified by ``external_id`` and/or an ``anonymous_id``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, JSONDoc, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned


class User(ProjectOwned, IntPK, Timestamps, Base):
    """A user profile. ``external_id`` is the upsert key; anonymous users have only ``anonymous_id``.

    Both identifiers are unique per project (NULLs never collide), so an identity maps to exactly
    one row and the upsert paths can rely on ``ON CONFLICT``.
    """

    __tablename__ = "users"
    __table_args__ = (
        Index("ux_users_project_external", "project_id", "external_id", unique=True),
        Index("ux_users_project_anonymous", "project_id", "anonymous_id", unique=True),
        Index("ix_users_project_email", "project_id", "email"),
        Index("ix_users_project_phone", "project_id", "phone"),
    )

    # Every index of this table leads with project_id, so the mixin's single-column index is dropped
    # (one index fewer to maintain on the hot insert path), and so is its foreign key: a row-by-row
    # check on every insert, for projects that are never deleted (docs/decisions/0005).
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    external_id: Mapped[str | None] = mapped_column(String(255))
    anonymous_id: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    devices: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False, default=list)
    has_push_device: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class UserSession(ProjectOwned, IntPK, Base):
    """A short-lived ``X-Spotzee-User-Token``; only the SHA-256 of the token is stored."""

    __tablename__ = "user_sessions"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
