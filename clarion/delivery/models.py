"""The delivery ledger: triggers, one message per (campaign, trigger, user), message events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from clarion.core.db import Base, BigIntPK, JSONDoc, UTCDateTime
from clarion.core.models import IntPK, Timestamps
from clarion.core.tenancy import ProjectOwned

# A message still to be handed to a provider (claimed or not); every other state is final.
PENDING_MESSAGE_STATES = ("queued", "sending", "throttled")
PENDING = text("state IN ({})".format(", ".join(f"'{state}'" for state in PENDING_MESSAGE_STATES)))


class Trigger(ProjectOwned, IntPK, Timestamps, Base):
    """One firing of a campaign: its audience, per-call recipients or one user (§E1)."""

    __tablename__ = "triggers"
    __table_args__ = (UniqueConstraint("campaign_id", "idempotency_key"),)

    # No foreign key to the project or the campaign and no project index (docs/decisions/0006):
    # a trigger is found by its public id or by campaign; deleting a campaign deletes its triggers.
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    public_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)  # trg_<ULID>
    # Looked up by the (campaign_id, idempotency_key) unique index, which also serves campaign_id.
    campaign_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)  # audience | users | user | schedule
    state: Mapped[str] = mapped_column(String(14), nullable=False, default="pending")
    event: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    recipients: Mapped[int | None] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    materialised_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Message(ProjectOwned, Base):
    """One message to one user. Due work: claimed by workers by ``state``/``due_at``/``lease_until``."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("campaign_id", "trigger_id", "user_id"),
        # Due work only, on PostgreSQL: a message leaves both indexes when it is sent, failed or
        # skipped, so they hold the pending rows, not the whole history, and a message's last
        # update writes two index entries fewer. (SQLite's planner would not use them for
        # `state = 'queued'`: it does not prove that this implies the IN list.)
        Index("ix_messages_due", "state", "due_at", postgresql_where=PENDING),
        Index("ix_messages_campaign_due", "campaign_id", "state", "due_at", postgresql_where=PENDING),
        Index("ix_messages_trigger", "trigger_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # No foreign key to the project or the campaign and no project index (docs/decisions/0006):
    # a message goes with its trigger (the cascade below), and every query reaches it by id,
    # public id, trigger or campaign.
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    public_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)  # msg_<ULID>
    campaign_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    trigger_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("triggers.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    channel: Mapped[str] = mapped_column(String(10), nullable=False)
    # queued → sending → sent → delivered | failed | bounced; skipped; aborted
    state: Mapped[str] = mapped_column(String(10), nullable=False, default="queued")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    skip_reason: Mapped[str | None] = mapped_column(String(40))
    provider_id: Mapped[int | None] = mapped_column(BigInteger)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)  # per-call attributes + event
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class MessageEvent(ProjectOwned, Base):
    """Append-only history of a message: queued, sent, delivered, opened, clicked, …"""

    __tablename__ = "message_events"
    __table_args__ = (
        Index("ix_message_events_message", "message_id", "created_at"),
        Index("ix_message_events_project_created", "project_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # ix_message_events_project_created leads with project_id, so the mixin's single-column index
    # is not created (one index write fewer per appended event); no foreign key to the project
    # (docs/decisions/0006): an event goes with its message.
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    public_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)  # evt_<ULID>
    message_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False)
    campaign_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


# The tables themselves, for Core statements (bulk writes, INSERT … SELECT, claims).
MESSAGES: Table = Message.__table__  # type: ignore[assignment]
MESSAGE_EVENTS: Table = MessageEvent.__table__  # type: ignore[assignment]

__all__ = ["MESSAGES", "MESSAGE_EVENTS", "Message", "MessageEvent", "Trigger"]
