"""Event reads: the time-window list and the aggregations (named statements).

Both filter ``project_id`` and a ``created_at`` window first: ``ix_events_project_created``.
User filters resolve through ``ux_users_project_external`` / ``ux_users_project_anonymous``.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode
from clarion.core.sql import dialect_name
from clarion.events.ingest import EVENTS
from clarion.users.upsert import USERS

GROUPS = ("event_name", "campaign", "user", "day")


def window_filter(
    project_id: int,
    start: datetime,
    end: datetime,
    *,
    external_ids: list[str],
    anonymous_ids: list[str],
    names: list[str],
    campaign_ids: list[int],
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        EVENTS.c.project_id == project_id,
        EVENTS.c.created_at >= start,
        EVENTS.c.created_at < end,
    ]
    if external_ids or anonymous_ids:
        user_cond = []
        if external_ids:
            user_cond.append(USERS.c.external_id.in_(external_ids))
        if anonymous_ids:
            user_cond.append(USERS.c.anonymous_id.in_(anonymous_ids))
        from sqlalchemy import or_

        conditions.append(
            EVENTS.c.user_id.in_(select(USERS.c.id).where(USERS.c.project_id == project_id, or_(*user_cond)))
        )
    if names:
        conditions.append(EVENTS.c.name.in_(names))
    if campaign_ids:
        conditions.append(EVENTS.c.campaign_id.in_(campaign_ids))
    return conditions


def _day(session: AsyncSession) -> ColumnElement[Any]:
    if dialect_name(session) == "postgresql":
        return func.to_char(func.timezone("UTC", EVENTS.c.created_at), "YYYY-MM-DD")
    return func.substr(EVENTS.c.created_at, 1, 10)


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(value, dict) and isinstance(value.get("o"), int) and value["o"] >= 0:
            return int(value["o"])
    except (ValueError, orjson.JSONDecodeError):
        pass
    raise ApiError(ErrorCode.parameter_invalid_format, "cursor is not valid.", param="cursor")


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset})).decode().rstrip("=")


async def aggregate(
    session: AsyncSession, conditions: list[ColumnElement[bool]], group_by: list[str], cursor: str | None, limit: int
) -> dict[str, Any]:
    keys: list[tuple[str, ColumnElement[Any]]] = []
    for group in dict.fromkeys(group_by):
        if group == "event_name":
            keys.append(("event_name", EVENTS.c.name))
        elif group == "campaign":
            keys.append(("campaign_id", EVENTS.c.campaign_id))
        elif group == "user":
            keys.append(("user_id", EVENTS.c.user_id))
        else:
            keys.append(("day", _day(session)))
    columns = [expr.label(name) for name, expr in keys]
    stmt: Select[Any] = select(
        *columns,
        func.count().label("count"),
        func.count(EVENTS.c.user_id.distinct()).label("unique_user_count"),
        func.min(EVENTS.c.created_at).label("first_seen_at"),
        func.max(EVENTS.c.created_at).label("last_seen_at"),
    ).where(*conditions)
    if keys:
        stmt = stmt.group_by(*[expr for _, expr in keys]).order_by(*[literal_column(name) for name, _ in keys])
    offset = _offset(cursor)
    rows = [dict(r._mapping) for r in await session.execute(stmt.offset(offset).limit(limit + 1))]
    has_more = len(rows) > limit
    rows = rows[:limit]
    user_ids = {r["user_id"] for r in rows if r.get("user_id") is not None}
    idents: dict[int, tuple[str | None, str | None]] = {}
    if user_ids:
        for uid, ext, anon in await session.execute(
            select(USERS.c.id, USERS.c.external_id, USERS.c.anonymous_id).where(USERS.c.id.in_(user_ids))
        ):
            idents[uid] = (ext, anon)
    results = []
    for row in rows:
        out: dict[str, Any] = {}
        for name, _ in keys:
            if name == "user_id":
                ext, anon = idents.get(row["user_id"], (None, None))
                out["user"] = {"external_id": ext, "anonymous_id": anon}
            else:
                out[name] = row[name]
        first, last = row["first_seen_at"], row["last_seen_at"]
        out.update(
            count=int(row["count"] or 0),
            unique_user_count=int(row["unique_user_count"] or 0),
            first_seen_at=_as_utc(first),
            last_seen_at=_as_utc(last),
        )
        results.append(out)
    return {
        "results": results,
        "nextCursor": _cursor(offset + limit) if has_more else None,
        "prevCursor": _cursor(max(offset - limit, 0)) if offset > 0 else None,
        "limit": limit,
    }


def _as_utc(value: Any) -> Any:
    from datetime import UTC

    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
