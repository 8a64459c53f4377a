"""API keys: entropy, hashing at rest, masking, roles, surfaces, revocation, the pk_ allowlist."""

from __future__ import annotations

import base64

import httpx
from sqlalchemy import select

from clarion.core.db import Database
from clarion.core.ids import hash_key
from clarion.keys.models import OrganizationApiKey, ProjectApiKey
from tests.conftest import Tenant, assert_problem


def _entropy_bytes(value: str) -> int:
    token = value.split("_", 1)[1]
    return len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


async def test_key_values_are_random_hashed_and_shown_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    created = await client.post("/api/client/keys", json={"name": "deploy", "role": "editor"}, headers=tenant.sk)
    assert created.status_code == 200, created.text
    body = created.json()
    value = body["value"]
    assert value.startswith("sk_") and _entropy_bytes(value) >= 32
    assert body["scope"] == "secret" and body["role"] == "editor" and body["project_id"] == tenant.project_id

    async with db.session() as session:
        row = (await session.execute(select(ProjectApiKey).where(ProjectApiKey.id == body["id"]))).scalar_one()
        assert row.key_hash == hash_key(value)
        assert value not in (row.key_hash, row.last4, row.name)

    read = (await client.get(f"/api/client/keys/{body['id']}", headers=tenant.sk)).json()
    assert read["value"] == f"sk_...{value[-4:]}"
    listed = (await client.get("/api/client/keys", headers=tenant.sk)).json()["results"]
    assert all(k["value"].startswith(("sk_...", "pk_...")) for k in listed)
    assert body["id"] in {k["id"] for k in listed}

    # The new key works with its own role.
    me = await client.get("/api/client/me", headers={"Authorization": f"Bearer {value}"})
    assert me.status_code == 200 and me.json()["role"] == "editor"


async def test_public_key_creation_and_allowlist(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/client/keys", json={"name": "web", "scope": "public"}, headers=tenant.sk)).json()
    assert created["value"].startswith("pk_") and created["scope"] == "public"
    pk = {"Authorization": f"Bearer {created['value']}"}
    # pk_ on a non-allowlisted operation is 401, not 403.
    assert_problem(await client.get("/api/client/me", headers=pk), 401, "authentication_required")
    assert_problem(await client.get("/api/client/tags", headers=pk), 401, "authentication_required")
    assert_problem(
        await client.post("/api/client/tags", json={"name": "x"}, headers=pk), 401, "authentication_required"
    )


async def test_revoked_key_gets_401_at_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/client/keys", json={"name": "temp"}, headers=tenant.sk)).json()
    headers = {"Authorization": f"Bearer {created['value']}"}
    assert (await client.get("/api/client/me", headers=headers)).status_code == 200
    revoked = await client.delete(f"/api/client/keys/{created['id']}", headers=tenant.sk)
    assert revoked.status_code == 200 and revoked.json() is True
    assert_problem(await client.get("/api/client/me", headers=headers), 401, "authentication_required")
    assert_problem(await client.get(f"/api/client/keys/{created['id']}", headers=tenant.sk), 404, "resource_missing")
    assert created["id"] not in {
        k["id"] for k in (await client.get("/api/client/keys", headers=tenant.sk)).json()["results"]
    }


async def test_missing_malformed_and_wrong_surface_keys(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(await client.get("/api/client/me"), 401, "authentication_required")
    for header in ("Basic abc", "Bearer", "Bearer sk_nope", f"Token {tenant.secret_key}"):
        assert_problem(
            await client.get("/api/client/me", headers={"Authorization": header}), 401, "authentication_required"
        )
    # ok_ on the client surface, sk_ on the admin surface: both 401.
    assert_problem(await client.get("/api/client/me", headers=tenant.ok), 401, "authentication_required")
    assert_problem(await client.get("/api/admin/projects", headers=tenant.sk), 401, "authentication_required")
    # A pk_ value presented as sk_ (prefix swapped) does not authenticate.
    swapped = "sk_" + tenant.publishable_key[3:]
    assert_problem(
        await client.get("/api/client/me", headers={"Authorization": f"Bearer {swapped}"}),
        401,
        "authentication_required",
    )


async def test_roles_are_enforced(client: httpx.AsyncClient, tenant: Tenant) -> None:
    support = (await client.post("/api/client/keys", json={"name": "s", "role": "support"}, headers=tenant.sk)).json()
    editor = (await client.post("/api/client/keys", json={"name": "e", "role": "editor"}, headers=tenant.sk)).json()
    sh = {"Authorization": f"Bearer {support['value']}"}
    eh = {"Authorization": f"Bearer {editor['value']}"}
    # Reads are fine for support; writes need editor; keys need admin.
    assert (await client.get("/api/client/tags", headers=sh)).status_code == 200
    assert_problem(await client.post("/api/client/tags", json={"name": "a"}, headers=sh), 403, "permission_denied")
    assert (await client.post("/api/client/tags", json={"name": "a"}, headers=eh)).status_code == 200
    assert_problem(await client.get("/api/client/keys", headers=eh), 403, "permission_denied")
    assert_problem(await client.post("/api/client/keys", json={"name": "x"}, headers=eh), 403, "permission_denied")


async def test_key_update_rules(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/client/keys", json={"name": "k"}, headers=tenant.sk)).json()
    updated = await client.patch(
        f"/api/client/keys/{created['id']}",
        json={"name": "renamed", "role": "support", "description": "d"},
        headers=tenant.sk,
    )
    assert updated.status_code == 200
    assert (
        updated.json()["name"] == "renamed"
        and updated.json()["role"] == "support"
        and updated.json()["description"] == "d"
    )
    # The scope is fixed by the value's prefix.
    assert_problem(
        await client.patch(f"/api/client/keys/{created['id']}", json={"scope": "public"}, headers=tenant.sk),
        409,
        "state_conflict",
    )
    assert_problem(
        await client.patch("/api/client/keys/999999", json={"name": "x"}, headers=tenant.sk), 404, "resource_missing"
    )


async def test_system_keys_cannot_be_revoked(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    from clarion.keys.service import create_project_key

    async with db.transaction(project_id=tenant.project_id) as session:
        key, _ = await create_project_key(
            session, tenant.project_id, name="smtp proxy", scope="secret", role="smtpproxy", is_system_key=True
        )
    body = (await client.get(f"/api/client/keys/{key.id}", headers=tenant.sk)).json()
    assert body["is_system_key"] is True
    assert_problem(await client.delete(f"/api/client/keys/{key.id}", headers=tenant.sk), 409, "state_conflict")


async def test_keys_of_another_project_are_invisible(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = (await client.post("/api/client/keys", json={"name": "mine"}, headers=tenant.sk)).json()
    assert_problem(
        await client.get(f"/api/client/keys/{created['id']}", headers=other_tenant.sk), 404, "resource_missing"
    )
    assert_problem(
        await client.delete(f"/api/client/keys/{created['id']}", headers=other_tenant.sk), 404, "resource_missing"
    )
    assert_problem(
        await client.patch(f"/api/client/keys/{created['id']}", json={"name": "x"}, headers=other_tenant.sk),
        404,
        "resource_missing",
    )
    others = (await client.get("/api/client/keys", headers=other_tenant.sk)).json()["results"]
    assert created["id"] not in {k["id"] for k in others}
    assert {k["project_id"] for k in others} == {other_tenant.project_id}


async def test_organization_keys(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database) -> None:
    created = await client.post(
        "/api/admin/organizations/api-keys", json={"name": "ci", "role": "admin", "description": "x"}, headers=tenant.ok
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["value"].startswith("ok_") and _entropy_bytes(body["value"]) >= 32
    assert body["organization_id"] == tenant.organization_id
    async with db.session() as session:
        row = (
            await session.execute(select(OrganizationApiKey).where(OrganizationApiKey.id == body["id"]))
        ).scalar_one()
        assert row.key_hash == hash_key(body["value"])
    admin_headers = {"Authorization": f"Bearer {body['value']}"}

    got = (await client.get(f"/api/admin/organizations/api-keys/{body['id']}", headers=tenant.ok)).json()
    assert got["value"] == f"ok_...{body['value'][-4:]}"
    # An admin key cannot mint an owner key, nor promote itself to owner.
    assert_problem(
        await client.post(
            "/api/admin/organizations/api-keys", json={"name": "o", "role": "owner"}, headers=admin_headers
        ),
        403,
        "permission_denied",
    )
    assert_problem(
        await client.patch(
            f"/api/admin/organizations/api-keys/{body['id']}", json={"role": "owner"}, headers=admin_headers
        ),
        403,
        "permission_denied",
    )
    member = (
        await client.post(
            "/api/admin/organizations/api-keys", json={"name": "m", "role": "member"}, headers=admin_headers
        )
    ).json()
    mh = {"Authorization": f"Bearer {member['value']}"}
    assert (await client.get("/api/admin/organizations/me", headers=mh)).json()["role"] == "member"
    assert_problem(
        await client.post("/api/admin/projects", json={"name": "P2", "locale": "en", "timezone": "UTC"}, headers=mh),
        403,
        "permission_denied",
    )
    # Another organisation cannot see it.
    assert_problem(
        await client.get(f"/api/admin/organizations/api-keys/{body['id']}", headers=other_tenant.ok),
        404,
        "resource_missing",
    )
    # Revoke: immediate 401.
    assert (await client.delete(f"/api/admin/organizations/api-keys/{member['id']}", headers=tenant.ok)).json() is True
    assert_problem(await client.get("/api/admin/organizations/me", headers=mh), 401, "authentication_required")
    listed = (await client.get("/api/admin/organizations/api-keys", headers=tenant.ok)).json()["results"]
    assert member["id"] not in {k["id"] for k in listed}
