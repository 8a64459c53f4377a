"""Tables of the generic due-work machinery: background jobs, idempotency records, leader leases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from clarion.core.db import Base, JSONDoc, UTCDateTime
from clarion.core.models import IntPK, Timestamps


class Job(IntPK, Timestamps, Base):
    """One unit of background work (list build, CSV import, async upsert, …).

    Like every due-work table it has ``state``, ``due_at``, ``lease_until`` and ``attempts``;
    :func:`clarion.core.queue.claim_due` claims from it.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "state", "due_at"),)

    project_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(60), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(12), nullable=False, default="queued")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=10)
    last_error: Mapped[str | None] = mapped_column(Text)


class IdempotencyRecord(Base):
    """A stored response for (API key, Idempotency-Key); see clarion.api.idempotency."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(12), nullable=False)  # in_progress | completed
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    request_id: Mapped[str | None] = mapped_column(String(40))
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class LeaderLease(Base):
    """Which process currently runs a singleton role (the scheduler), until when."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120), nullable=False)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
