"""Data schema: paths recorded on write, visibility, classified stripping, rebuild."""

from __future__ import annotations

from typing import Any

import httpx

from clarion.core.db import Database
from clarion.core.registry import load_job_handlers
from clarion.worker.jobs import JobSource
from tests.conftest import Tenant, assert_problem

D = "/api/client/data-schema"


async def paths(client: httpx.AsyncClient, tenant: Tenant) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    rows = (await client.get(D, params={"limit": 100}, headers=tenant.sk)).json()["results"]
    return {(r["kind"], r["event_name"], r["path"]): r for r in rows}


async def test_paths_and_types_are_recorded(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post(
        "/api/client/users/batch",
        json=[
            {
                "external_id": "d1",
                "data": {
                    "plan": "pro",
                    "seats": 3,
                    "trial": False,
                    "tags": ["a"],
                    "renews": "2026-05-01",
                    "address": {"city": "Perth"},
                    "gone": None,
                },
            }
        ],
        headers=tenant.sk,
    )
    await client.post(
        "/api/client/events",
        json=[{"name": "buy", "external_id": "d1", "data": {"amount": 9.5, "items": {"sku": "X"}}}],
        headers=tenant.sk,
    )
    found = await paths(client, tenant)
    assert {k: v["type"] for k, v in found.items()} == {
        ("user", None, "$.plan"): "string",
        ("user", None, "$.seats"): "number",
        ("user", None, "$.trial"): "boolean",
        ("user", None, "$.tags"): "array",
        ("user", None, "$.renews"): "date",
        ("user", None, "$.address.city"): "string",
        ("event", "buy", "$.amount"): "number",
        ("event", "buy", "$.items.sku"): "string",
    }
    assert all(v["visibility"] == "public" for v in found.values())
    # The first type seen wins.
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "d2", "data": {"seats": "many"}}], headers=tenant.sk
    )
    assert (await paths(client, tenant))[("user", None, "$.seats")]["type"] == "number"


async def test_classified_paths_are_stripped_everywhere(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post(
        "/api/client/users/batch",
        json=[{"external_id": "c1", "data": {"ssn": "123", "profile": {"dob": "1990-01-01", "x": 1}}}],
        headers=tenant.sk,
    )
    found = await paths(client, tenant)
    for path in ("$.ssn", "$.profile.dob"):
        r = await client.patch(
            f"{D}/{found[('user', None, path)]['id']}", json={"visibility": "classified"}, headers=tenant.sk
        )
        assert r.status_code == 200 and r.json()["visibility"] == "classified"
    expected = {"profile": {"x": 1}}
    assert (await client.get("/api/client/users/c1", headers=tenant.sk)).json()["data"] == expected
    listed = (await client.get("/api/client/users", params={"q": "c1"}, headers=tenant.sk)).json()["results"]
    assert listed[0]["data"] == expected
    batch = (await client.post("/api/client/users/batch", json=[{"external_id": "c1"}], headers=tenant.sk)).json()
    assert batch["results"][0]["user"]["data"] == expected
    token = (await client.post("/api/client/users/c1/sessions", headers=tenant.sk)).json()["token"]
    me = (await client.get("/api/client/users/me", headers={**tenant.pk, "X-Spotzee-User-Token": token})).json()
    assert me["data"] == expected
    toggled = await client.patch("/api/client/users/c1/subscriptions", json=[], headers=tenant.sk)
    assert toggled.json()["data"] == expected
    r = await client.patch(
        f"{D}/{found[('user', None, '$.ssn')]['id']}", json={"visibility": "hidden"}, headers=tenant.sk
    )
    assert (await client.get("/api/client/users/c1", headers=tenant.sk)).json()["data"]["ssn"] == "123"


async def test_visibility_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(
        await client.patch(f"{D}/999999999", json={"visibility": "hidden"}, headers=tenant.sk), 404, "resource_missing"
    )
    await client.post("/api/client/users/batch", json=[{"external_id": "v", "data": {"a": 1}}], headers=tenant.sk)
    pid = next(iter((await paths(client, tenant)).values()))["id"]
    assert_problem(
        await client.patch(f"{D}/{pid}", json={"visibility": "secret"}, headers=tenant.sk), 422, "validation_failed"
    )


async def test_rebuild_keeps_visibility_and_drops_stale_paths(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    load_job_handlers()
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "rb", "data": {"keep": 1, "drop": 2}}], headers=tenant.sk
    )
    found = await paths(client, tenant)
    await client.patch(f"{D}/{found[('user', None, '$.keep')]['id']}", json={"visibility": "hidden"}, headers=tenant.sk)
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "rb", "data": {"drop": None}}], headers=tenant.sk
    )
    r = await client.post(f"{D}/rebuild", headers=tenant.sk)
    assert r.status_code == 200 and r.json() == {"success": True}
    while await JobSource(db).run_once():
        pass
    after = await paths(client, tenant)
    assert set(after) == {("user", None, "$.keep")}
    assert after[("user", None, "$.keep")]["visibility"] == "hidden"
    assert after[("user", None, "$.keep")]["id"] == found[("user", None, "$.keep")]["id"]
