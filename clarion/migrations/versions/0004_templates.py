"""templates and locales

Revision ID: 0004
Revises: 0002

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "locales",
        sa.Column("key", sa.String(length=6), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_locales_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locales")),
        sa.UniqueConstraint("project_id", "key", name=op.f("uq_locales_project_id_key")),
    )
    with op.batch_alter_table("locales", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_locales_project_id"), ["project_id"], unique=False)

    op.create_table(
        "templates",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("locale", sa.String(length=6), nullable=False),
        sa.Column(
            "data", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_templates_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_templates_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("campaign_id", "type", "locale", name=op.f("uq_templates_campaign_id_type_locale")),
    )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_templates_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_templates_project_id"), ["project_id"], unique=False)
        batch_op.create_index("ix_templates_project_locale", ["project_id", "locale"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_index("ix_templates_project_locale")
        batch_op.drop_index(batch_op.f("ix_templates_project_id"))
        batch_op.drop_index(batch_op.f("ix_templates_campaign_id"))

    op.drop_table("templates")
    with op.batch_alter_table("locales", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_locales_project_id"))

    op.drop_table("locales")
