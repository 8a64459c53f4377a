"""Rate limits per source IP and per API key: 429 rate_limited + Retry-After, shared via Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from fastapi import FastAPI

from clarion.api.app import create_app
from tests.conftest import Backend, Tenant, assert_problem, make_settings, new_tenant

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _limited_app(backend: Backend, **limits: object) -> FastAPI:
    return create_app(make_settings(backend, **limits))


@pytest_asyncio.fixture
async def limited(backend: Backend) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant]]:
    app = await _limited_app(backend, rate_limit_general_ip="5/10 seconds")
    tenant = await new_tenant(app.state.db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, tenant
    await app.state.db.dispose()


async def test_per_ip_limit_returns_429_with_retry_after(limited: tuple[httpx.AsyncClient, Tenant]) -> None:
    client, tenant = limited
    statuses = [(await client.get("/api/client/me", headers=tenant.sk)).status_code for _ in range(5)]
    assert statuses == [200] * 5
    blocked = await client.get("/api/client/me", headers=tenant.sk)
    body = assert_problem(blocked, 429, "rate_limited")
    assert body["title"] == "Rate limit exceeded"
    assert 1 <= int(blocked.headers["retry-after"]) <= 10
    # Unauthenticated requests count too, and /health is not an /api path.
    assert_problem(await client.get("/api/client/me"), 429, "rate_limited")
    assert (await client.get("/health")).status_code in (200, 503)


async def test_per_key_limit_is_independent_of_ip(backend: Backend) -> None:
    app = await _limited_app(backend, rate_limit_per_key="3/10 seconds")
    tenant = await new_tenant(app.state.db)
    other = await new_tenant(app.state.db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for _ in range(3):
            assert (await c.get("/api/client/me", headers=tenant.sk)).status_code == 200
        assert_problem(await c.get("/api/client/me", headers=tenant.sk), 429, "rate_limited")
        assert (await c.get("/api/client/me", headers=other.sk)).status_code == 200
    await app.state.db.dispose()


async def test_rate_limited_responses_are_not_cached_by_idempotency(limited: tuple[httpx.AsyncClient, Tenant]) -> None:
    client, tenant = limited
    for _ in range(5):
        await client.get("/api/client/me", headers=tenant.sk)
    headers = {**tenant.sk, "Idempotency-Key": "after-429"}
    assert_problem(await client.post("/api/client/tags", json={"name": "x"}, headers=headers), 429, "rate_limited")


async def test_counters_are_shared_across_processes_through_redis(backend: Backend) -> None:
    namespace = f"clarion-test-{secrets.token_hex(4)}"
    settings = {"rate_limit_general_ip": "4/30 seconds", "redis_url": REDIS_URL, "redis_namespace": namespace}
    first, second = await _limited_app(backend, **settings), await _limited_app(backend, **settings)
    tenant = await new_tenant(first.state.db)
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://t") as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://t") as b,
        ):
            assert (await a.get("/api/client/me", headers=tenant.sk)).status_code == 200
            assert (await b.get("/api/client/me", headers=tenant.sk)).status_code == 200
            assert (await a.get("/api/client/me", headers=tenant.sk)).status_code == 200
            assert (await b.get("/api/client/me", headers=tenant.sk)).status_code == 200
            assert_problem(await a.get("/api/client/me", headers=tenant.sk), 429, "rate_limited")
            assert_problem(await b.get("/api/client/me", headers=tenant.sk), 429, "rate_limited")
    finally:
        await first.state.db.dispose()
        await second.state.db.dispose()
