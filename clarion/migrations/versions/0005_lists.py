"""lists

Revision ID: 0005
Revises: 0006

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# The date helpers the rule compiler calls on PostgreSQL. They return NULL instead of raising, so
# one malformed value never aborts a materialisation, and accept exactly the grammar of
# clarion.lists.rules.parse_instant (naive times are UTC: the function pins its own TimeZone).
DATE_RE = (
    r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?)?$"
)
PG_FUNCTIONS = [
    r"""
CREATE OR REPLACE FUNCTION clarion_ts(s text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET timezone = 'UTC' AS $$
BEGIN
  IF s IS NULL OR s !~ '__DATE_RE__' THEN
    RETURN NULL;
  END IF;
  RETURN s::timestamptz;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$
""".replace("__DATE_RE__", DATE_RE),
    r"""
CREATE OR REPLACE FUNCTION clarion_local_day(ts timestamptz, tz text) RETURNS date
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  IF ts IS NULL THEN
    RETURN NULL;
  END IF;
  IF tz IS NULL OR tz !~ '^[A-Za-z][A-Za-z0-9_+/-]*$' THEN
    RETURN (ts AT TIME ZONE 'UTC')::date;
  END IF;
  RETURN (ts AT TIME ZONE tz)::date;
EXCEPTION WHEN others THEN
  RETURN (ts AT TIME ZONE 'UTC')::date;
END $$
""",
]


def upgrade() -> None:
    op.create_table(
        "lists",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("rule", JSON, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("users_count", sa.BigInteger(), nullable=True),
        sa.Column("is_visible", sa.Boolean(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rule_event_names", JSON, nullable=False),
        sa.Column("rule_reads_user", sa.Boolean(), nullable=False),
        sa.Column("import_status", JSON, nullable=True),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_lists_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lists")),
    )
    with op.batch_alter_table("lists", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lists_project_id"), ["project_id"], unique=False)
        batch_op.create_index("ix_lists_project_updated", ["project_id", "updated_at"], unique=False)

    op.create_table(
        "list_users",
        sa.Column("list_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name=op.f("fk_list_users_list_id_lists"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_list_users_project_id_projects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_list_users_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("list_id", "user_id", name=op.f("pk_list_users")),
    )
    with op.batch_alter_table("list_users", schema=None) as batch_op:
        batch_op.create_index("ix_list_users_project_user", ["project_id", "user_id"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        for ddl in PG_FUNCTIONS:
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS clarion_local_day(timestamptz, text)")
        op.execute("DROP FUNCTION IF EXISTS clarion_ts(text)")
    with op.batch_alter_table("list_users", schema=None) as batch_op:
        batch_op.drop_index("ix_list_users_project_user")
    op.drop_table("list_users")
    with op.batch_alter_table("lists", schema=None) as batch_op:
        batch_op.drop_index("ix_lists_project_updated")
        batch_op.drop_index(batch_op.f("ix_lists_project_id"))
    op.drop_table("lists")
