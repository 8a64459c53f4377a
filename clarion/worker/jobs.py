"""Background jobs: enqueue from services, run by the worker through registered handlers."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.queue import backoff_delay, claim_due
from clarion.core.queue_models import Job

log = logging.getLogger("clarion.jobs")

JOBS_TOPIC = "jobs"
JOB_TABLE: Table = Job.__table__  # type: ignore[assignment]


@dataclass
class JobContext:
    db: Database
    job_id: int
    project_id: int | None
    attempts: int

    async def keep_alive(self, session: AsyncSession, *, seconds: float) -> None:
        """Set this job's lease to run out ``seconds`` from now, in the caller's transaction.

        A long job that commits its work in steps calls this with each step: its lease stays
        short, so if its worker dies another one takes the job over within ``seconds`` of the
        last step rather than after the claim's whole lease. (A step slower than ``seconds``
        lets a second worker start the same job: only jobs whose steps are idempotent use it.)
        """
        await session.execute(
            update(JOB_TABLE)
            .where(JOB_TABLE.c.id == self.job_id, JOB_TABLE.c.state == "running")
            .values(lease_until=utcnow() + timedelta(seconds=seconds))
        )


JobHandler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]
JOB_HANDLERS: dict[str, JobHandler] = {}


def job_handler(kind: str) -> Callable[[JobHandler], JobHandler]:
    """Register the coroutine that runs jobs of ``kind``."""

    def register(fn: JobHandler) -> JobHandler:
        JOB_HANDLERS[kind] = fn
        return fn

    return register


async def enqueue_job(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    project_id: int | None = None,
    due_at: datetime | None = None,
    max_attempts: int = 10,
) -> Job:
    """Add a job in the caller's transaction: it exists exactly when the caller's change commits."""
    job = Job(kind=kind, payload=payload, project_id=project_id, due_at=due_at or utcnow(), max_attempts=max_attempts)
    session.add(job)
    await session.flush()
    return job


class JobSource:
    """Claims due jobs in batches and runs each through its handler."""

    topic = JOBS_TOPIC

    def __init__(self, db: Database, *, batch_size: int = 20, lease_seconds: int = 300) -> None:
        from clarion.core.registry import load_job_handlers

        load_job_handlers()
        self.db = db
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)

    async def run_once(self) -> int:
        async with self.db.transaction() as session:
            rows = await claim_due(session, JOB_TABLE, now=utcnow(), limit=self.batch_size, lease=self.lease)
        for row in rows:
            await self._run(row)
        return len(rows)

    async def _run(self, row: Any) -> None:
        handler = JOB_HANDLERS.get(row.kind)
        ctx = JobContext(self.db, row.id, row.project_id, row.attempts)
        try:
            if handler is None:
                raise LookupError(f"no handler registered for job kind {row.kind!r}")
            await handler(ctx, dict(row.payload or {}))
        except Exception as exc:
            log.warning("job %s (%s) attempt %s failed: %s", row.id, row.kind, row.attempts, exc)
            final = row.attempts >= row.max_attempts
            values: dict[str, Any] = {
                "last_error": "".join(traceback.format_exception_only(exc)).strip()[:2000],
                "lease_until": None,
                "updated_at": utcnow(),
            }
            if final:
                values["state"] = "failed"
            else:
                values["state"] = "queued"
                values["due_at"] = utcnow() + timedelta(seconds=backoff_delay(row.attempts))
            async with self.db.transaction() as session:
                await session.execute(update(Job).where(Job.id == row.id).values(**values))
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == row.id)
                .values(state="done", lease_until=None, last_error=None, updated_at=utcnow())
            )
