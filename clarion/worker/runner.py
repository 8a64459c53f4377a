"""The worker: one asyncio task per work source, each claiming batches until idle, then waiting
for a wake-up or the poll interval. Run in-process by `clarion serve`, or alone by `clarion worker`."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from clarion.core.db import Database
from clarion.core.wakeup import Waker

log = logging.getLogger("clarion.worker")


class WorkSource(Protocol):
    topic: str

    async def run_once(self) -> int:
        """Claim and process one batch; return how many items it handled (0 = nothing due)."""
        ...


async def close_source(source: WorkSource) -> None:
    """Let a source that holds resources (an HTTP session, in-flight records) release them."""
    aclose = getattr(source, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.exception("closing work source %s failed", source.topic)


def default_sources(db: Database) -> list[WorkSource]:
    """Every kind of due work this build knows about; domains add their sources here."""
    from clarion.core.registry import load_job_handlers
    from clarion.delivery.sender import MessageSource
    from clarion.webhooks.dispatch import WebhookSource
    from clarion.worker.jobs import JobSource

    load_job_handlers()
    return [JobSource(db), MessageSource(db), WebhookSource(db)]


class Worker:
    def __init__(self, sources: list[WorkSource], waker: Waker, *, poll_interval: float = 1.0) -> None:
        self.sources = sources
        self.waker = waker
        self.poll_interval = poll_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def _loop(self, source: WorkSource) -> None:
        while not self._stopping.is_set():
            try:
                handled = await source.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("work source %s failed; retrying", source.topic)
                handled = 0
                await asyncio.sleep(self.poll_interval)
            if handled == 0:
                await self.waker.wait(source.topic, self.poll_interval)
            elif handled < getattr(source, "linger_below", 0):
                # A trickle (one-user triggers arriving one by one): let a few milliseconds' worth
                # gather so each pass's fixed cost (claim, lookups, outcome statements) is shared.
                await asyncio.sleep(getattr(source, "linger_seconds", 0.0))

    async def start(self) -> None:
        await self.waker.start([s.topic for s in self.sources])
        self._tasks = [asyncio.create_task(self._loop(s), name=f"worker:{s.topic}") for s in self.sources]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.gather(*(close_source(s) for s in self.sources))
        from clarion.providers.email.smtp import close_pools

        await close_pools()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()
