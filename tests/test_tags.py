from __future__ import annotations

import httpx

from clarion.core.db import Database
from clarion.tags.service import set_resource_tags, tags_for
from tests.conftest import Tenant, assert_problem


async def test_tag_crud(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/client/tags", json={"name": " vip "}, headers=tenant.sk)).json()
    assert created["name"] == "vip" and created["project_id"] == tenant.project_id
    assert (await client.get(f"/api/client/tags/{created['id']}", headers=tenant.sk)).json()["name"] == "vip"
    assert_problem(
        await client.post("/api/client/tags", json={"name": "vip"}, headers=tenant.sk), 409, "resource_already_exists"
    )
    other = (await client.post("/api/client/tags", json={"name": "gold"}, headers=tenant.sk)).json()
    assert_problem(
        await client.patch(f"/api/client/tags/{other['id']}", json={"name": "vip"}, headers=tenant.sk),
        409,
        "resource_already_exists",
    )
    renamed = await client.patch(f"/api/client/tags/{created['id']}", json={"name": "VIP"}, headers=tenant.sk)
    assert renamed.json()["name"] == "VIP"
    assert_problem(
        await client.post("/api/client/tags", json={"name": ""}, headers=tenant.sk), 422, "validation_failed"
    )
    assert (await client.delete(f"/api/client/tags/{created['id']}", headers=tenant.sk)).json() is True
    assert_problem(await client.get(f"/api/client/tags/{created['id']}", headers=tenant.sk), 404, "resource_missing")


async def test_tags_are_per_project(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    mine = (await client.post("/api/client/tags", json={"name": "shared-name"}, headers=tenant.sk)).json()
    # The same name is free in another project, and ids don't cross.
    assert (
        await client.post("/api/client/tags", json={"name": "shared-name"}, headers=other_tenant.sk)
    ).status_code == 200
    assert_problem(await client.get(f"/api/client/tags/{mine['id']}", headers=other_tenant.sk), 404, "resource_missing")
    assert_problem(
        await client.delete(f"/api/client/tags/{mine['id']}", headers=other_tenant.sk), 404, "resource_missing"
    )


async def test_resource_tag_helpers_and_delete_removes_applications(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    async with db.transaction(project_id=tenant.project_id) as session:
        assert await set_resource_tags(session, "campaign", 7, ["b", "a", "b", " "]) == ["b", "a"]
        await set_resource_tags(session, "campaign", 8, ["a"])
        assert dict(await tags_for(session, "campaign", [7, 8, 9])) == {7: ["a", "b"], 8: ["a"]}
    tag_a = next(
        t for t in (await client.get("/api/client/tags?q=a", headers=tenant.sk)).json()["results"] if t["name"] == "a"
    )
    await client.delete(f"/api/client/tags/{tag_a['id']}", headers=tenant.sk)
    async with db.transaction(project_id=tenant.project_id) as session:
        assert dict(await tags_for(session, "campaign", [7, 8])) == {7: ["b"]}
