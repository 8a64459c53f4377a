"""A message's due time at a wall-clock time in the user's zone, computed in SQL.

PostgreSQL evaluates ``timezone(zone, timestamp)`` (``AT TIME ZONE``); SQLite gets the same
function, ``clarion_local_due``, registered on every connection and backed by :mod:`zoneinfo`.
Both return the UTC instant at which the wall clock in ``zone`` shows the given time; a time
skipped by a DST change resolves with the offset before the change (``fold=0``), as PostgreSQL does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import DateTime, cast, event, func, literal
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

WALL_FORMAT = "%Y-%m-%d %H:%M:%S"
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def local_due(wall: Any, zone: Any) -> str | None:
    """UTC text (SQLite's stored form) of the instant ``wall`` reads in ``zone``."""
    if not isinstance(wall, str) or not isinstance(zone, str):
        return None
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    naive = datetime.strptime(wall, WALL_FORMAT)
    return naive.replace(tzinfo=tz).astimezone(UTC).strftime(SQLITE_FORMAT)


def local_due_sql(dialect: str, wall: datetime, zone: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQL for the due instant of naive wall-clock ``wall`` in the zone named by ``zone``."""
    text = wall.strftime(WALL_FORMAT)
    if dialect == "postgresql":
        return func.timezone(zone, cast(literal(text), DateTime(timezone=False)))
    return func.clarion_local_due(literal(text), zone)


@event.listens_for(Engine, "connect")
def _register(dbapi_connection: Any, _record: Any) -> None:
    if "sqlite" not in type(dbapi_connection).__module__:
        return
    dbapi_connection.create_function("clarion_local_due", 2, local_due, deterministic=True)
