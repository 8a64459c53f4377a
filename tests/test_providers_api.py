"""The Providers API (§E7/§B13) on both backends: CRUD, credential handling, defaults, soft
delete, `/test` against a real SMTP server, and the capture defaults every project starts with."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.campaigns.models import Campaign
from clarion.core.crypto import decrypt_json
from clarion.core.db import Database
from clarion.keys.service import create_project_key
from clarion.providers.base import OutgoingMessage
from clarion.providers.capture import CaptureProvider
from clarion.providers.email.smtp import SmtpProvider
from clarion.providers.factory import get_sender
from clarion.providers.models import Provider
from tests.conftest import Tenant, assert_problem, free_port
from tests.smtp_servers import build_mime, smtp_server

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

BASE = "/api/client/providers"
SECRET_FIELDS = ("data", "password", "username", "auth", "headers", "data_encrypted")


def smtp_body(port: int = 2525, **data: Any) -> dict[str, Any]:
    return {
        "type": "smtp",
        "group": "email",
        "name": "Relay",
        "data": {
            "host": "127.0.0.1",
            "port": port,
            "protocol": "plain",
            "username": "alice",
            "password": "hunter2-very-secret",
            "headers": {"X-Mailer": "Clarion"},
            **data,
        },
    }


def assert_redacted(body: dict[str, Any]) -> None:
    assert set(body) == {
        "id",
        "project_id",
        "type",
        "name",
        "group",
        "is_default",
        "rate_limit",
        "rate_interval",
        "created_at",
        "updated_at",
        "deleted_at",
    }
    assert "hunter2" not in str(body)


async def test_new_project_has_default_capture_providers(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get(BASE, headers=tenant.sk)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert {(p["group"], p["type"], p["is_default"]) for p in rows} == {
        (g, "capture", True) for g in ("email", "text", "push", "webhook", "in_app")
    }
    for p in rows:
        assert_redacted(p)
        assert p["project_id"] == tenant.project_id
    r = await client.get(BASE, params={"group": "email"}, headers=tenant.sk)
    assert [p["group"] for p in r.json()["results"]] == ["email"]


async def test_demo_default_email_provider_captures_a_send(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """What `make run` gives a new user: the project's default email provider stores the message
    and `GET /captured` shows it."""
    async with db.transaction(project_id=tenant.project_id) as session:
        provider = (
            await session.execute(select(Provider).where(Provider.group == "email", Provider.is_default.is_(True)))
        ).scalar_one()
    sender = get_sender(db, provider)
    assert isinstance(sender, CaptureProvider)
    mime = build_mime("demo@example.org")
    (result,) = await sender.send_batch(
        [OutgoingMessage("msg_DEMO1", "email", "demo@example.org", {"subject": "Hello"}, mime=mime)]
    )
    assert result.outcome == "delivered"
    r = await client.get("/api/client/captured", params={"message_id": "msg_DEMO1"}, headers=tenant.sk)
    (row,) = r.json()["results"]
    assert row["to"] == "demo@example.org" and row["provider_id"] == provider.id
    assert "demo@example.org" in row["mime"]


async def test_clearing_captured_messages_is_per_project(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    for owner, message_id in ((tenant, "msg_MINE"), (other_tenant, "msg_THEIRS")):
        async with db.transaction(project_id=owner.project_id) as session:
            provider = (
                await session.execute(select(Provider).where(Provider.group == "email", Provider.is_default.is_(True)))
            ).scalar_one()
        mime = build_mime("demo@example.org")
        await get_sender(db, provider).send_batch(
            [OutgoingMessage(message_id, "email", "demo@example.org", {"subject": "Hello"}, mime=mime)]
        )

    async def captured(owner: Tenant) -> list[str]:
        r = await client.get("/api/client/captured", headers=owner.sk)
        return [row["message_id"] for row in r.json()["results"]]

    assert await captured(tenant) == ["msg_MINE"] and await captured(other_tenant) == ["msg_THEIRS"]
    cleared = await client.delete("/api/client/captured", headers=tenant.sk)
    assert cleared.status_code == 200 and cleared.json() is True
    assert await captured(tenant) == []
    assert await captured(other_tenant) == ["msg_THEIRS"]  # another project's captures stay


async def test_create_smtp_encrypts_and_never_returns_credentials(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    r = await client.post(
        BASE, json=smtp_body(rate_limit=None) | {"rate_limit": 10, "rate_interval": "minute"}, headers=tenant.sk
    )
    assert r.status_code == 422, r.text  # rate_limit is not a credential
    r = await client.post(BASE, json=smtp_body() | {"rate_limit": 10, "rate_interval": "minute"}, headers=tenant.sk)
    assert r.status_code == 200, r.text
    created = r.json()
    assert_redacted(created)
    assert (created["type"], created["group"], created["is_default"]) == ("smtp", "email", False)
    assert (created["rate_limit"], created["rate_interval"]) == (10, "minute")
    for path in (f"{BASE}/{created['id']}", BASE):
        got = await client.get(path, headers=tenant.sk)
        assert "hunter2" not in got.text and "alice" not in got.text
    async with db.transaction(project_id=tenant.project_id) as session:
        row = (await session.execute(select(Provider).where(Provider.id == created["id"]))).scalar_one()
    assert row.data_encrypted is not None and b"hunter2" not in row.data_encrypted
    data = decrypt_json(db.settings.resolved_secret_key(), row.data_encrypted)
    assert data["password"] == "hunter2-very-secret" and data["headers"] == {"X-Mailer": "Clarion"}
    assert isinstance(get_sender(db, row), SmtpProvider)


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        (
            {"type": "sendgrid", "group": "email", "name": "SG", "data": {"api_key": "x"}},
            "type",
            "'sendgrid' is not available in this build",
        ),
        ({"type": "twilio", "group": "text", "name": "T"}, "type", "'twilio' is not available in this build"),
        ({"type": "carrier-pigeon", "group": "email", "name": "P"}, "type", "Unknown provider type"),
        ({"type": "smtp", "group": "text", "name": "S", "data": {"host": "h"}}, "group", "serves email"),
        ({"type": "capture", "group": "analytics", "name": "C"}, "group", "not 'analytics'"),
        ({"type": "capture", "group": "email", "name": "C", "data": {"host": "h"}}, "data", "no credentials"),
        ({"type": "smtp", "group": "email", "name": "S", "data": {"port": 25}}, "data.host", "Field required"),
        (
            {"type": "smtp", "group": "email", "name": "S", "data": {"host": "h", "protocol": "ftp"}},
            "data.protocol",
            "plain",
        ),
        ({"type": "smtp", "group": "email", "name": "S", "data": {"host": "h", "auth": "CRAM"}}, "data.auth", "AUTO"),
        (
            {"type": "smtp", "group": "email", "name": "S", "data": {"host": "h", "headers": {"From": "x"}}},
            "data.headers",
            "cannot be overridden",
        ),
        ({"type": "smtp", "group": "email", "name": "S", "data": {"host": "h", "pass": "x"}}, "data.pass", ""),
        (
            {"type": "smtp", "group": "email", "name": "S", "rate_interval": "week", "data": {"host": "h"}},
            "rate_interval",
            "",
        ),
    ],
)
async def test_invalid_bodies_are_422(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], param: str, needle: str
) -> None:
    problem = assert_problem(await client.post(BASE, json=body, headers=tenant.sk), 422, "validation_failed")
    assert problem["param"] == param, problem
    assert needle in problem["message"], problem


async def test_one_default_per_group(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(BASE, json=smtp_body() | {"is_default": True}, headers=tenant.sk)
    smtp_id = r.json()["id"]
    rows = (await client.get(BASE, params={"limit": 100}, headers=tenant.sk)).json()["results"]
    defaults = {p["group"]: p["id"] for p in rows if p["is_default"]}
    assert defaults["email"] == smtp_id
    assert len(defaults) == 5  # other groups keep their capture default
    capture_email = next(p["id"] for p in rows if p["group"] == "email" and p["type"] == "capture")
    r = await client.patch(f"{BASE}/{capture_email}", json={"is_default": True}, headers=tenant.sk)
    assert r.json()["is_default"] is True
    assert (await client.get(f"{BASE}/{smtp_id}", headers=tenant.sk)).json()["is_default"] is False


async def test_patch_merges_credentials_and_test_endpoint(client: httpx.AsyncClient, tenant: Tenant) -> None:
    async with smtp_server(users={"alice": "hunter2-very-secret"}) as server:
        wrong_port = smtp_body(port=1)
        created = (await client.post(BASE, json=wrong_port, headers=tenant.sk)).json()
        r = await client.post(f"{BASE}/{created['id']}/test", headers=tenant.sk)
        assert r.status_code == 200 and r.json()["success"] is False
        assert "hunter2" not in r.text
        # Only the port changes; the stored password is kept.
        r = await client.patch(
            f"{BASE}/{created['id']}", json={"data": {"port": server.port}, "name": "Relay 2"}, headers=tenant.sk
        )
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "Relay 2"
        r = await client.post(f"{BASE}/{created['id']}/test", headers=tenant.sk)
        assert r.json()["success"] is True, r.text
        assert "hunter2" not in r.text and server.handler.auth_mechanisms
        # A wrong password is reported without echoing it.
        await client.patch(f"{BASE}/{created['id']}", json={"data": {"password": "nope-Secret"}}, headers=tenant.sk)
        r = await client.post(f"{BASE}/{created['id']}/test", headers=tenant.sk)
        assert r.json()["success"] is False and "535" in r.json()["message"]
        assert "nope-Secret" not in r.text
        # A patch leaving credentials invalid is refused.
        problem = assert_problem(
            await client.patch(f"{BASE}/{created['id']}", json={"data": {"password": None}}, headers=tenant.sk),
            422,
            "validation_failed",
        )
        assert "go together" in problem["message"]
    capture = (await client.get(BASE, params={"group": "text"}, headers=tenant.sk)).json()["results"][0]
    r = await client.post(f"{BASE}/{capture['id']}/test", headers=tenant.sk)
    assert r.json()["success"] is True


async def test_soft_delete_and_campaign_guard(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    pid = (await client.post(BASE, json=smtp_body(), headers=tenant.sk)).json()["id"]
    async with db.transaction(project_id=tenant.project_id) as session:
        campaign = Campaign(type="blast", channel="email", subscription_id=1, provider_id=pid, name="Uses it")
        session.add(campaign)
        await session.flush()
        campaign_id = campaign.id
    problem = assert_problem(await client.delete(f"{BASE}/{pid}", headers=tenant.sk), 409, "state_conflict")
    assert str(campaign_id) in problem["message"]
    async with db.transaction(project_id=tenant.project_id) as session:
        row = (await session.execute(select(Campaign).where(Campaign.id == campaign_id))).scalar_one()
        row.archived_at = row.created_at
    r = await client.delete(f"{BASE}/{pid}", headers=tenant.sk)
    assert r.status_code == 200 and r.json() is True
    got = (await client.get(f"{BASE}/{pid}", headers=tenant.sk)).json()
    assert got["deleted_at"] is not None and got["is_default"] is False
    listed = (await client.get(BASE, params={"limit": 100}, headers=tenant.sk)).json()["results"]
    assert pid not in [p["id"] for p in listed]
    with_deleted = (await client.get(BASE, params={"include_deleted": "true"}, headers=tenant.sk)).json()["results"]
    assert pid in [p["id"] for p in with_deleted]
    assert_problem(await client.delete(f"{BASE}/{pid}", headers=tenant.sk), 404, "resource_missing")
    assert_problem(await client.patch(f"{BASE}/{pid}", json={"name": "x"}, headers=tenant.sk), 404, "resource_missing")


async def test_admin_role_and_tenancy(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    pid = (await client.post(BASE, json=smtp_body(), headers=tenant.sk)).json()["id"]
    assert_problem(await client.get(f"{BASE}/{pid}", headers=other_tenant.sk), 404, "resource_missing")
    assert_problem(await client.delete(f"{BASE}/{pid}", headers=other_tenant.sk), 404, "resource_missing")
    assert pid not in [p["id"] for p in (await client.get(BASE, headers=other_tenant.sk)).json()["results"]]
    async with db.transaction() as session:
        _, editor = await create_project_key(session, tenant.project_id, name="ed", scope="secret", role="editor")
    headers = {"Authorization": f"Bearer {editor}"}
    assert_problem(await client.get(BASE, headers=headers), 403, "permission_denied")
    assert_problem(await client.post(BASE, json=smtp_body(), headers=headers), 403, "permission_denied")
    assert_problem(await client.post(f"{BASE}/{pid}/test", headers=headers), 403, "permission_denied")
    assert_problem(await client.get(BASE, headers=tenant.pk), 401, "authentication_required")


async def test_bootstrap_seeds_capture_defaults_once(db: Database) -> None:
    """The first-start path (`clarion serve` on a fresh machine runs `bootstrap`): the project it
    creates sends through capture by default; bootstrapping it again adds nothing."""
    from clarion.orgs.bootstrap import bootstrap

    first = await bootstrap(db, org_name="Demo org for providers", project_name="Demo")
    again = await bootstrap(db, org_name="Demo org for providers", project_name="Demo")
    assert again.project_id == first.project_id
    async with db.transaction(project_id=first.project_id) as session:
        rows = (await session.execute(select(Provider))).scalars().all()
    assert sorted((p.group, p.type, p.is_default) for p in rows) == [
        (g, "capture", True) for g in sorted(("email", "text", "push", "webhook", "in_app"))
    ]


async def test_rate_limiter_from_settings_uses_redis_when_configured(db: Database) -> None:
    from clarion.providers.ratelimit import ProviderRateLimiter

    local = ProviderRateLimiter.from_settings(db.settings.model_copy(update={"redis_url": None}))
    shared = ProviderRateLimiter.from_settings(db.settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"}))
    assert type(local.storage).__name__ == "MemoryStorage"
    assert "Redis" in type(shared.storage).__name__


async def test_concurrent_default_changes_leave_exactly_one_default(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ids = [
        (await client.post(BASE, json=smtp_body() | {"name": f"R{i}"}, headers=tenant.sk)).json()["id"]
        for i in range(6)
    ]
    responses = await asyncio.gather(
        *(client.patch(f"{BASE}/{pid}", json={"is_default": True}, headers=tenant.sk) for pid in ids)
    )
    for r in responses:
        assert r.status_code in (200, 409, 503), r.text
        if r.status_code != 200:
            assert r.json()["code"] in ("state_conflict", "service_unavailable")
    assert any(r.status_code == 200 for r in responses)
    rows = (await client.get(BASE, params={"group": "email", "limit": 100}, headers=tenant.sk)).json()["results"]
    assert sum(1 for p in rows if p["is_default"]) == 1


async def test_credentials_sealed_under_another_key_are_a_conflict_not_a_crash(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    from clarion.core.crypto import encrypt_json

    pid = (await client.post(BASE, json=smtp_body(), headers=tenant.sk)).json()["id"]
    async with db.transaction(project_id=tenant.project_id) as session:
        row = (await session.execute(select(Provider).where(Provider.id == pid))).scalar_one()
        row.data_encrypted = encrypt_json("some-other-secret-key", {"host": "h"})
    problem = assert_problem(await client.post(f"{BASE}/{pid}/test", headers=tenant.sk), 409, "state_conflict")
    assert "secret key" in problem["message"]
    r = await client.patch(
        f"{BASE}/{pid}", json={"data": {"host": "127.0.0.1", "port": free_port()}}, headers=tenant.sk
    )
    assert r.status_code == 200, r.text
    assert (await client.post(f"{BASE}/{pid}/test", headers=tenant.sk)).status_code == 200
