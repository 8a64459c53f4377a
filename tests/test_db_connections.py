"""Pooled PostgreSQL connections: pinged only after idling, and a dead one is replaced rather
than failing the request that checks it out."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from clarion.core import db as db_module
from clarion.core.db import Database
from tests.conftest import PG_ADMIN_URL, Backend, make_settings


@pytest.mark.asyncio
async def test_dead_idle_connection_is_replaced(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.name != "postgres":
        pytest.skip("connection pooling with pings is PostgreSQL's")
    database = Database(make_settings(backend, db_pool_size=1))
    try:
        async with database.engine.connect() as connection:
            first_pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        finally:
            await admin.close()
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        async with database.engine.connect() as connection:
            second_pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert second_pid != first_pid
    finally:
        await database.dispose()


@pytest.mark.asyncio
async def test_busy_connection_is_reused_without_ping(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.name != "postgres":
        pytest.skip("connection pooling with pings is PostgreSQL's")
    database = Database(make_settings(backend, db_pool_size=1))
    pings: list[object] = []
    dialect = database.engine.sync_engine.dialect
    original = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: pings.append(conn) or original(conn))
    try:
        for _ in range(3):
            async with database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert pings == []
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        async with database.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        await database.dispose()
