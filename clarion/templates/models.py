"""A template: one campaign's content for one channel in one locale (§B7)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, JSONDoc
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned


class Template(ProjectOwned, IntPK, Timestamps, Base):
    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("campaign_id", "type", "locale"),
        Index("ix_templates_project_locale", "project_id", "locale"),
    )

    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(10), nullable=False)
    locale: Mapped[str] = mapped_column(String(6), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
