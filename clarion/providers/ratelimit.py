"""Claim-time rate limiting of providers (`rate_limit` sends per `rate_interval`).

Workers ask how many of the ``n`` due messages they may start now; the answer is consumed at once.
The budget lives in the ``limits`` library's sliding-window counter: in Redis when
``CLARION_REDIS_URL`` is set (shared by every process, updated atomically by one Lua script per
call), in process memory otherwise. ``rate_limit == 0`` means unlimited.
"""

from __future__ import annotations

import time
from typing import Protocol

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from clarion.core.settings import Settings

_ITEMS: dict[str, type[RateLimitItem]] = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
    "day": RateLimitItemPerDay,
}


class RatedProvider(Protocol):
    """Anything with a provider's id and rate columns (a ``Provider`` row, for instance)."""

    @property
    def id(self) -> int: ...
    @property
    def rate_limit(self) -> int: ...
    @property
    def rate_interval(self) -> str: ...


class ProviderRateLimiter:
    """``await acquire_up_to(provider_id, n, rate_limit=…, rate_interval=…)`` → how many sends
    may start now (0..n), already consumed."""

    def __init__(self, redis_url: str | None = None, *, key_prefix: str = "clarion-provider-rate") -> None:
        self.storage: Storage
        if redis_url:
            url = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            storage = storage_from_string(url, key_prefix=key_prefix)
            assert isinstance(storage, Storage)
            self.storage = storage
        else:
            self.storage = MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRateLimiter:
        """Shared through ``CLARION_REDIS_URL`` when set, in process otherwise."""
        return cls(settings.redis_url)

    @staticmethod
    def _item(rate_limit: int, rate_interval: str) -> RateLimitItem:
        if rate_interval not in _ITEMS:
            raise ValueError(f"rate_interval must be one of {', '.join(_ITEMS)}")
        return _ITEMS[rate_interval](rate_limit)

    async def acquire_for(self, provider: RatedProvider, n: int) -> int:
        """:meth:`acquire_up_to` with the rate columns of ``provider``."""
        return await self.acquire_up_to(
            provider.id, n, rate_limit=provider.rate_limit, rate_interval=provider.rate_interval
        )

    async def acquire_up_to(self, provider_id: int, n: int, *, rate_limit: int, rate_interval: str = "second") -> int:
        """Consume and return the largest k ≤ n the window allows right now.

        Each ``hit(cost=k)`` is all-or-nothing and atomic in the storage, so concurrent callers
        (other processes included) never together exceed the limit; on contention the request is
        halved until it fits or reaches zero.
        """
        if n <= 0:
            return 0
        if rate_limit <= 0:
            return n
        item = self._item(rate_limit, rate_interval)
        key = str(provider_id)
        stats = await self.limiter.get_window_stats(item, key)
        want = min(n, stats.remaining)
        while want > 0:
            if await self.limiter.hit(item, key, cost=want):
                return want
            want //= 2
        return 0

    async def reset_in(self, provider_id: int, *, rate_limit: int, rate_interval: str = "second") -> float:
        """Seconds until more budget frees up (0 when some is available or the rate is unlimited)."""
        if rate_limit <= 0:
            return 0.0
        stats = await self.limiter.get_window_stats(self._item(rate_limit, rate_interval), str(provider_id))
        if stats.remaining > 0:
            return 0.0
        return max(0.0, stats.reset_time - time.time())

    async def clear(self, provider_id: int, *, rate_limit: int, rate_interval: str = "second") -> None:
        if rate_limit > 0:
            await self.limiter.clear(self._item(rate_limit, rate_interval), str(provider_id))
