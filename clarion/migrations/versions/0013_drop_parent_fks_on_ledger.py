"""triggers, messages, message_events, captured_messages: no foreign key to the project or the
campaign, no single-column project index (docs/decisions/0006)

A campaign's deletion deletes its triggers explicitly; messages and their events still cascade
from the trigger and the message.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referred table)
FOREIGN_KEYS = (
    ("triggers", "project_id", "projects"),
    ("triggers", "campaign_id", "campaigns"),
    ("messages", "project_id", "projects"),
    ("messages", "campaign_id", "campaigns"),
    ("message_events", "project_id", "projects"),
    ("captured_messages", "project_id", "projects"),
)
PROJECT_INDEXES = ("triggers", "messages", "captured_messages")


def upgrade() -> None:
    for table in ("triggers", "messages", "message_events", "captured_messages"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for fk_table, column, referred in FOREIGN_KEYS:
                if fk_table == table:
                    batch_op.drop_constraint(f"fk_{table}_{column}_{referred}", type_="foreignkey")
            if table in PROJECT_INDEXES:
                batch_op.drop_index(f"ix_{table}_project_id")


def downgrade() -> None:
    for table in ("triggers", "messages", "message_events", "captured_messages"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table in PROJECT_INDEXES:
                batch_op.create_index(f"ix_{table}_project_id", ["project_id"], unique=False)
            for fk_table, column, referred in FOREIGN_KEYS:
                if fk_table == table:
                    batch_op.create_foreign_key(
                        f"fk_{table}_{column}_{referred}", referred, [column], ["id"], ondelete="CASCADE"
                    )
