"""Database engine, session factories and the column types shared by every table.

SQLite is the embedded default (WAL, ``busy_timeout``, writes begin ``IMMEDIATE`` so two writers
queue instead of failing on lock upgrade); PostgreSQL is the production store. Both run through
SQLAlchemy's async API.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn

from clarion.core.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Integer primary keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL for indexing and containment operators; JSON text on SQLite.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_dumps(value: Any) -> str:
    """JSON columns' encoder: orjson, or the stdlib for what orjson refuses (e.g. ints > 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError subclasses TypeError
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """JSON columns' decoder: orjson, or the stdlib for what orjson refuses (e.g. NaN in SQLite)."""
    try:
        return orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError subclasses ValueError
        return json.loads(text)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


# A pooled PostgreSQL connection idle longer than this is pinged before reuse (a dead one is
# replaced transparently). ``pool_pre_ping`` pinged on every checkout: one extra round trip per
# request. A connection that dies while busy or within this window surfaces as an error on its
# first statement; SQLAlchemy then invalidates it (and the pool's older connections).
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["clarion_last_used"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("clarion_last_used")
        if last is None or time.monotonic() - last <= PING_AFTER_IDLE_SECONDS:
            return  # fresh from connect(), or used moments ago
        try:
            engine.sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("idle connection failed its ping") from exc


class Database:
    """Owns the engine and hands out sessions: ``write()`` for changes, ``read()`` for queries."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.resolved_database_url
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        kwargs: dict[str, Any] = {
            "echo": settings.db_echo,
            "json_serializer": json_dumps,
            "json_deserializer": json_loads,
        }
        if self.dialect == "sqlite":
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = settings.db_pool_size
            kwargs["max_overflow"] = 20
        elif settings.db_pool_size <= 0:
            kwargs["poolclass"] = NullPool
        else:
            kwargs["pool_size"] = settings.db_pool_size
            overflow = settings.db_max_overflow
            kwargs["max_overflow"] = settings.db_pool_size * 2 if overflow is None else overflow
        self.engine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
            read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
            self._lookup_engine = read_engine
        else:
            if settings.db_pool_size > 0:
                _ping_when_idle(self.engine)
            read_engine = self.engine
            # A single read statement needs no transaction: no BEGIN/ROLLBACK round trips.
            self._lookup_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        from clarion.core.tenancy import TenantSession

        self._write = async_sessionmaker(self.engine, expire_on_commit=False, sync_session_class=TenantSession)
        self._read = async_sessionmaker(read_engine, expire_on_commit=False, sync_session_class=TenantSession)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def session(self, *, project_id: int | None = None, readonly: bool = False) -> AsyncSession:
        """A session; with ``project_id`` every ORM query on project-owned tables is scoped to it."""
        session = (self._read if readonly else self._write)()
        if project_id is not None:
            session.info["project_id"] = project_id
        else:
            session.info["unscoped"] = True
        return session

    @asynccontextmanager
    async def transaction(
        self, *, project_id: int | None = None, readonly: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.session(project_id=project_id, readonly=readonly) as session, session.begin():
            yield session

    @asynccontextmanager
    async def lookup(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for one read statement, outside any explicit transaction (PostgreSQL
        runs it in autocommit: a single round trip). Not scoped to a project: the caller filters."""
        async with self._lookup_engine.connect() as connection:
            yield connection

    @asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[Any]:
        """The pool's asyncpg connection itself (PostgreSQL only), for hot-path statements that
        are compiled once with SQLAlchemy and run by the driver: no transaction is opened, so
        each statement autocommits. Checked out of the engine's pool directly (the pool's events
        run as for any checkout; no engine ``Connection`` is built around it). A connection the
        driver found closed is dropped from the pool rather than handed to the next caller."""
        fairy = await greenlet_spawn(self.engine.sync_engine.pool.connect)
        try:
            driver = fairy.driver_connection
            try:
                yield driver
            except BaseException:
                if driver is None or driver.is_closed():
                    fairy.invalidate()
                raise
        finally:
            await greenlet_spawn(fairy.close)

    async def dispose(self) -> None:
        await self.engine.dispose()
