"""Shared benchmark plumbing: a throw-away PostgreSQL database, a real uvicorn server in a
subprocess, concurrent HTTP clients, and a timing helper."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

PG_ADMIN_URL = os.environ.get("CLARION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVER_WORKERS = int(os.environ.get("CLARION_BENCH_WORKERS", "2"))
CLIENTS = int(os.environ.get("CLARION_BENCH_CLIENTS", "8"))


@dataclass
class Env:
    database_url: str
    db_name: str
    project_id: int
    secret_key: str
    publishable_key: str
    base_url: str = ""
    server_pid: int = 0  # the uvicorn supervisor; its children are the workers
    worker_pid: int = 0  # the `clarion worker` process, when one was asked for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def create_database() -> tuple[str, str]:
    """A new empty PostgreSQL database for one benchmark run: its name and URL."""
    name = f"clarion_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def clarion_env(database_url: str, data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a Clarion process a benchmark starts: its database and data folder,
    the benchmarks' secret key, rate limits off, quiet logs; ``extra`` on top."""
    return {
        **os.environ,
        "CLARION_DATABASE_URL": database_url,
        "CLARION_DATA_DIR": str(data_dir),
        "CLARION_SECRET_KEY": "bench",
        "CLARION_RATE_LIMIT_ENABLED": "false",
        "CLARION_LOG_LEVEL": "warning",
        **(extra or {}),
    }


@contextlib.asynccontextmanager
async def environment(tmp: Path, *, worker: bool = False, settings: dict[str, str] | None = None) -> AsyncIterator[Env]:
    """A fresh migrated database with one project, and a uvicorn server on a free port (API
    only). With ``worker``, one `clarion worker` process runs too, so queued messages are sent
    (every project starts with a default `capture` provider per channel). ``settings``: extra
    ``CLARION_*`` environment for the server and the worker."""
    from clarion.core.db import Database
    from clarion.core.migrations import migrate
    from clarion.core.registry import load_models
    from clarion.core.settings import Settings
    from clarion.orgs.bootstrap import bootstrap

    name, url = await create_database()
    proc: subprocess.Popen[bytes] | None = None
    worker_proc: subprocess.Popen[bytes] | None = None
    try:
        load_models()
        db = Database(Settings(database_url=url, data_dir=tmp, secret_key="bench"))
        await migrate(db)
        result = await bootstrap(db, org_name="bench", project_name="bench")
        await db.dispose()
        env = Env(url, name, result.project_id, result.secret_key, result.publishable_key)
        port = _free_port()
        server_env = clarion_env(url, tmp, {"CLARION_DB_POOL_SIZE": "10", **(settings or {})})
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "clarion.api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(SERVER_WORKERS),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=server_env,
            # Not the checkout: `python -m` puts the working directory first on sys.path, which would
            # shadow a PYTHONPATH checkout (cpu_split's A/B side) with this one.
            cwd=tmp,
        )
        env.base_url = f"http://127.0.0.1:{port}"
        env.server_pid = proc.pid
        if worker:
            worker_proc = subprocess.Popen([sys.executable, "-m", "clarion.cli", "worker"], env=server_env)
            env.worker_pid = worker_proc.pid
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{env.base_url}/health")).status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start")
                await asyncio.sleep(0.2)
        yield env
    finally:
        for child in (worker_proc, proc):
            if child is None:
                continue
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=20)
            if child.poll() is None:
                child.kill()
        await drop_database(name)


async def run_clients(batches: list[Any], send: Callable[[Any], Awaitable[None]], clients: int = CLIENTS) -> float:
    """Send every batch through ``clients`` concurrent workers; return elapsed seconds."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            await send(queue.get_nowait())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - start


async def http_clients(
    env: Env, method: str, path: str, headers: dict[str, str], batches: list[Any], expect: set[int]
) -> float:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=env.base_url, limits=limits, timeout=60) as client:

        async def send(batch: Any) -> None:
            r = await client.request(method, path, json=batch, headers=headers)
            if r.status_code not in expect:
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")

        return await run_clients(batches, send)


def report(
    what: str, count: int, elapsed: float, baseline_elapsed: float, target: float, baseline_count: int | None = None
) -> None:
    """``baseline_count``: rows the baseline wrote, when not ``count`` (a timed window's count)."""
    rate = count / elapsed
    base = (baseline_count if baseline_count is not None else count) / baseline_elapsed
    print(
        f"  {what}: {count} in {elapsed:.2f}s = {rate:,.0f}/s (target {target:,.0f}/s: "
        f"{'met' if rate >= target else 'NOT met'})"
    )
    print(f"  baseline: {baseline_count or count} in {baseline_elapsed:.2f}s = {base:,.0f}/s")
    print(f"  ratio clarion/baseline = {rate / base:.3f}", flush=True)
