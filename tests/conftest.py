"""Shared fixtures: every storage-facing test runs on SQLite *and* PostgreSQL.

PostgreSQL: a uniquely named database is created for the run and dropped at the end
(``CLARION_TEST_POSTGRES_URL``, default the local trust-auth server). Set
``CLARION_TEST_BACKENDS=sqlite`` to run SQLite only.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from clarion.api.app import create_app
from clarion.core.db import Database
from clarion.core.migrations import migrate
from clarion.core.settings import Settings
from clarion.orgs.bootstrap import bootstrap

PG_ADMIN_URL = os.environ.get("CLARION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b.strip() for b in os.environ.get("CLARION_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def create_pg_database() -> str:
    name = f"clarion_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@dataclass
class Backend:
    name: str
    database_url: str
    data_dir: Path


@pytest_asyncio.fixture(scope="session", params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:
    """A migrated, empty database on each backend for the whole run."""
    data_dir = tmp_path_factory.mktemp(f"clarion-{request.param}")
    if request.param == "sqlite":
        backend = Backend("sqlite", f"sqlite:///{data_dir / 'clarion.db'}", data_dir)
        await _migrate(backend)
        yield backend
        return
    name = await create_pg_database()
    try:
        backend = Backend("postgres", pg_url(name), data_dir)
        await _migrate(backend)
        yield backend
    finally:
        await drop_pg_database(name)


async def _migrate(backend: Backend) -> None:
    database = Database(make_settings(backend))
    try:
        await migrate(database)
    finally:
        await database.dispose()


def make_settings(backend: Backend, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": backend.database_url,
        "data_dir": backend.data_dir,
        "secret_key": "test-secret-key-" + backend.name,
        "rate_limit_client_ip": "1000000/minute",
        "rate_limit_general_ip": "1000000/10 seconds",
        "rate_limit_per_key": "1000000/10 seconds",
        "base_url": "http://127.0.0.1:8080",
    }
    values.update(overrides)
    return Settings(**values)


@pytest_asyncio.fixture(scope="session")
async def app(backend: Backend) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(backend))
    yield application
    await application.state.db.dispose()


@pytest.fixture
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class Tenant:
    organization_id: int
    project_id: int
    org_key: str
    secret_key: str
    publishable_key: str

    @property
    def sk(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret_key}"}

    @property
    def pk(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.publishable_key}"}

    @property
    def ok(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.org_key}"}


async def new_tenant(db: Database) -> Tenant:
    result = await bootstrap(db, org_name=f"org-{secrets.token_hex(4)}", project_name="Main")
    return Tenant(**result.as_dict())


@pytest_asyncio.fixture
async def tenant(db: Database) -> Tenant:
    """A fresh organisation + project with owner, admin-secret and publishable keys."""
    return await new_tenant(db)


@pytest_asyncio.fixture
async def other_tenant(db: Database) -> Tenant:
    return await new_tenant(db)


@pytest.fixture
def tmp_data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the RFC 7807 envelope with the given status and catalogue code; return the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["code"] == code, body
    assert body["error"] == body["message"]
    assert body["type"] == f"https://docs.spotzee.com/main-api/errors#{code}"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["title"]
    return body


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print what the fault tests measured (their ``record_property("fault_report", …)``), so a
    plain `make test` shows the duplicate count after a worker's kill -9 and the outage's ledger.
    The properties travel with each test's report, also from pytest-xdist's workers."""
    lines = [
        f"{report.nodeid}: {value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "fault_report"
    ]
    if lines:
        terminalreporter.section("fault test reports")
        for line in lines:
            terminalreporter.write_line(line)
