"""Column mixins shared by domain models."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from clarion.core.db import BigIntPK, UTCDateTime


class IntPK:
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)
