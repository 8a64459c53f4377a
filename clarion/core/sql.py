"""Small dialect helpers for statements that differ between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Table, any_, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def among(session: AsyncSession, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)``. On PostgreSQL one array parameter (``= ANY``), so the statement's
    text does not change with the number of values and stays prepared on the server."""
    if dialect_name(session) == "postgresql":
        return column == any_(literal(list(values), type_=postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


def insert_for(session: AsyncSession, table: Table | Any) -> Any:
    """A dialect-specific INSERT that supports ``on_conflict_do_nothing``/``do_update``."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def execute_count(session: AsyncSession, stmt: Any) -> int:
    """Execute a DML statement and return how many rows it affected."""
    result: CursorResult[Any] = await session.execute(stmt)  # type: ignore[assignment]
    return int(result.rowcount or 0)
