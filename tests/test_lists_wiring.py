"""Lists follow the audience write paths: user upserts, event ingestion, identity merges, and
`GET /users?list_id=` filters by membership."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from clarion.core.db import Database
from clarion.lists import service
from clarion.lists.models import ListUser
from clarion.users.models import User
from tests.conftest import Tenant
from tests.lists_support import event_rule, node, run_jobs, wrapper

BASE = "/api/client"


async def _members(db: Database, project_id: int, list_id: int) -> set[str]:
    async with db.transaction(project_id=project_id, readonly=True) as session:
        rows = await session.execute(
            select(User.external_id)
            .join(ListUser, ListUser.user_id == User.id)
            .where(ListUser.project_id == project_id, ListUser.list_id == list_id)
        )
        return {str(r) for r in rows.scalars()}


async def _list(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> int:
    r = await client.post(f"{BASE}/lists", json=body, headers=tenant.sk)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


async def test_upserts_and_events_keep_dynamic_lists_current(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    pro = await _list(
        client,
        tenant,
        {"name": "Pro", "type": "dynamic", "rule": wrapper("and", node("string", "data.plan", "=", "pro"))},
    )
    buyers = await _list(
        client,
        tenant,
        {
            "name": "Buyers",
            "type": "dynamic",
            "rule": wrapper(
                "and",
                event_rule(
                    "purchase",
                    frequency={"period": {"type": "rolling", "unit": "day", "value": 7}, "operator": ">=", "count": 2},
                ),
            ),
        },
    )
    await run_jobs(db)

    r = await client.post(
        f"{BASE}/users/batch",
        headers=tenant.sk,
        json=[
            {"external_id": "w1", "data": {"plan": "pro"}},
            {"external_id": "w2", "data": {"plan": "free"}},
        ],
    )
    assert r.status_code == 200, r.text
    # No job has run: the upsert itself updated the membership.
    assert await _members(db, tenant.project_id, pro) == {"w1"}

    r = await client.post(
        f"{BASE}/users/batch",
        headers=tenant.sk,
        json=[
            {"external_id": "w1", "data": {"plan": "team"}},
            {"external_id": "w2", "data": {"plan": "pro"}},
        ],
    )
    assert await _members(db, tenant.project_id, pro) == {"w2"}
    got = (await client.get(f"{BASE}/lists/{pro}", headers=tenant.sk)).json()
    assert got["users_count"] == 1

    r = await client.post(f"{BASE}/events", headers=tenant.sk, json=[{"name": "purchase", "external_id": "w1"}])
    assert r.status_code == 204, r.text
    assert await _members(db, tenant.project_id, buyers) == set()
    r = await client.post(f"{BASE}/events", headers=tenant.sk, json=[{"name": "purchase", "external_id": "w1"}])
    assert r.status_code == 204, r.text
    assert await _members(db, tenant.project_id, buyers) == {"w1"}

    page = (await client.get(f"{BASE}/users?list_id={pro}", headers=tenant.sk)).json()
    assert [u["external_id"] for u in page["results"]] == ["w2"]
    page = (await client.get(f"{BASE}/users?list_id={buyers}", headers=tenant.sk)).json()
    assert [u["external_id"] for u in page["results"]] == ["w1"]
    everyone = (await client.get(f"{BASE}/users", headers=tenant.sk)).json()
    assert {u["external_id"] for u in everyone["results"]} == {"w1", "w2"}


async def test_identity_merge_moves_memberships(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    static = await _list(client, tenant, {"name": "Static", "type": "static"})
    r = await client.post(
        f"{BASE}/users/batch",
        headers=tenant.sk,
        json=[
            {"anonymous_id": "anon-1"},
            {"external_id": "known"},
        ],
    )
    assert r.status_code == 200, r.text
    async with db.transaction(project_id=tenant.project_id) as session:
        anon_id = (await session.execute(select(User.id).where(User.anonymous_id == "anon-1"))).scalar_one()
        await service.add_user_ids(session, tenant.project_id, static, [anon_id])
    # The anonymous visitor identifies as the known user: the anonymous profile folds into it.
    r = await client.post(
        f"{BASE}/users/batch",
        headers=tenant.sk,
        json=[
            {"anonymous_id": "anon-1", "external_id": "known"},
        ],
    )
    assert r.status_code == 200, r.text
    assert await _members(db, tenant.project_id, static) == {"known"}
    page = (await client.get(f"{BASE}/users?list_id={static}", headers=tenant.sk)).json()
    assert [u["external_id"] for u in page["results"]] == ["known"]


async def test_user_import_fills_static_and_dynamic_lists(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    static = await _list(client, tenant, {"name": "Imported", "type": "static"})
    pro = await _list(
        client,
        tenant,
        {"name": "Pro", "type": "dynamic", "rule": wrapper("and", node("string", "data.plan", "=", "pro"))},
    )
    await run_jobs(db)
    csv_body = "external_id,email,plan\nm1,m1@example.com,pro\nm2,m2@example.com,free\n"
    r = await client.post(
        f"{BASE}/users/import",
        files={"file": ("p.csv", csv_body.encode(), "text/csv")},
        data={"list_id": str(static)},
        headers=tenant.sk,
    )
    assert r.status_code == 200, r.text
    await run_jobs(db)
    assert await _members(db, tenant.project_id, static) == {"m1", "m2"}
    assert await _members(db, tenant.project_id, pro) == {"m1"}
    assert (await client.get(f"{BASE}/lists/{static}", headers=tenant.sk)).json()["users_count"] == 2
