"""Membership SQL: materialisation of dynamic lists, incremental re-evaluation, audiences.

Every statement filters ``project_id`` explicitly (Core SQL is not covered by the tenancy layer).
Indexes relied on:

* ``pk_users`` for ``u.id BETWEEN :lo AND :hi`` / ``u.id IN (…)`` chunks (plus the
  ``u.project_id`` filter on the row);
* ``pk_list_users`` (list_id, user_id) for membership inserts and the deletion sweep;
* ``ix_list_users_project_user`` (project_id, user_id) for "which lists is this user in";
* ``ix_events_project_user_name_created`` for the correlated event sub-queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from clarion.core.db import UTCDateTime
from clarion.lists.compiler import compile_condition, statement
from clarion.lists.models import ListUser
from clarion.lists.rules import Node
from clarion.users.models import User

_INSERT = """
INSERT INTO list_users (list_id, user_id, project_id, created_at)
SELECT :list_id, u.id, u.project_id, :added_at
FROM users AS u
WHERE u.project_id = :project_id AND {users} AND ({condition})
ON CONFLICT (list_id, user_id) DO NOTHING
"""

_DELETE = """
DELETE FROM list_users
WHERE list_id = :list_id AND project_id = :project_id AND {members}
  AND NOT EXISTS (
    SELECT 1 FROM users AS u
    WHERE u.id = list_users.user_id AND u.project_id = :project_id AND ({condition})
  )
"""


async def user_id_bounds(session: AsyncSession, project_id: int) -> tuple[int, int] | None:
    """Smallest and largest user id of the project (chunk boundaries)."""
    row = (
        await session.execute(
            statement(
                "SELECT MIN(id) AS lo, MAX(id) AS hi FROM users WHERE project_id = :project_id",
                [],
                project_id=project_id,
            )
        )
    ).one()
    if row.lo is None:
        return None
    return int(row.lo), int(row.hi)


async def materialise_range(
    session: AsyncSession, *, dialect: str, project_id: int, list_id: int, root: Node, now: datetime, lo: int, hi: int
) -> None:
    """Make membership of users ``lo..hi`` (ids, inclusive) equal to the rule's matches at ``now``.

    Inserts matching users that are not members and deletes members that no longer match; the
    deletion evaluates the rule only for current members of the range.
    """
    common = {"list_id": list_id, "project_id": project_id, "lo": lo, "hi": hi}
    # Insert: the bulk form (event rules as one semi-join over the range's events).
    condition, binds = compile_condition(root, dialect, now, project_id=project_id, id_range=(lo, hi))
    await session.execute(
        statement(
            _INSERT.format(users="u.id BETWEEN :lo AND :hi", condition=condition),
            binds,
            added_at=bindparam("added_at", now, type_=UTCDateTime()),
            **common,
        )
    )
    # Delete: the correlated form, evaluated once per current member of the range (index probes).
    condition, binds = compile_condition(root, dialect, now)
    await session.execute(
        statement(_DELETE.format(members="user_id BETWEEN :lo AND :hi", condition=condition), binds, **common)
    )


_REEVALUATE_PG = """
WITH ins AS (
{insert}
RETURNING 1
), del AS (
{delete}
RETURNING 1
), delta AS (
  SELECT (SELECT COUNT(*) FROM ins) - (SELECT COUNT(*) FROM del) AS n
), upd AS (
  UPDATE lists SET users_count = COALESCE(users_count, 0) + (SELECT n FROM delta)
  WHERE id = :list_id AND project_id = :project_id AND (SELECT n FROM delta) <> 0
  RETURNING 1
)
SELECT n FROM delta
"""

_ADJUST_COUNT = """
UPDATE lists SET users_count = COALESCE(users_count, 0) + :delta WHERE id = :list_id AND project_id = :project_id
"""


async def reevaluate_users(
    session: AsyncSession,
    *,
    dialect: str,
    project_id: int,
    list_id: int,
    root: Node,
    now: datetime,
    user_ids: Sequence[int],
) -> int:
    """Re-evaluate a dynamic list for a few users, adjusting ``users_count``; returns the change.

    On PostgreSQL the insert, the delete and the count adjustment are one statement (one round
    trip: this runs inside event ingestion).
    """
    if not user_ids:
        return 0
    condition, binds = compile_condition(root, dialect, now)
    ids = sorted(set(user_ids))
    insert_sql = _INSERT.format(users="u.id IN :ids", condition=condition)
    delete_sql = _DELETE.format(members="user_id IN :ids", condition=condition)
    common: dict[str, Any] = {
        "list_id": list_id,
        "project_id": project_id,
        "ids": bindparam("ids", ids, expanding=True),
    }
    added_at = bindparam("added_at", now, type_=UTCDateTime())
    if dialect == "postgresql":
        sql = _REEVALUATE_PG.format(insert=insert_sql.strip(), delete=delete_sql.strip())
        result = await session.execute(statement(sql, binds, added_at=added_at, **common))
        return int(result.scalar_one())
    inserted = await session.execute(statement(insert_sql, binds, added_at=added_at, **common))
    deleted = await session.execute(statement(delete_sql, binds, **common))
    delta = _rowcount(inserted) - _rowcount(deleted)
    if delta:
        await session.execute(statement(_ADJUST_COUNT, [], delta=delta, list_id=list_id, project_id=project_id))
    return delta


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def member_count(session: AsyncSession, project_id: int, list_id: int) -> int:
    stmt = (
        select(func.count()).select_from(ListUser).where(ListUser.project_id == project_id, ListUser.list_id == list_id)
    )
    return int((await session.execute(stmt)).scalar_one())


def member_of(project_id: int, list_id: int) -> ColumnElement[bool]:
    """``users.id`` is a member of the list (for ``GET /users?list_id=``; ``pk_list_users``)."""
    return exists().where(ListUser.project_id == project_id, ListUser.list_id == list_id, ListUser.user_id == User.id)


def audience_user_ids(project_id: int, list_ids: Sequence[int], exclusion_list_ids: Sequence[int] = ()) -> Select[Any]:
    """``SELECT DISTINCT user_id`` of members of ``list_ids`` minus members of ``exclusion_list_ids``.

    For the campaign pipeline's ``INSERT … SELECT``; uses ``pk_list_users`` for the inclusion scan
    and ``ix_list_users_project_user`` + ``pk_list_users`` for the exclusion probe.
    """
    member = aliased(ListUser, name="m")
    stmt = select(member.user_id).where(member.project_id == project_id, member.list_id.in_(list(list_ids))).distinct()
    if exclusion_list_ids:
        excluded = aliased(ListUser, name="x")
        stmt = stmt.where(
            ~exists().where(
                excluded.project_id == project_id,
                excluded.user_id == member.user_id,
                excluded.list_id.in_(list(exclusion_list_ids)),
            )
        )
    return stmt
