"""The locales a project writes templates in (§C, §E8)."""

from __future__ import annotations

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned


class Locale(ProjectOwned, IntPK, Timestamps, Base):
    __tablename__ = "locales"
    __table_args__ = (UniqueConstraint("project_id", "key"),)

    key: Mapped[str] = mapped_column(String(6), nullable=False)
    label: Mapped[str] = mapped_column(String(100), nullable=False, default="")
