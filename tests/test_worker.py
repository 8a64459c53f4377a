"""The generic due-work machinery: jobs run once, retry with backoff, recover expired leases;
one scheduler leads at a time."""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.queue import backoff_delay
from clarion.core.queue_models import IdempotencyRecord, Job
from clarion.core.wakeup import Waker
from clarion.worker.jobs import JOB_HANDLERS, JobContext, JobSource, enqueue_job, job_handler
from clarion.worker.runner import Worker
from clarion.worker.scheduler import PeriodicDuty, Scheduler, default_duties

REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

RAN: list[tuple[int, dict[str, Any]]] = []


@pytest.fixture(autouse=True)
def _handlers() -> Any:
    RAN.clear()

    @job_handler("test.record")
    async def record(ctx: JobContext, payload: dict[str, Any]) -> None:
        RAN.append((ctx.job_id, payload))

    @job_handler("test.fail")
    async def fail(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise ValueError("nope")

    yield
    JOB_HANDLERS.pop("test.record", None)
    JOB_HANDLERS.pop("test.fail", None)


async def _job(db: Database, job_id: int) -> Job:
    async with db.session() as session:
        return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()


async def _drain(db: Database) -> None:
    source = JobSource(db, batch_size=50)
    while await source.run_once():
        pass


async def test_job_runs_exactly_once(db: Database) -> None:
    async with db.transaction() as session:
        job = await enqueue_job(session, "test.record", {"n": 1})
    await _drain(db)
    await _drain(db)
    assert [p for i, p in RAN if i == job.id] == [{"n": 1}]
    assert (await _job(db, job.id)).state == "done"


async def test_failed_job_is_retried_with_backoff_then_fails(db: Database) -> None:
    async with db.transaction() as session:
        job = await enqueue_job(session, "test.fail", {}, max_attempts=2)
    await JobSource(db).run_once()
    row = await _job(db, job.id)
    assert row.state == "queued" and row.attempts == 1 and "nope" in (row.last_error or "")
    assert row.due_at > utcnow() - timedelta(seconds=1)
    async with db.transaction() as session:
        await session.execute(update(Job).where(Job.id == job.id).values(due_at=utcnow()))
    await JobSource(db).run_once()
    row = await _job(db, job.id)
    assert row.state == "failed" and row.attempts == 2


async def test_expired_lease_is_reclaimed(db: Database) -> None:
    async with db.transaction() as session:
        job = await enqueue_job(session, "test.record", {"crash": True})
        await session.flush()
        # As if a worker claimed it and died: running, lease already expired.
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(state="running", attempts=1, lease_until=utcnow() - timedelta(seconds=1))
        )
    await _drain(db)
    row = await _job(db, job.id)
    assert row.state == "done" and row.attempts == 2
    assert [p for i, p in RAN if i == job.id] == [{"crash": True}]


async def test_live_lease_is_not_stolen(db: Database) -> None:
    async with db.transaction() as session:
        job = await enqueue_job(session, "test.record", {})
        await session.execute(
            update(Job).where(Job.id == job.id).values(state="running", lease_until=utcnow() + timedelta(minutes=5))
        )
    await _drain(db)
    assert all(i != job.id for i, _ in RAN)


async def test_worker_loop_wakes_up_on_notify(db: Database) -> None:
    waker = Waker()
    worker = Worker([JobSource(db)], waker, poll_interval=30)
    await worker.start()
    try:
        async with db.transaction() as session:
            job = await enqueue_job(session, "test.record", {"wake": 1})
        await waker.notify("jobs")
        deadline = asyncio.get_running_loop().time() + 10
        while not any(i == job.id for i, _ in RAN):
            assert asyncio.get_running_loop().time() < deadline, "worker did not pick the job up"
            await asyncio.sleep(0.02)
    finally:
        await worker.stop()


def test_backoff_grows_and_is_capped() -> None:
    samples = [max(backoff_delay(attempt, base=1, cap=60) for _ in range(200)) for attempt in (1, 3, 6, 12)]
    assert samples[0] <= 1 and samples[1] <= 4 and samples[2] <= 32 and samples[3] <= 60
    assert samples[3] > 30  # full jitter still reaches near the cap


async def test_only_one_scheduler_leads_and_a_dead_leader_is_replaced(db: Database) -> None:
    runs: list[str] = []

    def duty(name: str) -> PeriodicDuty:
        async def run(_: Database) -> None:
            runs.append(name)

        return PeriodicDuty("count", 0, run)

    first = Scheduler(db, [duty("a")], lease_seconds=0.5)
    second = Scheduler(db, [duty("b")], lease_seconds=0.5)
    # Clear any lease left by another test's scheduler.
    from clarion.core.queue_models import LeaderLease

    async with db.transaction() as session:
        await session.execute(update(LeaderLease).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert await first.try_lead() is True
    assert await second.try_lead() is False
    assert await first.try_lead() is True  # renewal
    await asyncio.sleep(0.6)  # the leader stops renewing (it died)
    assert await second.try_lead() is True
    assert await first.try_lead() is False


async def test_scheduler_purges_expired_idempotency_keys(db: Database) -> None:
    async with db.transaction() as session:
        session.add(
            IdempotencyRecord(
                scope="t",
                key="old",
                fingerprint="f",
                state="completed",
                locked_until=utcnow(),
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        session.add(
            IdempotencyRecord(
                scope="t",
                key="new",
                fingerprint="f",
                state="completed",
                locked_until=utcnow(),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    purge = next(d for d in default_duties() if d.name == "purge-idempotency-keys")
    await purge.run(db)
    async with db.session() as session:
        keys = set(
            (await session.execute(select(IdempotencyRecord.key).where(IdempotencyRecord.scope == "t"))).scalars()
        )
    assert keys == {"new"}


async def test_wake_up_publishes_fold_but_every_notify_is_followed_by_one() -> None:
    """A burst of notifies costs one Redis publish; a notify while that publish is in flight (it
    may predate the notifier's commit) gets one more after it."""
    from redis.asyncio import Redis

    namespace = f"test-{secrets.token_hex(4)}"
    listener = Redis.from_url(REDIS_URL)
    pubsub = listener.pubsub()
    await pubsub.subscribe(f"{namespace}:wake:messages")
    waker = Waker(REDIS_URL, namespace)
    try:
        for _ in range(20):  # none of these yields: one publish covers them all
            await waker.notify("messages")
        await waker.flush()
        await waker.notify("messages")
        await asyncio.sleep(0)  # that publish is now in flight
        await waker.notify("messages")
        await waker.flush()
        received = 0
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                received += 1
            elif received >= 3:
                break
        assert received == 3
    finally:
        await waker.close()
        await pubsub.aclose()
        await listener.aclose()


async def test_a_pass_that_found_little_lingers_before_the_next() -> None:
    calls: list[float] = []

    class Trickle:
        topic = "trickle"
        linger_below = 5
        linger_seconds = 0.2

        async def run_once(self) -> int:
            calls.append(asyncio.get_running_loop().time())
            return [1, 10, 0][min(len(calls) - 1, 2)]

    worker = Worker([Trickle()], Waker(), poll_interval=5)
    await worker.start()
    try:
        while len(calls) < 3:
            await asyncio.sleep(0.01)
    finally:
        await worker.stop()
    assert calls[1] - calls[0] >= 0.2  # 1 handled, below linger_below: waited
    assert calls[2] - calls[1] < 0.1  # a full pass: straight on
