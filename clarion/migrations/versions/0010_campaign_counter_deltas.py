"""campaign_counter_deltas: counts appended by triggers, folded into campaigns by the scheduler

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_counter_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_counter_deltas")),
    )
    with op.batch_alter_table("campaign_counter_deltas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_counter_deltas_campaign_id"), ["campaign_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("campaign_counter_deltas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_counter_deltas_campaign_id"))
    op.drop_table("campaign_counter_deltas")
