"""Claim-time provider rate limits: in process, and shared by several limiters through Redis."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time

import pytest

from clarion.providers.ratelimit import ProviderRateLimiter

REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def test_in_process_budget_is_consumed_up_to_the_limit() -> None:
    limiter = ProviderRateLimiter()
    assert await limiter.acquire_up_to(1, 3, rate_limit=5, rate_interval="hour") == 3
    assert await limiter.acquire_up_to(1, 3, rate_limit=5, rate_interval="hour") == 2
    assert await limiter.acquire_up_to(1, 3, rate_limit=5, rate_interval="hour") == 0
    assert await limiter.reset_in(1, rate_limit=5, rate_interval="hour") > 0
    # Another provider has its own budget; zero means unlimited.
    assert await limiter.acquire_up_to(2, 4, rate_limit=5, rate_interval="hour") == 4
    assert await limiter.acquire_up_to(3, 10_000, rate_limit=0) == 10_000
    assert await limiter.acquire_up_to(3, 0, rate_limit=5) == 0
    with pytest.raises(ValueError):
        await limiter.acquire_up_to(4, 1, rate_limit=5, rate_interval="fortnight")


async def test_budget_comes_back_after_the_interval() -> None:
    limiter = ProviderRateLimiter()
    assert await limiter.acquire_up_to(7, 10, rate_limit=4, rate_interval="second") == 4
    assert await limiter.acquire_up_to(7, 10, rate_limit=4, rate_interval="second") == 0
    deadline = time.monotonic() + 5
    got = 0
    while got == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        got = await limiter.acquire_up_to(7, 10, rate_limit=4, rate_interval="second")
    assert 0 < got <= 4


async def test_two_limiters_over_redis_never_exceed_the_limit_together() -> None:
    prefix = f"clarion-test-{secrets.token_hex(6)}"
    a = ProviderRateLimiter(REDIS_URL, key_prefix=prefix)
    b = ProviderRateLimiter(REDIS_URL, key_prefix=prefix)
    limit = 137
    rng = random.Random(6)

    async def hammer(limiter: ProviderRateLimiter, rounds: int) -> int:
        total = 0
        for _ in range(rounds):
            total += await limiter.acquire_up_to(42, rng.randint(1, 9), rate_limit=limit, rate_interval="hour")
        return total

    totals = await asyncio.gather(*(hammer(a if i % 2 else b, 20) for i in range(16)))
    assert sum(totals) == limit  # demand (≥ 16×20) far exceeds the budget: all of it, never more
    assert await a.acquire_up_to(42, 5, rate_limit=limit, rate_interval="hour") == 0
    # A third limiter with another prefix (another deployment) is not affected.
    c = ProviderRateLimiter(REDIS_URL, key_prefix=prefix + "-other")
    assert await c.acquire_up_to(42, 5, rate_limit=limit, rate_interval="hour") == 5
    await a.clear(42, rate_limit=limit, rate_interval="hour")
    await c.clear(42, rate_limit=limit, rate_interval="hour")


async def test_two_limiters_over_redis_per_second_windows() -> None:
    """Over several one-second windows, granted sends never exceed the limit per window."""
    prefix = f"clarion-test-{secrets.token_hex(6)}"
    limiters = [ProviderRateLimiter(REDIS_URL, key_prefix=prefix) for _ in range(2)]
    limit = 50
    grants: list[tuple[float, int]] = []

    async def worker(limiter: ProviderRateLimiter) -> None:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            got = await limiter.acquire_up_to(9, 7, rate_limit=limit, rate_interval="second")
            if got:
                grants.append((time.monotonic(), got))
            else:
                await asyncio.sleep(0.01)

    start = time.monotonic()
    await asyncio.gather(*(worker(limiters[i % 2]) for i in range(6)))
    elapsed = time.monotonic() - start
    total = sum(n for _, n in grants)
    # A sliding-window counter admits at most `limit` per window on top of what the previous
    # window's weighted remainder allows: never more than limit × (windows started + 1).
    assert total <= limit * (int(elapsed) + 2)
    assert total >= limit  # and it does grant the budget
    for t0, _ in grants:
        in_window = sum(n for t, n in grants if t0 <= t < t0 + 1.0)
        assert in_window <= 2 * limit
