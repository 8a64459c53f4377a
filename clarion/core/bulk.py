"""Many rows in one statement, for the batch writers of the send loop.

On PostgreSQL the rows travel column by column as arrays through ``unnest``: one statement text
per (table, columns) whatever the batch size, so the server plans it once and the driver
encodes the arrays in C; SQLAlchemy does no per-row work. Elsewhere (SQLite) the same rows go
out as a Core executemany.

Values are what the table's columns hold: JSON columns take Python objects (serialised here
with the engine's serializer; ``None`` becomes JSON ``null``, as SQLAlchemy's JSON type stores
it), datetimes are aware (naive ones are taken as UTC, as :class:`clarion.core.db.UTCDateTime`
does). Table and column names come from the models' metadata, never from a request.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, String, Table, TextClause, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import json_dumps
from clarion.core.sql import dialect_name

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _is_json(table: Table, name: str) -> bool:
    return isinstance(table.c[name].type.dialect_impl(_PG), JSON)


def _array_type(table: Table, name: str) -> str:
    """The array element type a column's values are cast to. Strings and JSON travel as text
    (no length in the cast: an over-long value must fail the column's own check, not be cut)."""
    impl = table.c[name].type.dialect_impl(_PG)
    if isinstance(impl, String | JSON):
        return "TEXT"
    return str(impl.compile(dialect=_PG))


def _quoted(name: str) -> str:
    return str(_PG.identifier_preparer.quote(name))


def _unnest(table: Table, columns: tuple[str, ...]) -> str:
    arrays = ", ".join(f"CAST(:c{i} AS {_array_type(table, name)}[])" for i, name in enumerate(columns))
    names = ", ".join(_quoted(name) for name in columns)
    return f"unnest({arrays}) AS v({names})"


def _value(table: Table, name: str) -> str:
    """The select-list expression of one unnested column."""
    return f"v.{_quoted(name)}::jsonb" if _is_json(table, name) else f"v.{_quoted(name)}"


@functools.cache
def _pg_insert(table: Table, columns: tuple[str, ...]) -> TextClause:
    names = ", ".join(_quoted(name) for name in columns)
    values = ", ".join(_value(table, name) for name in columns)
    into = f"INSERT INTO {_quoted(table.name)} ({names})"
    return text(f"{into} SELECT {values} FROM {_unnest(table, columns)}")  # noqa: S608 (metadata names only)


@functools.cache
def _pg_update(table: Table, key: str, columns: tuple[str, ...]) -> TextClause:
    assignments = ", ".join(f"{_quoted(name)} = {_value(table, name)}" for name in columns if name != key)
    target = _quoted(table.name)
    where = f"{target}.{_quoted(key)} = v.{_quoted(key)}"
    return text(f"UPDATE {target} SET {assignments} FROM {_unnest(table, columns)} WHERE {where}")  # noqa: S608


@functools.cache
def _core_update(table: Table, key: str) -> Any:
    return table.update().where(table.c[key] == bindparam(f"_key_{key}"))


def _arrays(table: Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    arrays: dict[str, list[Any]] = {}
    for i, name in enumerate(columns):
        values = [row[name] for row in rows]
        if _is_json(table, name):
            values = [json_dumps(v) for v in values]  # None too: JSON null, as SQLAlchemy's JSON type stores it
        elif values and any(isinstance(v, datetime) and v.tzinfo is None for v in values):
            values = [v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v for v in values]
        arrays[f"c{i}"] = values
    return arrays


def _columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    columns = tuple(rows[0])
    if any(tuple(row) != columns for row in rows):
        raise ValueError("every row of a bulk statement must name the same columns in the same order")
    return columns


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts naming the same columns) in the session's transaction."""
    if not rows:
        return
    columns = _columns(rows)
    connection = await session.connection()
    if dialect_name(session) != "postgresql":
        await connection.execute(table.insert(), list(rows))
        return
    await connection.execute(_pg_insert(table, columns), _arrays(table, columns, rows))


async def update_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, key: str = "id") -> None:
    """UPDATE each row found by its ``key`` column to the other values its dict names."""
    if not rows:
        return
    columns = _columns(rows)
    connection = await session.connection()
    if dialect_name(session) != "postgresql":
        await connection.execute(
            _core_update(table, key), [{f"_key_{key}" if k == key else k: v for k, v in row.items()} for row in rows]
        )
        return
    await connection.execute(_pg_update(table, key, columns), _arrays(table, columns, rows))
