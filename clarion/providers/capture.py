"""The built-in `capture` provider: a sink that stores rendered messages instead of delivering
them, readable through `GET /captured`. It lets the embedded default show sends with no vendor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.bulk import insert_rows
from clarion.core.clock import utcnow
from clarion.core.db import Base, BigIntPK, Database, JSONDoc, UTCDateTime
from clarion.core.tenancy import ProjectOwned
from clarion.providers.base import OutgoingMessage, SendResult


class CapturedMessage(ProjectOwned, Base):
    __tablename__ = "captured_messages"
    __table_args__ = (Index("ix_captured_messages_project_created", "project_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # ix_captured_messages_project_created leads with project_id: no single-column index, and no
    # foreign key to the project (docs/decisions/0006).
    project_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    provider_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    channel: Mapped[str] = mapped_column(String(10), nullable=False)
    to: Mapped[str] = mapped_column(String(2048), nullable=False)
    content: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    mime: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


CAPTURED: Table = CapturedMessage.__table__  # type: ignore[assignment]


class CaptureProvider:
    """Stores each message as a row; every message counts as delivered."""

    def __init__(self, db: Database, project_id: int, provider_id: int | None = None) -> None:
        self.db = db
        self.project_id = project_id
        self.provider_id = provider_id

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        now = utcnow()
        rows = [
            {
                "project_id": self.project_id,
                "provider_id": self.provider_id,
                "message_id": m.message_id,
                "channel": m.channel,
                "to": m.to,
                "content": m.content,
                "mime": m.mime.decode("utf-8", "replace") if m.mime is not None else None,
                "created_at": now,
            }
            for m in messages
        ]
        async with self.db.transaction(project_id=self.project_id) as session:
            await insert_rows(session, CAPTURED, rows)
        return [SendResult(m.message_id, "delivered", provider_message_id=f"capture:{m.message_id}") for m in messages]

    async def close(self) -> None:
        return None
