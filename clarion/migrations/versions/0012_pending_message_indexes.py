"""messages: the due-work indexes hold pending messages only (PostgreSQL)

SQLite keeps them whole: its planner would not use a partial index for ``state = 'queued'``.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "state IN ('queued', 'sending', 'throttled')"
INDEXES = (
    ("ix_messages_due", ["state", "due_at"]),
    ("ix_messages_campaign_due", ["campaign_id", "state", "due_at"]),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, columns in INDEXES:
        op.drop_index(name, table_name="messages")
        op.create_index(name, "messages", columns, postgresql_where=sa.text(PENDING))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, columns in INDEXES:
        op.drop_index(name, table_name="messages")
        op.create_index(name, "messages", columns)
