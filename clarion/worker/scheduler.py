"""The scheduler: periodic duties run by exactly one process at a time.

Leadership is a row in ``leader_leases`` renewed every few seconds; if the leader dies its lease
expires and another scheduler takes over. Duties must be safe to run twice (they are all
idempotent statements), since a lease can expire during a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.queue_models import LeaderLease
from clarion.core.sql import insert_for

log = logging.getLogger("clarion.scheduler")

Duty = Callable[[Database], Awaitable[object]]


@dataclass
class PeriodicDuty:
    name: str
    interval: float
    run: Duty
    last_run: float = field(default=-1e18)


def default_duties() -> list[PeriodicDuty]:
    """Every periodic duty of this build; domains add theirs here."""
    from clarion.api.idempotency import IdempotencyStore
    from clarion.core.settings import get_settings

    async def purge_idempotency(db: Database) -> object:
        return await IdempotencyStore(db, get_settings()).purge_expired()

    from clarion.campaigns.counters import fold_counter_deltas
    from clarion.delivery.schedule import campaign_lifecycle
    from clarion.lists.jobs import refresh_windowed_lists
    from clarion.webhooks.dispatch import purge_webhook_history

    return [
        PeriodicDuty("purge-idempotency-keys", 600, purge_idempotency),
        PeriodicDuty("purge-webhook-history", 3600, purge_webhook_history),
        PeriodicDuty("refresh-windowed-lists", 300, refresh_windowed_lists),
        PeriodicDuty("campaign-lifecycle", 2, campaign_lifecycle),
        PeriodicDuty("fold-campaign-counters", 1, fold_counter_deltas),
    ]


class Scheduler:
    LEASE_NAME = "scheduler"

    def __init__(
        self, db: Database, duties: list[PeriodicDuty], *, lease_seconds: float = 15, tick: float = 1.0
    ) -> None:
        self.db = db
        self.duties = duties
        self.lease = timedelta(seconds=lease_seconds)
        self.tick = tick
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._stopping = asyncio.Event()

    async def try_lead(self) -> bool:
        now = utcnow()
        async with self.db.transaction() as session:
            await session.execute(
                insert_for(session, LeaderLease)
                .values(name=self.LEASE_NAME, holder=self.holder, lease_until=now + self.lease)
                .on_conflict_do_nothing()
            )
            await session.execute(
                update(LeaderLease)
                .where(
                    LeaderLease.name == self.LEASE_NAME,
                    or_(LeaderLease.holder == self.holder, LeaderLease.lease_until < now),
                )
                .values(holder=self.holder, lease_until=now + self.lease)
            )
            holder = (
                await session.execute(select(LeaderLease.holder).where(LeaderLease.name == self.LEASE_NAME))
            ).scalar_one()
        return bool(holder == self.holder)

    async def run_due_duties(self) -> None:
        loop = asyncio.get_running_loop()
        for duty in self.duties:
            if loop.time() - duty.last_run < duty.interval:
                continue
            duty.last_run = loop.time()
            try:
                await duty.run(self.db)
            except Exception:
                log.exception("scheduled duty %s failed", duty.name)

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self.try_lead():
                    await self.run_due_duties()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.tick)

    def stop(self) -> None:
        self._stopping.set()
