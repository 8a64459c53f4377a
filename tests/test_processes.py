"""`clarion worker` and `clarion scheduler` as real processes against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import select

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.queue_models import IdempotencyRecord, Job
from clarion.worker.jobs import enqueue_job
from tests.conftest import Backend


def _spawn(backend: Backend, command: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": backend.database_url,
        "CLARION_DATA_DIR": str(backend.data_dir),
        "CLARION_SECRET_KEY": "proc-secret",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "clarion.cli", command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _poll(check, seconds: float = 60) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_worker_process_claims_due_jobs(backend: Backend, db: Database) -> None:
    async with db.transaction() as session:
        job = await enqueue_job(session, "no.such.handler", {"x": 1}, max_attempts=1)
    proc = _spawn(backend, "worker")
    try:

        async def failed() -> bool:
            async with db.session() as session:
                row = (await session.execute(select(Job).where(Job.id == job.id))).scalar_one()
                return row.state == "failed"

        await _poll(failed)
        async with db.session() as session:
            row = (await session.execute(select(Job).where(Job.id == job.id))).scalar_one()
        assert row.attempts == 1 and "no handler registered" in (row.last_error or "")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) is not None


async def test_scheduler_process_runs_duties(backend: Backend, db: Database) -> None:
    async with db.transaction() as session:
        session.add(
            IdempotencyRecord(
                scope="proc",
                key="stale",
                fingerprint="f",
                state="completed",
                locked_until=utcnow(),
                expires_at=utcnow() - timedelta(seconds=5),
            )
        )
    from sqlalchemy import delete

    from clarion.core.queue_models import LeaderLease

    async with db.transaction() as session:
        await session.execute(delete(LeaderLease))
    proc = _spawn(backend, "scheduler")
    try:

        async def purged() -> bool:
            async with db.session() as session:
                rows = (await session.execute(select(IdempotencyRecord).where(IdempotencyRecord.scope == "proc"))).all()
                return not rows

        await _poll(purged)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
