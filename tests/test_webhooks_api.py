"""`/webhooks` CRUD, URL rules and secrets (contract §B11, §E3, §E9). No dispatch happens here:
endpoints on public addresses are stored, never contacted."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import select

from clarion.core.crypto import decrypt_text
from clarion.core.db import Database
from clarion.keys.service import create_project_key
from clarion.webhooks.catalogue import MESSAGE_EVENT_TYPES, SPEC_EVENT_TYPES
from clarion.webhooks.models import WebhookEndpoint
from tests.conftest import Tenant, assert_problem

PUBLIC_URL = "https://1.1.1.1/hooks"  # a literal global address: no DNS needed, never contacted here


def new_endpoint(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "orders",
        "url": PUBLIC_URL,
        "event_types": ["message.sent", "message.delivered", "message.bounced", "message.opened"],
    }
    body.update(overrides)
    return body


async def test_create_returns_secret_once_and_reads_never_do(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post("/api/client/webhooks", json=new_endpoint(description="d"), headers=tenant.sk)
    assert r.status_code == 200, r.text
    body = r.json()
    secret = body["signing_secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert body["has_secret"] is True
    assert body["status"] == "active"
    assert body["project_id"] == tenant.project_id
    assert body["event_types"] == ["message.sent", "message.delivered", "message.bounced", "message.opened"]
    assert set(body) == {
        "id",
        "project_id",
        "name",
        "description",
        "url",
        "status",
        "event_types",
        "has_secret",
        "created_at",
        "updated_at",
        "signing_secret",
    }

    got = await client.get(f"/api/client/webhooks/{body['id']}", headers=tenant.sk)
    assert got.status_code == 200
    assert "signing_secret" not in got.json()
    assert secret not in got.text
    listed = await client.get("/api/client/webhooks", headers=tenant.sk)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["results"]] == [body["id"]]
    assert secret not in listed.text


async def test_secret_is_encrypted_at_rest(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    r = await client.post("/api/client/webhooks", json=new_endpoint(), headers=tenant.sk)
    secret = r.json()["signing_secret"]
    async with db.session(project_id=tenant.project_id) as session:
        stored = (
            await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.id == r.json()["id"]))
        ).scalar_one()
    assert secret not in stored.secret_encrypted
    assert secret.removeprefix("whsec_") not in stored.secret_encrypted
    assert decrypt_text(db.settings, stored.secret_encrypted) == secret


async def test_supplied_secret_is_used(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(
        "/api/client/webhooks", json=new_endpoint(signing_secret="my-own-secret-0123456789"), headers=tenant.sk
    )
    assert r.status_code == 200
    assert r.json()["signing_secret"] == "my-own-secret-0123456789"


async def test_both_catalogues_are_accepted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    everything = list(MESSAGE_EVENT_TYPES) + list(SPEC_EVENT_TYPES)
    assert len(MESSAGE_EVENT_TYPES) == 10 and len(SPEC_EVENT_TYPES) == 27
    r = await client.post("/api/client/webhooks", json=new_endpoint(event_types=everything), headers=tenant.sk)
    assert r.status_code == 200, r.text
    assert r.json()["event_types"] == everything


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"event_types": []}, "event_types"),
        ({"event_types": ["message.exploded"]}, "event_types.0"),
        ({"name": ""}, "name"),
        ({"url": "ftp://1.1.1.1/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"signing_secret": "short"}, "signing_secret"),
    ],
)
async def test_create_validation(
    client: httpx.AsyncClient, tenant: Tenant, overrides: dict[str, object], param: str
) -> None:
    r = await client.post("/api/client/webhooks", json=new_endpoint(**overrides), headers=tenant.sk)
    body = assert_problem(r, 422, "validation_failed")
    assert body["param"] == param


@pytest.mark.parametrize(
    "url",
    [
        "http://1.1.1.1/hooks",  # plain http
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",  # resolves to loopback
        "https://10.1.2.3/hooks",
        "https://192.168.1.10/hooks",
        "https://172.16.0.5/hooks",
        "https://169.254.169.254/latest",  # link-local (cloud metadata)
        "https://[::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://[fe80::1]/hooks",
        "https://0.0.0.0/hooks",
    ],
)
async def test_private_and_plain_http_targets_are_refused(client: httpx.AsyncClient, tenant: Tenant, url: str) -> None:
    r = await client.post("/api/client/webhooks", json=new_endpoint(url=url), headers=tenant.sk)
    body = assert_problem(r, 422, "validation_failed")
    assert body["param"] == "url"


async def test_patch_rules(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = (await client.post("/api/client/webhooks", json=new_endpoint(), headers=tenant.sk)).json()
    path = f"/api/client/webhooks/{created['id']}"
    r = await client.patch(path, json={"event_types": ["message.clicked"], "description": None}, headers=tenant.sk)
    assert r.status_code == 200
    assert r.json()["event_types"] == ["message.clicked"]
    assert r.json()["name"] == "orders"
    assert r.json()["description"] is None
    r = await client.patch(path, json={"status": "inactive"}, headers=tenant.sk)
    assert r.json()["status"] == "inactive"
    r = await client.patch(path, json={"url": "https://10.0.0.1/x"}, headers=tenant.sk)
    assert assert_problem(r, 422, "validation_failed")["param"] == "url"
    r = await client.patch(path, json={"signing_secret": "x" * 20}, headers=tenant.sk)
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0] == {
        "param": "signing_secret",
        "code": "parameter_unknown",
        "message": body["errors"][0]["message"],
    }
    r = await client.patch(path, json={"event_types": []}, headers=tenant.sk)
    assert_problem(r, 422, "validation_failed")
    r = await client.patch(path, json={"name": None}, headers=tenant.sk)
    assert_problem(r, 422, "validation_failed")
    r = await client.patch(path, json={"status": "paused"}, headers=tenant.sk)
    assert_problem(r, 422, "validation_failed")


async def test_rotate_returns_new_secret(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    created = (await client.post("/api/client/webhooks", json=new_endpoint(), headers=tenant.sk)).json()
    r = await client.post(f"/api/client/webhooks/{created['id']}/rotate-secret", headers=tenant.sk)
    assert r.status_code == 200
    assert set(r.json()) == {"signing_secret"}
    new = r.json()["signing_secret"]
    assert new.startswith("whsec_") and new != created["signing_secret"]
    async with db.session(project_id=tenant.project_id) as session:
        stored = (
            await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.id == created["id"]))
        ).scalar_one()
    assert decrypt_text(db.settings, stored.secret_encrypted) == new
    assert stored.previous_secret_encrypted is not None
    assert decrypt_text(db.settings, stored.previous_secret_encrypted) == created["signing_secret"]
    assert stored.previous_secret_expires_at is not None


async def test_delete_and_tenancy(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    created = (await client.post("/api/client/webhooks", json=new_endpoint(), headers=tenant.sk)).json()
    path = f"/api/client/webhooks/{created['id']}"
    for method in ("GET", "DELETE"):
        assert_problem(await client.request(method, path, headers=other_tenant.sk), 404, "resource_missing")
    assert_problem(await client.patch(path, json={"name": "x"}, headers=other_tenant.sk), 404, "resource_missing")
    assert_problem(await client.post(path + "/rotate-secret", headers=other_tenant.sk), 404, "resource_missing")
    assert_problem(await client.get(path + "/deliveries", headers=other_tenant.sk), 404, "resource_missing")
    assert (await client.get("/api/client/webhooks", headers=other_tenant.sk)).json()["results"] == []
    r = await client.delete(path, headers=tenant.sk)
    assert r.status_code == 204 and r.content == b""
    assert_problem(await client.get(path, headers=tenant.sk), 404, "resource_missing")


async def test_admin_role_and_secret_key_required(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    async with db.transaction() as session:
        _, editor = await create_project_key(session, tenant.project_id, name="ed", scope="secret", role="editor")
    r = await client.get("/api/client/webhooks", headers={"Authorization": f"Bearer {editor}"})
    assert_problem(r, 403, "permission_denied")
    assert_problem(await client.get("/api/client/webhooks", headers=tenant.pk), 401, "authentication_required")


async def test_list_pagination(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ids = []
    for i in range(3):
        r = await client.post("/api/client/webhooks", json=new_endpoint(name=f"e{i}"), headers=tenant.sk)
        ids.append(r.json()["id"])
    first = await client.get("/api/client/webhooks?limit=2", headers=tenant.sk)
    assert first.headers["x-total-count"] == "3"
    page = first.json()
    assert [e["id"] for e in page["results"]] == ids[::-1][:2]
    second = (await client.get(f"/api/client/webhooks?limit=2&cursor={page['nextCursor']}", headers=tenant.sk)).json()
    assert [e["id"] for e in second["results"]] == [ids[0]]
    assert second["nextCursor"] is None


async def test_operations_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/openapi.json")).json()
    operations = {
        op["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "operationId" in op
    }
    expected = {
        "listWebhookEndpoints": ("GET", "/api/client/webhooks"),
        "createWebhookEndpoint": ("POST", "/api/client/webhooks"),
        "getWebhookEndpoint": ("GET", "/api/client/webhooks/{endpointId}"),
        "updateWebhookEndpoint": ("PATCH", "/api/client/webhooks/{endpointId}"),
        "deleteWebhookEndpoint": ("DELETE", "/api/client/webhooks/{endpointId}"),
        "rotateWebhookEndpointSecret": ("POST", "/api/client/webhooks/{endpointId}/rotate-secret"),
        "testWebhookEndpoint": ("POST", "/api/client/webhooks/{endpointId}/test"),
        "listWebhookDeliveries": ("GET", "/api/client/webhooks/{endpointId}/deliveries"),
        "replayWebhookDelivery": ("POST", "/api/client/webhooks/{endpointId}/deliveries/{deliveryId}/replay"),
    }
    for operation_id, where in expected.items():
        assert operations.get(operation_id) == where
