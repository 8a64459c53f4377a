"""SQL functions the rule compiler needs on SQLite, registered on every SQLite connection.

They share the evaluator's parser, so SQLite and the in-process evaluator read dates identically.
PostgreSQL gets the same two functions in plpgsql from migration 0005.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from clarion.lists.compiler import epoch_micros
from clarion.lists.evaluator import local_day
from clarion.lists.rules import parse_instant

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clarion_ts(value: Any) -> int | None:
    instant = parse_instant(value)
    return None if instant is None else epoch_micros(instant)


def clarion_local_day(micros: Any, tz_name: Any) -> str | None:
    if not isinstance(micros, int) or isinstance(micros, bool):
        return None
    try:
        instant = _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None
    return local_day(instant, tz_name).isoformat()


@event.listens_for(Engine, "connect")
def _register_functions(dbapi_connection: Any, _record: Any) -> None:
    if "sqlite" not in type(dbapi_connection).__module__:
        return
    dbapi_connection.create_function("clarion_ts", 1, clarion_ts, deterministic=True)
    dbapi_connection.create_function("clarion_local_day", 2, clarion_local_day, deterministic=True)
