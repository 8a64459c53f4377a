"""Wake-ups for idle workers: an in-process event, or Redis pub/sub across processes.

Workers poll on a short interval regardless, so a lost wake-up only costs latency, never work.
A Redis publish runs in the background: ``notify`` returns at once, and the notifies that arrive
while a publish of the same topic is in flight fold into one more publish after it, so a burst of
requests costs two publishes rather than one each, and every notify is followed by a publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis

log = logging.getLogger("clarion.wakeup")


class Waker:
    def __init__(self, redis_url: str | None = None, namespace: str = "clarion") -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._redis: Redis | None = Redis.from_url(redis_url) if redis_url else None
        self._namespace = namespace
        self._listener: asyncio.Task[None] | None = None
        self._publishing: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def _channel(self, topic: str) -> str:
        return f"{self._namespace}:wake:{topic}"

    async def notify(self, topic: str) -> None:
        self._events[topic].set()
        if self._redis is None:
            return
        if topic in self._publishing:
            self._again.add(topic)  # the publish in flight may predate the caller's commit
            return
        self._publishing[topic] = asyncio.create_task(self._publish(topic))

    async def _publish(self, topic: str) -> None:
        assert self._redis is not None
        try:
            while True:
                self._again.discard(topic)
                try:
                    await self._redis.publish(self._channel(topic), b"1")
                except Exception as exc:  # wake-ups are an optimisation; polling covers a failure
                    log.warning("wake-up publish failed: %s", exc)
                if topic not in self._again:
                    return
        finally:
            self._publishing.pop(topic, None)

    async def flush(self) -> None:
        """Wait for the publishes in flight (tests, shutdown)."""
        while self._publishing:
            await asyncio.gather(*self._publishing.values(), return_exceptions=True)

    async def wait(self, topic: str, timeout: float) -> None:
        event = self._events[topic]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    async def start(self, topics: list[str]) -> None:
        if self._redis is None or self._listener is not None:
            return
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(*(self._channel(t) for t in topics))
        prefix = self._channel("")

        async def listen() -> None:
            try:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        channel = (
                            message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
                        )
                        self._events[channel.removeprefix(prefix)].set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wake-up listener stopped: %s", exc)

        self._listener = asyncio.create_task(listen())

    async def close(self) -> None:
        await self.flush()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()
