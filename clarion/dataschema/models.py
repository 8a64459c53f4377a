"""Every user-attribute and event-payload leaf path ever written, with its inferred type."""

from __future__ import annotations

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned


class DataSchemaPath(ProjectOwned, IntPK, Timestamps, Base):
    """``kind`` is ``user`` or ``event``; ``event_name`` is ``""`` for user paths.

    ``data_type`` (string, number, boolean, date, array) is inferred from the first value seen and
    never overridden; ``visibility`` (public, hidden, classified) is the only editable field.
    """

    __tablename__ = "data_schema_paths"
    __table_args__ = (Index("ux_data_schema_paths_key", "project_id", "kind", "event_name", "path", unique=True),)

    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    event_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    data_type: Mapped[str] = mapped_column(String(10), nullable=False)
    visibility: Mapped[str] = mapped_column(String(12), nullable=False, default="public")
