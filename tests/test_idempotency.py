"""Idempotency-Key semantics (§A4): replay, mismatch, in-progress, TTL, scope, no caching of 5xx/429."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from clarion.api.app import create_app
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.queue_models import IdempotencyRecord
from clarion.keys.models import ProjectApiKey
from tests.conftest import Backend, Tenant, assert_problem, make_settings, new_tenant


async def _key_count(db: Database, project_id: int) -> int:
    async with db.session(project_id=project_id) as session:
        return int((await session.execute(select(func.count()).select_from(ProjectApiKey))).scalar() or 0)


async def test_replay_returns_original_and_executes_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    headers = {**tenant.sk, "Idempotency-Key": "create-key-1"}
    before = await _key_count(db, tenant.project_id)
    first = await client.post("/api/client/keys", json={"name": "once"}, headers=headers)
    second = await client.post("/api/client/keys", json={"name": "once"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()  # including the full key value shown once
    assert second.headers["x-request-id"] == first.headers["x-request-id"]
    assert await _key_count(db, tenant.project_id) == before + 1


async def test_mismatch_and_invalid_keys(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = {**tenant.sk, "Idempotency-Key": "k-mismatch"}
    assert (await client.post("/api/client/tags", json={"name": "one"}, headers=headers)).status_code == 200
    assert_problem(
        await client.post("/api/client/tags", json={"name": "two"}, headers=headers), 409, "idempotency_key_mismatch"
    )
    # Same body on another path is also a mismatch (fingerprint binds method + path).
    assert_problem(
        await client.post("/api/client/keys", json={"name": "one"}, headers=headers), 409, "idempotency_key_mismatch"
    )
    for bad in ("", "x" * 256):
        body = assert_problem(
            await client.post("/api/client/tags", json={"name": "z"}, headers={**tenant.sk, "Idempotency-Key": bad}),
            400,
            "idempotency_key_invalid",
        )
        assert body["param"] == "Idempotency-Key"
    ok = await client.post(
        "/api/client/tags", json={"name": "max"}, headers={**tenant.sk, "Idempotency-Key": "x" * 255}
    )
    assert ok.status_code == 200


async def test_four_xx_is_cached_and_keys_are_scoped_per_api_key(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await client.post("/api/client/tags", json={"name": "dup"}, headers=tenant.sk)
    headers = {**tenant.sk, "Idempotency-Key": "k-4xx"}
    first = await client.post("/api/client/tags", json={"name": "dup"}, headers=headers)
    assert_problem(first, 409, "resource_already_exists")
    existing = (await client.get("/api/client/tags?q=dup", headers=tenant.sk)).json()["results"][0]["id"]
    await client.delete(f"/api/client/tags/{existing}", headers=tenant.sk)
    replay = await client.post("/api/client/tags", json={"name": "dup"}, headers=headers)
    assert replay.status_code == 409 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    # The same Idempotency-Key under another API key is a different key.
    other = await client.post(
        "/api/client/tags", json={"name": "dup"}, headers={**other_tenant.sk, "Idempotency-Key": "k-4xx"}
    )
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers


async def test_get_and_delete_ignore_the_header(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = {**tenant.sk, "Idempotency-Key": "k-get"}
    a = await client.get("/api/client/me", headers=headers)
    b = await client.get("/api/client/me", headers=headers)
    assert a.status_code == b.status_code == 200 and "idempotent-replayed" not in b.headers


async def test_in_progress_is_409_with_retry_after_and_expired_keys_are_fresh(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    headers = {**tenant.sk, "Idempotency-Key": "k-ttl"}
    assert (await client.post("/api/client/tags", json={"name": "ttl"}, headers=headers)).status_code == 200
    # Simulate a request still running under this key.
    async with db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "k-ttl")
            .values(state="in_progress", locked_until=utcnow() + timedelta(seconds=30))
        )
    busy = await client.post("/api/client/tags", json={"name": "ttl"}, headers=headers)
    assert_problem(busy, 409, "idempotency_in_progress")
    assert 1 <= int(busy.headers["retry-after"]) <= 30
    # After the TTL the key is fresh: the operation runs again (and now conflicts on the name).
    async with db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "k-ttl")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    again = await client.post("/api/client/tags", json={"name": "ttl"}, headers=headers)
    assert_problem(again, 409, "resource_already_exists")
    assert "idempotent-replayed" not in again.headers


async def test_abandoned_in_progress_record_is_taken_over(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    headers = {**tenant.sk, "Idempotency-Key": "k-crash"}
    assert (await client.post("/api/client/tags", json={"name": "crash"}, headers=headers)).status_code == 200
    async with db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "k-crash")
            .values(state="in_progress", locked_until=utcnow() - timedelta(seconds=1))
        )
    resumed = await client.post("/api/client/tags", json={"name": "crash"}, headers=headers)
    assert_problem(resumed, 409, "resource_already_exists")  # executed again, not stuck


async def test_server_errors_are_not_cached(backend: Backend) -> None:
    from fastapi import APIRouter

    app = create_app(make_settings(backend))
    tenant = await new_tenant(app.state.db)
    calls = {"n": 0}
    router = APIRouter()

    @router.post("/api/client/__flaky")
    async def flaky() -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return {"n": calls["n"]}

    app.include_router(router)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
        ) as c:
            headers = {**tenant.sk, "Idempotency-Key": "k-5xx"}
            assert_problem(await c.post("/api/client/__flaky", json={}, headers=headers), 500, "internal_error")
            ok = await c.post("/api/client/__flaky", json={}, headers=headers)
            assert ok.status_code == 200 and ok.json() == {"n": 2}
            replay = await c.post("/api/client/__flaky", json={}, headers=headers)
            assert replay.json() == {"n": 2} and replay.headers["idempotent-replayed"] == "true"
    finally:
        await app.state.db.dispose()


async def test_fifty_concurrent_identical_requests_execute_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    before = await _key_count(db, tenant.project_id)
    headers = {**tenant.sk, "Idempotency-Key": "k-50"}
    responses = await asyncio.gather(
        *(client.post("/api/client/keys", json={"name": "burst"}, headers=headers) for _ in range(50))
    )
    assert await _key_count(db, tenant.project_id) == before + 1
    executed = [r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(executed) == 1
    assert len(executed) + len(replayed) + len(in_progress) == 50
    assert all(r.json()["value"] == executed[0].json()["value"] for r in replayed)
    assert all(r.json()["code"] == "idempotency_in_progress" and r.headers["retry-after"] for r in in_progress)


async def test_stored_responses_are_encrypted_at_rest(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    created = await client.post(
        "/api/client/keys", json={"name": "secretive"}, headers={**tenant.sk, "Idempotency-Key": "k-enc"}
    )
    value = created.json()["value"]
    async with db.session() as session:
        stored = (
            await session.execute(select(IdempotencyRecord.body).where(IdempotencyRecord.key == "k-enc"))
        ).scalar_one()
    assert stored and value.encode() not in stored and b"secretive" not in stored
    replay = await client.post(
        "/api/client/keys", json={"name": "secretive"}, headers={**tenant.sk, "Idempotency-Key": "k-enc"}
    )
    assert replay.json()["value"] == value
