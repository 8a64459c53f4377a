"""message_events, triggers: drop single-column indexes a composite index already covers

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, index, column): each is the leading column of ix_message_events_project_created and
# uq_triggers_campaign_id_idempotency_key respectively.
COVERED = (
    ("message_events", "ix_message_events_project_id", "project_id"),
    ("triggers", "ix_triggers_campaign_id", "campaign_id"),
)


def upgrade() -> None:
    for table, index, _ in COVERED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)


def downgrade() -> None:
    for table, index, column in COVERED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(index, [column], unique=False)
