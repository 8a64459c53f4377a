"""A message's due time at a wall-clock time in the user's zone, computed in SQL.

PostgreSQL evaluates ``timezone(zone, timestamp)`` (``AT TIME ZONE``); SQLite gets the same
function, ``clarion_local_due``, registered on every connection and backed by :mod:`zoneinfo`.
Both return the UTC instant at which the wall clock in ``zone`` shows the given time; a time
skipped by a DST change resolves with the offset before the change (``fold=0``), as PostgreSQL does.
A zone the database does not know (user zones are checked against Python's zone database on
input, which may be newer or older than PostgreSQL's) reads as the ``fallback`` zone instead of
failing the statement: one odd profile must not stop a blast's materialisation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import DateTime, case, cast, column, event, func, literal, select, table
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

WALL_FORMAT = "%Y-%m-%d %H:%M:%S"
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _zone(name: Any) -> ZoneInfo | None:
    if not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_due(wall: Any, zone: Any, fallback: Any) -> str | None:
    """UTC text (SQLite's stored form) of the instant ``wall`` reads in ``zone`` (``fallback``
    when ``zone`` is unknown, UTC when both are)."""
    if not isinstance(wall, str):
        return None
    tz = _zone(zone) or _zone(fallback) or ZoneInfo("UTC")
    naive = datetime.strptime(wall, WALL_FORMAT)
    return naive.replace(tzinfo=tz).astimezone(UTC).strftime(SQLITE_FORMAT)


def local_due_sql(dialect: str, wall: datetime, zone: ColumnElement[Any], fallback: str) -> ColumnElement[Any]:
    """SQL for the due instant of naive wall-clock ``wall`` in the zone named by ``zone``, or in
    ``fallback`` (a zone the caller knows is valid) when the database does not know ``zone``."""
    text = wall.strftime(WALL_FORMAT)
    if dialect == "postgresql":
        known = zone.in_(select(column("name")).select_from(table("pg_timezone_names")))
        return func.timezone(
            case((known, zone), else_=literal(fallback)), cast(literal(text), DateTime(timezone=False))
        )
    return func.clarion_local_due(literal(text), zone, literal(fallback))


@event.listens_for(Engine, "connect")
def _register(dbapi_connection: Any, _record: Any) -> None:
    if "sqlite" not in type(dbapi_connection).__module__:
        return
    dbapi_connection.create_function("clarion_local_due", 3, local_due, deterministic=True)
