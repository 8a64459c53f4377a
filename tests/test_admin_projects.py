"""The admin surface: projects, onboarding metadata, the organisation; and GET /me."""

from __future__ import annotations

import httpx

from tests.conftest import Tenant, assert_problem

NEW_PROJECT = {"name": "Shop", "locale": "en-AU", "timezone": "Australia/Sydney"}


async def test_create_list_update_project(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await client.post(
        "/api/admin/projects", json={**NEW_PROJECT, "website_url": "shop.example"}, headers=tenant.ok
    )
    assert created.status_code == 200, created.text
    project = created.json()
    assert project["organization_id"] == tenant.organization_id
    # Every new project starts with default capture providers, so it can send at once.
    assert project["role"] == "admin" and project["has_provider"] is True
    # New-project defaults: email links wrapped, opens tracked, push links not wrapped.
    assert (project["link_wrap_email"], project["track_opens_email"], project["link_wrap_push"]) == (True, True, False)

    listed = await client.get("/api/admin/projects", headers=tenant.ok)
    assert listed.status_code == 200
    assert listed.headers["x-total-count"] == "2"
    rows = listed.json()["results"]
    assert {p["id"] for p in rows} == {tenant.project_id, project["id"]}
    assert all("role" not in p and "has_provider" not in p for p in rows)

    updated = await client.patch(
        f"/api/admin/projects/{project['id']}", json={"description": "d", "timezone": "UTC"}, headers=tenant.ok
    )
    assert updated.status_code == 200
    assert updated.json()["description"] == "d" and updated.json()["timezone"] == "UTC"
    assert updated.json()["name"] == "Shop" and updated.json()["locale"] == "en-AU"


async def test_project_validation(client: httpx.AsyncClient, tenant: Tenant) -> None:
    cases = [
        ({**NEW_PROJECT, "name": "x"}, "name"),
        ({**NEW_PROJECT, "timezone": "Mars/Olympus"}, "timezone"),
        ({**NEW_PROJECT, "locale": "english please"}, "locale"),
        ({**NEW_PROJECT, "website_url": "ftp://example.com"}, "website_url"),
        ({**NEW_PROJECT, "deeplink_mirror_url": "http://example.com"}, "deeplink_mirror_url"),
        ({"name": "Shop", "timezone": "UTC"}, "locale"),
    ]
    for body, param in cases:
        problem = assert_problem(
            await client.post("/api/admin/projects", json=body, headers=tenant.ok), 422, "validation_failed"
        )
        assert problem["errors"][0]["param"] == param, problem


async def test_projects_of_another_org_are_invisible(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    assert_problem(
        await client.patch(
            f"/api/admin/projects/{tenant.project_id}", json={"name": "Hijack"}, headers=other_tenant.ok
        ),
        404,
        "resource_missing",
    )
    assert_problem(
        await client.post(
            f"/api/admin/projects/{tenant.project_id}/onboarding-metadata",
            json={"wants_consultation": False, "marketing_emails": False},
            headers=other_tenant.ok,
        ),
        404,
        "resource_missing",
    )
    ids = {p["id"] for p in (await client.get("/api/admin/projects", headers=other_tenant.ok)).json()["results"]}
    assert tenant.project_id not in ids


async def test_onboarding_metadata_upserts(client: httpx.AsyncClient, tenant: Tenant) -> None:
    url = f"/api/admin/projects/{tenant.project_id}/onboarding-metadata"
    first = await client.post(
        url,
        json={
            "industry": "saas_technology",
            "referral_source": "podcast",
            "wants_consultation": True,
            "marketing_emails": False,
        },
        headers=tenant.ok,
    )
    assert first.status_code == 200, first.text
    assert first.json()["project_id"] == tenant.project_id and first.json()["industry"] == "saas_technology"
    second = await client.post(
        url, json={"industry": "other", "wants_consultation": False, "marketing_emails": True}, headers=tenant.ok
    )
    assert second.json()["industry"] == "other" and second.json()["marketing_emails"] is True
    assert second.json()["created_at"] == first.json()["created_at"]
    bad = await client.post(
        url, json={"industry": "piracy", "wants_consultation": False, "marketing_emails": True}, headers=tenant.ok
    )
    assert assert_problem(bad, 422, "validation_failed")["errors"][0]["param"] == "industry"


async def test_organization_me(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = (await client.get("/api/admin/organizations/me", headers=tenant.ok)).json()
    assert body["role"] == "owner"
    assert body["organization"]["id"] == tenant.organization_id
    assert body["organization"]["username"].startswith("org-")


async def test_get_me_returns_the_keys_project(client: httpx.AsyncClient, tenant: Tenant) -> None:
    me = (await client.get("/api/client/me", headers=tenant.sk)).json()
    assert me["id"] == tenant.project_id and me["organization_id"] == tenant.organization_id
    assert me["role"] == "admin" and me["has_provider"] is True
    assert me["name"] == "Main" and me["locale"] == "en" and me["timezone"] == "UTC"
