from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned


class Tag(ProjectOwned, IntPK, Timestamps, Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    name: Mapped[str] = mapped_column(String(100), nullable=False)


class TagApplication(ProjectOwned, Base):
    """Which resource carries which tag; resources expose these as a list of tag names."""

    __tablename__ = "tag_applications"
    __table_args__ = (Index("ix_tag_applications_resource", "project_id", "resource_type", "resource_id"),)

    tag_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(30), primary_key=True)
    resource_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
