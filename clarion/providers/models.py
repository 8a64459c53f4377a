"""A configured provider (contract §B13, §E7). Credentials live only in ``data_encrypted``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned

PROVIDER_GROUPS = ("email", "text", "push", "webhook", "in_app", "analytics")
RATE_INTERVALS = ("second", "minute", "hour", "day")


class Provider(ProjectOwned, IntPK, Timestamps, Base):
    __tablename__ = "providers"
    # At most one default provider per (project, group), enforced by the database too.
    __table_args__ = (
        Index(
            "ux_providers_default_per_group",
            "project_id",
            "group",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    type: Mapped[str] = mapped_column(String(30), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    group: Mapped[str] = mapped_column(String(10), nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    rate_limit: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # 0 = unlimited
    rate_interval: Mapped[str] = mapped_column(String(6), nullable=False, default="second")
    data_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
