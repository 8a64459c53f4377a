"""`POST /events` for known users on PostgreSQL: answered in one statement before routing, with
the same rows, data-schema paths and errors as the general path; every other batch is handed to
the general path having written nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from clarion.core.db import Database
from clarion.events.models import Event
from tests.conftest import Tenant, assert_problem

E = "/api/client/events"
WINDOW = "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"


async def _users(client: httpx.AsyncClient, tenant: Tenant, *ids: str) -> None:
    r = await client.post("/api/client/users/batch", json=[{"external_id": i} for i in ids], headers=tenant.sk)
    assert r.status_code == 200, r.text


def _refuse_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the general events path ran")

    monkeypatch.setattr("clarion.events.router.track_events", refuse)


async def _count(db: Database, project_id: int) -> int:
    async with db.transaction() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(Event).where(Event.project_id == project_id))
            ).scalar()
            or 0
        )


async def test_known_users_are_answered_before_the_route(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.is_postgres:
        pytest.skip("the fast path is PostgreSQL's")
    await _users(client, tenant, "k1", "k2")
    _refuse_general_path(monkeypatch)
    batch = [
        {
            "name": " purchase ",
            "external_id": " k1",
            "data": {"amount": 12.5, "sku": "A"},
            "created_at": "2026-01-10T10:00:00Z",
        },
        {"name": "page_view", "external_id": "k2", "created_at": "2026-01-11T10:00:00+02:00"},
        {
            "name": "purchase",
            "external_id": "k1",
            "data": {"tags": ["x"], "paid": True},
            "created_at": "2026-01-12T10:00:00Z",
        },
    ]
    r = await client.post(E, json=batch, headers=tenant.sk)
    assert r.status_code == 204, r.text
    assert r.headers["x-request-id"].startswith("req_")
    # A publishable key may post events too.
    r = await client.post(
        E, json=[{"name": "open", "external_id": "k2", "created_at": "2026-01-13T00:00:00Z"}], headers=tenant.pk
    )
    assert r.status_code == 204, r.text
    monkeypatch.undo()
    listed = (await client.get(f"{E}?{WINDOW}&include_payload=true&limit=100", headers=tenant.sk)).json()["results"]
    by_time = sorted(listed, key=lambda e: e["created_at"])
    assert [(e["name"], e["user"]["external_id"]) for e in by_time] == [
        ("purchase", "k1"),
        ("page_view", "k2"),
        ("purchase", "k1"),
        ("open", "k2"),
    ]
    assert by_time[0]["data"] == {"amount": 12.5, "sku": "A"} and by_time[1]["data"] == {}
    assert by_time[1]["created_at"].startswith("2026-01-11T08:00:00")
    assert len({e["id"] for e in listed}) == 4 and all(e["id"].startswith("evt_") for e in listed)
    schema = (await client.get("/api/client/data-schema?limit=100", headers=tenant.sk)).json()["results"]
    event_paths = {(p["event_name"], p["path"], p["type"]) for p in schema if p["kind"] == "event"}
    assert event_paths == {
        ("purchase", "$.amount", "number"),
        ("purchase", "$.sku", "string"),
        ("purchase", "$.paid", "boolean"),
        ("purchase", "$.tags", "array"),
    }


async def test_other_batches_go_the_general_way_and_nothing_is_written_twice(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    await _users(client, tenant, "g1")
    before = await _count(db, tenant.project_id)
    # An unknown user: the whole batch goes through the upsert, each event stored once.
    mixed = [{"name": "a", "external_id": "g1"}, {"name": "a", "external_id": "g-new"}]
    assert (await client.post(E, json=mixed, headers=tenant.sk)).status_code == 204
    assert await _count(db, tenant.project_id) == before + 2
    assert (await client.get("/api/client/users/g-new", headers=tenant.sk)).status_code == 200
    # An invalid item: per-item results, the valid one stored.
    partial = await client.post(E, json=[{"name": "b", "external_id": "g1"}, {"external_id": "g1"}], headers=tenant.sk)
    assert partial.status_code == 200, partial.text
    assert partial.json()["succeeded"] == 1 and partial.json()["failed"] == 1
    assert await _count(db, tenant.project_id) == before + 3
    # A `user` block upserts the profile.
    block = [{"name": "c", "external_id": "g1", "user": {"email": "g1@example.com"}}]
    assert (await client.post(E, json=block, headers=tenant.sk)).status_code == 204
    assert (await client.get("/api/client/users/g1", headers=tenant.sk)).json()["email"] == "g1@example.com"
    # An Idempotency-Key: replayed, stored once.
    keyed = {**tenant.sk, "Idempotency-Key": "ev-1"}
    assert (await client.post(E, json=[{"name": "d", "external_id": "g1"}], headers=keyed)).status_code == 204
    again = await client.post(E, json=[{"name": "d", "external_id": "g1"}], headers=keyed)
    assert again.status_code == 204 and again.headers.get("idempotent-replayed") == "true"
    assert await _count(db, tenant.project_id) == before + 5


async def test_keys_that_may_not_post_get_the_general_answers(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    await _users(client, tenant, "r1")
    before = await _count(db, tenant.project_id)
    support = (
        await client.post(
            "/api/client/keys", json={"name": "s", "scope": "secret", "role": "support"}, headers=tenant.sk
        )
    ).json()
    assert_problem(
        await client.post(
            E, json=[{"name": "x", "external_id": "r1"}], headers={"Authorization": f"Bearer {support['value']}"}
        ),
        403,
        "permission_denied",
    )
    revoked = (
        await client.post("/api/client/keys", json={"name": "r", "scope": "secret", "role": "admin"}, headers=tenant.sk)
    ).json()
    assert (await client.delete(f"/api/client/keys/{revoked['id']}", headers=tenant.sk)).status_code == 200
    assert_problem(
        await client.post(
            E, json=[{"name": "x", "external_id": "r1"}], headers={"Authorization": f"Bearer {revoked['value']}"}
        ),
        401,
        "authentication_required",
    )
    # A secret value with a publishable prefix matches nothing.
    assert_problem(
        await client.post(
            E,
            json=[{"name": "x", "external_id": "r1"}],
            headers={"Authorization": "Bearer pk_" + tenant.secret_key[3:]},
        ),
        401,
        "authentication_required",
    )
    assert await _count(db, tenant.project_id) == before
