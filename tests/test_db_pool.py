"""The PostgreSQL pool pings a connection only after it has been idle, and replaces a dead one."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from clarion.core import db as db_module
from clarion.core.db import Database
from tests.conftest import PG_ADMIN_URL, Backend, make_settings


async def _backend_pid(database: Database) -> int:
    async with database.transaction(readonly=True) as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_idle_dead_connection_is_replaced(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.name != "postgres":
        pytest.skip("pool pinging is PostgreSQL-only")
    database = Database(make_settings(backend, db_pool_size=1))
    try:
        first = await _backend_pid(database)
        assert await _backend_pid(database) == first  # reused: one pooled connection
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", -1.0)  # every checkout counts as idle
        second = await _backend_pid(database)  # the ping fails; the pool opens a new connection
        assert second != first
    finally:
        await database.dispose()
