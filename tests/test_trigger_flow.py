"""The mission's centre, end to end: a campaign authored in advance is fired at per-call
recipients, one user, or its own audience; the messages render, leave through the capture
provider, and every step is visible through the API."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from email import message_from_string, policy
from typing import Any

import httpx
import orjson
import pytest_asyncio

from clarion.api.app import create_app
from clarion.core.db import Database
from clarion.delivery.sender import MessageSource
from clarion.webhooks.dispatch import WebhookSource
from clarion.worker.jobs import JobSource
from tests.conftest import Backend, Tenant, assert_problem, free_port, make_settings, new_tenant
from tests.webhook_receiver import Receiver, verifies, wait_for


@dataclass
class Ready:
    campaign_id: int
    provider_id: int
    subscription_id: int


async def _default_email_subscription(client: httpx.AsyncClient, tenant: Tenant) -> int:
    subs = (await client.get("/api/client/subscriptions?limit=100", headers=tenant.sk)).json()["results"]
    return next(s["id"] for s in subs if s["channel"] == "email")


async def make_campaign(client: httpx.AsyncClient, tenant: Tenant, *, type_: str = "trigger", **extra: Any) -> Ready:
    provider = await client.post(
        "/api/client/providers",
        json={"type": "capture", "group": "email", "name": "Capture", "is_default": True},
        headers=tenant.sk,
    )
    assert provider.status_code == 200, provider.text
    provider_id = provider.json()["id"]
    subscription_id = await _default_email_subscription(client, tenant)
    campaign = await client.post(
        "/api/client/campaigns",
        json={"type": type_, "name": "Launch", "subscription_id": subscription_id, "provider_id": provider_id, **extra},
        headers=tenant.sk,
    )
    assert campaign.status_code == 200, campaign.text
    campaign_id = campaign.json()["id"]
    template = await client.post(
        "/api/client/templates",
        json={
            "type": "email",
            "campaign_id": campaign_id,
            "locale": "en",
            "data": {
                "from": {"name": "Clarion", "address": "hello@example.com"},
                "subject": "Hi {{ user.first_name }} — {{ event.product }}{{ user.nothing_here }}",
                "html": '<p>Hello {{ user.first_name }}, tier {{ user.data.tier }}</p><a href="https://example.com/x">x</a>',
                "editor": "code",
            },
        },
        headers=tenant.sk,
    )
    assert template.status_code == 200, template.text
    return Ready(campaign_id, provider_id, subscription_id)


async def scheduled_campaign(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> Ready:
    """A trigger campaign with its template, moved to ``scheduled`` (ready to be triggered)."""
    r = await make_campaign(client, tenant, **extra)
    scheduled = await client.patch(
        f"/api/client/campaigns/{r.campaign_id}", json={"state": "scheduled"}, headers=tenant.sk
    )
    assert scheduled.status_code == 200, scheduled.text
    return r


async def audience_list(client: httpx.AsyncClient, tenant: Tenant, users: list[dict[str, str]]) -> int:
    """The users, created, and a static list of them; the list's id."""
    assert (await client.post("/api/client/users/batch", json=users, headers=tenant.sk)).status_code < 300
    lst = (await client.post("/api/client/lists", json={"name": "All", "type": "static"}, headers=tenant.sk)).json()
    added = await client.post(
        f"/api/client/lists/{lst['id']}/users",
        json={"external_ids": [u["external_id"] for u in users]},
        headers=tenant.sk,
    )
    assert added.status_code < 300, added.text
    return int(lst["id"])


async def captured_messages(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    """What the project's `capture` providers stored (up to 100)."""
    return list((await client.get("/api/client/captured?limit=100", headers=tenant.sk)).json()["results"])


@pytest_asyncio.fixture
async def ready(client: httpx.AsyncClient, tenant: Tenant) -> Ready:
    return await scheduled_campaign(client, tenant)


async def drain(db: Database) -> None:
    jobs, messages = JobSource(db), MessageSource(db)
    for _ in range(50):
        if not (await jobs.run_once() + await messages.run_once()):
            return


async def test_draft_campaign_cannot_be_triggered(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await make_campaign(client, tenant)
    body = assert_problem(
        await client.post(
            f"/api/client/campaigns/{r.campaign_id}/trigger",
            json={"user": {"external_id": "u1"}, "event": {}},
            headers=tenant.sk,
        ),
        409,
        "state_conflict",
    )
    assert "scheduled" in body["message"]


async def test_aborted_or_archived_campaign_cannot_be_triggered(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    await client.post("/api/client/users/batch", json=[{"external_id": "known"}], headers=tenant.sk)
    aborted = await scheduled_campaign(client, tenant)
    r = await client.patch(f"/api/client/campaigns/{aborted.campaign_id}", json={"state": "aborted"}, headers=tenant.sk)
    assert r.json()["state"] == "aborted"
    archived = await scheduled_campaign(client, tenant)
    assert (await client.delete(f"/api/client/campaigns/{archived.campaign_id}", headers=tenant.sk)).json() is True
    shapes: list[dict[str, Any]] = [
        {},  # the campaign's audience
        {"users": [{"external_id": "u1", "email": "u1@example.com"}]},
        {"user": {"external_id": "known"}, "event": {}},  # the one-user fast path on PostgreSQL
    ]
    for campaign_id in (aborted.campaign_id, archived.campaign_id):
        for body in shapes:
            assert_problem(
                await client.post(f"/api/client/campaigns/{campaign_id}/trigger", json=body, headers=tenant.sk),
                409,
                "state_conflict",
            )
    async with db.session(project_id=tenant.project_id) as session:
        from sqlalchemy import func, select

        from clarion.delivery.models import Message, Trigger

        for model in (Trigger, Message):
            count = await session.execute(
                select(func.count()).where(model.campaign_id.in_([aborted.campaign_id, archived.campaign_id]))
            )
            assert count.scalar() == 0


async def test_per_call_recipients_render_and_leave(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    # u3 has no email (skipped: no_address); u4 unsubscribed; u1 twice → one message.
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "u4", "email": "u4@example.com"}], headers=tenant.sk
    )
    await client.patch(
        "/api/client/users/u4/subscriptions",
        json=[{"subscription_id": ready.subscription_id, "state": 0}],
        headers=tenant.sk,
    )
    body = {
        "users": [
            {"external_id": "u1", "email": "u1@example.com", "first_name": "Ada", "tier": "gold"},
            {"external_id": "u1", "first_name": "Ada"},
            {"email": "walkin@example.com", "first_name": "Walk"},
            {"external_id": "u3", "first_name": "NoMail"},
            {"external_id": "u4"},
        ],
        "event": {"product": "Rocket"},
    }
    r = await client.post(f"/api/client/campaigns/{ready.campaign_id}/trigger", json=body, headers=tenant.sk)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["success"] is True and out["trigger_id"].startswith("trg_") and out["campaign_id"] == ready.campaign_id
    states = {m["external_id"]: (m["state"], m["skip_reason"]) for m in out["messages"]}
    assert states["u1"] == ("queued", None)
    assert states["u3"] == ("skipped", "no_address")
    assert states["u4"] == ("skipped", "unsubscribed")
    assert len(out["messages"]) == 4 and out["recipients"] == 4
    await drain(db)
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == ["u1@example.com", "walkin@example.com"]
    ada = next(c for c in captured if c["to"] == "u1@example.com")
    mime = message_from_string(ada["mime"], policy=policy.default)
    assert mime["Subject"] == "Hi Ada — Rocket"  # per-call attribute + event; unknown variable blank
    html = next(p for p in mime.walk() if p.get_content_type() == "text/html").get_content()
    assert ("tier gold" in html and "List-Unsubscribe" in str(mime.keys())) or mime["List-Unsubscribe"]
    u1_message = next(m["message_id"] for m in out["messages"] if m["external_id"] == "u1")
    timeline = (await client.get(f"/api/client/messages/{u1_message}", headers=tenant.sk)).json()
    assert [e["type"] for e in timeline["events"]] == ["queued", "sent", "delivered"]
    progress = (
        await client.get(f"/api/client/campaigns/{ready.campaign_id}/triggers/{out['trigger_id']}", headers=tenant.sk)
    ).json()
    assert progress["messages"] == {"delivered": 2, "skipped": 2}
    campaign = (await client.get(f"/api/client/campaigns/{ready.campaign_id}", headers=tenant.sk)).json()
    assert (
        campaign["delivery"]["sent"] == 2
        and campaign["delivery"]["skipped"] == 2
        and campaign["delivery"]["total"] == 4
    )


async def test_one_user_shape_and_body_errors(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    one = await client.post(
        url,
        json={"user": {"external_id": "solo", "email": "solo@example.com"}, "event": {"product": "X"}},
        headers=tenant.sk,
    )
    assert one.status_code == 200, one.text
    assert [m["external_id"] for m in one.json()["messages"]] == ["solo"]
    assert_problem(
        await client.post(url, json={"user": {"external_id": "a"}, "users": [{"external_id": "b"}]}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    body = assert_problem(
        await client.post(url, json={"users": [{"external_id": "a"}, {"first_name": "nobody"}]}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "users.1"
    assert_problem(
        await client.post(url, json={"users": [{"external_id": f"x{i}"} for i in range(1001)]}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert_problem(await client.post(url, json={"users": []}, headers=tenant.sk), 422, "validation_failed")
    assert_problem(
        await client.post(url, json={"user": {"email": "no-external@example.com"}}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    await drain(db)  # leave nothing due behind: other tests' workers claim across projects


async def test_same_idempotency_key_never_sends_twice(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    body = {"users": [{"external_id": f"i{i}", "email": f"i{i}@example.com"} for i in range(5)]}
    headers = {**tenant.sk, "Idempotency-Key": "launch-1"}
    responses = await asyncio.gather(*(client.post(url, json=body, headers=headers) for _ in range(50)))
    done = [r for r in responses if r.status_code == 200]
    assert done and all(r.json()["trigger_id"] == done[0].json()["trigger_id"] for r in done)
    assert all(r.status_code in (200, 409) for r in responses)
    await drain(db)
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == sorted(f"i{i}@example.com" for i in range(5))


async def test_audience_trigger_materialises_lists_minus_exclusions(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    users = [{"external_id": f"a{i}", "email": f"a{i}@example.com"} for i in range(30)]
    users.append({"external_id": "no-mail"})  # in the audience, skipped: no address
    await client.post("/api/client/users/batch", json=users, headers=tenant.sk)
    main = (await client.post("/api/client/lists", json={"name": "All", "type": "static"}, headers=tenant.sk)).json()
    vip = (
        await client.post("/api/client/lists", json={"name": "Excluded", "type": "static"}, headers=tenant.sk)
    ).json()
    await client.post(
        f"/api/client/lists/{main['id']}/users",
        json={"external_ids": [u["external_id"] for u in users]},
        headers=tenant.sk,
    )
    await client.post(f"/api/client/lists/{vip['id']}/users", json={"external_ids": ["a0", "a1"]}, headers=tenant.sk)
    r = await make_campaign(client, tenant, type_="blast", list_ids=[main["id"]], exclusion_list_ids=[vip["id"]])
    assert (
        await client.patch(f"/api/client/campaigns/{r.campaign_id}", json={"state": "scheduled"}, headers=tenant.sk)
    ).status_code == 200
    fired = await client.post(
        f"/api/client/campaigns/{r.campaign_id}/trigger", json={"event": {"product": "Blast"}}, headers=tenant.sk
    )
    assert fired.status_code == 200, fired.text
    assert fired.json()["messages"] is None
    await drain(db)
    progress = (
        await client.get(
            f"/api/client/campaigns/{r.campaign_id}/triggers/{fired.json()['trigger_id']}", headers=tenant.sk
        )
    ).json()
    assert progress["state"] == "ready" and progress["recipients"] == 29
    assert progress["messages"] == {"delivered": 28, "skipped": 1}
    captured = await captured_messages(client, tenant)
    assert len(captured) == 28 and "a0@example.com" not in {c["to"] for c in captured}
    ids = {c["message_id"] for c in captured}
    assert len(ids) == 28 and all(re.fullmatch(r"msg_[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    # The skipped message's event carries its reason, as on the per-call and one-user paths.
    async with db.session(project_id=tenant.project_id) as session:
        from sqlalchemy import select

        from clarion.delivery.models import Message

        skipped = (
            await session.execute(
                select(Message.public_id).where(Message.campaign_id == r.campaign_id, Message.state == "skipped")
            )
        ).scalar_one()
    timeline = (await client.get(f"/api/client/messages/{skipped}", headers=tenant.sk)).json()
    assert timeline["skip_reason"] == "no_address"
    assert [(e["type"], e["data"]) for e in timeline["events"]] == [("skipped", {"reason": "no_address"})]


async def test_delivery_events_reach_a_signed_webhook(backend: Backend) -> None:
    """The seed's last step: webhook events tied back to the campaign, trigger and recipient."""
    app = create_app(make_settings(backend, webhook_allow_private=True))
    tenant = await new_tenant(app.state.db)
    rec = Receiver(free_port()).start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            endpoint = (
                await client.post(
                    "/api/client/webhooks",
                    json={
                        "name": "hooks",
                        "url": rec.url,
                        "event_types": ["message.queued", "message.sent", "message.delivered", "message.skipped"],
                    },
                    headers=tenant.sk,
                )
            ).json()
            r = await make_campaign(client, tenant)
            await client.patch(f"/api/client/campaigns/{r.campaign_id}", json={"state": "scheduled"}, headers=tenant.sk)
            fired = (
                await client.post(
                    f"/api/client/campaigns/{r.campaign_id}/trigger",
                    json={"users": [{"external_id": "w1", "email": "w1@example.com"}, {"external_id": "w2"}]},
                    headers=tenant.sk,
                )
            ).json()
            db = app.state.db
            await drain(db)
            hooks = WebhookSource(db, app.state.settings)
            try:
                await wait_for(lambda: _drain_hooks(hooks, rec, 4))
            finally:
                await hooks.aclose()
        payloads = [orjson.loads(req.body) for req in rec.requests]
        assert len(payloads) == 4 and len({p["id"] for p in payloads}) == 4
        assert all(verifies(req, endpoint["signing_secret"]) for req in rec.requests)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for p in payloads:
            by_type.setdefault(p["event_type"], []).append(p)
        assert sorted(by_type) == ["message.delivered", "message.queued", "message.sent", "message.skipped"]
        w1 = next(m for m in fired["messages"] if m["external_id"] == "w1")
        delivered = by_type["message.delivered"][0]
        assert delivered["id"].startswith("evt_") and delivered["project_id"] == tenant.project_id
        assert delivered["data"]["message_id"] == w1["message_id"]
        assert delivered["data"]["trigger_id"] == fired["trigger_id"]
        assert delivered["data"]["campaign_id"] == r.campaign_id and delivered["data"]["channel"] == "email"
        assert (
            delivered["data"]["user"]["external_id"] == "w1" and delivered["data"]["user"]["email"] == "w1@example.com"
        )
        assert delivered["data"]["provider_id"] == r.provider_id
        skipped = by_type["message.skipped"][0]
        assert skipped["data"]["user"]["external_id"] == "w2" and skipped["data"]["reason"] == "no_address"
    finally:
        rec.stop()
        await app.state.db.dispose()


async def _drain_hooks(source: WebhookSource, rec: Receiver, expected: int) -> bool:
    await source.run_once()
    return len(rec.requests) >= expected


async def test_rematerialising_a_chunk_counts_and_logs_each_message_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """A materialisation job whose lease expired runs its chunk again: the rows already there
    must not be counted twice nor get a second ``queued`` event."""
    from sqlalchemy import func, select

    from clarion.campaigns.models import Campaign
    from clarion.delivery.audience import materialise_chunk
    from clarion.delivery.models import MessageEvent, Trigger

    users = [{"external_id": f"r{i}", "email": f"r{i}@example.com"} for i in range(12)]
    users.append({"external_id": "r-no-address"})
    await client.post("/api/client/users/batch", json=users, headers=tenant.sk)
    created = await client.post("/api/client/lists", json={"name": "All", "type": "static"}, headers=tenant.sk)
    everyone = created.json()
    await client.post(
        f"/api/client/lists/{everyone['id']}/users",
        json={"external_ids": [u["external_id"] for u in users]},
        headers=tenant.sk,
    )
    r = await make_campaign(client, tenant, type_="blast", list_ids=[everyone["id"]])
    assert (
        await client.patch(f"/api/client/campaigns/{r.campaign_id}", json={"state": "scheduled"}, headers=tenant.sk)
    ).status_code == 200
    fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    assert fired.status_code == 200, fired.text
    await JobSource(db).run_once()
    for _ in range(2):  # the same chunk again, twice, as a re-claimed job would
        async with db.transaction(project_id=tenant.project_id) as session:
            campaign = (await session.execute(select(Campaign).where(Campaign.id == r.campaign_id))).scalar_one()
            trigger = (
                await session.execute(select(Trigger).where(Trigger.public_id == fired.json()["trigger_id"]))
            ).scalar_one()
            assert await materialise_chunk(session, campaign, trigger, 0) is not None
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        queued_events = (
            await session.execute(
                select(func.count()).where(MessageEvent.campaign_id == r.campaign_id, MessageEvent.type == "queued")
            )
        ).scalar_one()
    assert queued_events == 12
    await drain(db)
    delivery = (await client.get(f"/api/client/campaigns/{r.campaign_id}", headers=tenant.sk)).json()["delivery"]
    assert delivery["total"] == 13 and delivery["skipped"] == 1 and delivery["sent"] == 12, delivery
    progress = (
        await client.get(
            f"/api/client/campaigns/{r.campaign_id}/triggers/{fired.json()['trigger_id']}", headers=tenant.sk
        )
    ).json()
    assert progress["recipients"] == 13, progress


async def _one(client: httpx.AsyncClient, tenant: Tenant, campaign_id: int, external_id: str, **headers: str) -> Any:
    return await client.post(
        f"/api/client/campaigns/{campaign_id}/trigger",
        json={"user": {"external_id": external_id}, "event": {"product": "Fast"}},
        headers={**tenant.sk, **headers},
    )


async def test_one_known_user_by_external_id(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    """The shape of transactional sends (the fast path on PostgreSQL): a known user, only its
    external_id. Eligibility reasons, counters, replay and the timeline match the general path."""
    await client.post(
        "/api/client/users/batch",
        json=[
            {"external_id": "k1", "email": "k1@example.com", "data": {"first_name": "Kay"}},
            {"external_id": "k2"},
            {"external_id": "k3", "email": "k3@example.com"},
        ],
        headers=tenant.sk,
    )
    await client.patch(
        "/api/client/users/k3/subscriptions",
        json=[{"subscription_id": ready.subscription_id, "state": 0}],
        headers=tenant.sk,
    )
    first = await _one(client, tenant, ready.campaign_id, "k1", **{"Idempotency-Key": "fast-1"})
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["success"] is True and out["recipients"] == 1 and out["campaign_id"] == ready.campaign_id
    [message] = out["messages"]
    assert message["external_id"] == "k1" and message["state"] == "queued" and message["skip_reason"] is None
    replay = await _one(client, tenant, ready.campaign_id, "k1", **{"Idempotency-Key": "fast-1"})
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == out
    no_mail = (await _one(client, tenant, ready.campaign_id, "k2")).json()["messages"][0]
    unsubscribed = (await _one(client, tenant, ready.campaign_id, "k3")).json()["messages"][0]
    assert (no_mail["state"], no_mail["skip_reason"]) == ("skipped", "no_address")
    assert (unsubscribed["state"], unsubscribed["skip_reason"]) == ("skipped", "unsubscribed")
    progress = (
        await client.get(f"/api/client/campaigns/{ready.campaign_id}/triggers/{out['trigger_id']}", headers=tenant.sk)
    ).json()
    assert progress["kind"] == "user" and progress["state"] == "ready" and progress["recipients"] == 1
    await drain(db)
    timeline = (await client.get(f"/api/client/messages/{message['message_id']}", headers=tenant.sk)).json()
    assert timeline["trigger_id"] == out["trigger_id"]
    assert [e["type"] for e in timeline["events"]] == ["queued", "sent", "delivered"]
    skipped = (await client.get(f"/api/client/messages/{no_mail['message_id']}", headers=tenant.sk)).json()
    assert [(e["type"], e["data"]) for e in skipped["events"]] == [("skipped", {"reason": "no_address"})]
    captured = await captured_messages(client, tenant)
    assert [c["to"] for c in captured] == ["k1@example.com"]
    mime = message_from_string(captured[0]["mime"], policy=policy.default)
    assert mime["Subject"] == "Hi Kay — Fast"
    campaign = (await client.get(f"/api/client/campaigns/{ready.campaign_id}", headers=tenant.sk)).json()
    assert campaign["delivery"]["total"] == 3 and campaign["delivery"]["skipped"] == 2


async def test_one_user_same_key_concurrently_sends_once(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "c1", "email": "c1@example.com"}], headers=tenant.sk
    )
    responses = await asyncio.gather(
        *(_one(client, tenant, ready.campaign_id, "c1", **{"Idempotency-Key": "same"}) for _ in range(50))
    )
    assert all(r.status_code in (200, 409) for r in responses)
    done = [r for r in responses if r.status_code == 200]
    assert done and len({r.json()["trigger_id"] for r in done}) == 1
    assert len({r.json()["messages"][0]["message_id"] for r in done}) == 1
    await drain(db)
    captured = await captured_messages(client, tenant)
    assert [c["to"] for c in captured] == ["c1@example.com"]
    # The trigger table's own key guard: the same key without the middleware's record (another
    # API key) still finds the first trigger instead of sending again.
    other_key = (
        await client.post(
            "/api/client/keys", json={"name": "second", "scope": "secret", "role": "admin"}, headers=tenant.sk
        )
    ).json()
    again = await client.post(
        f"/api/client/campaigns/{ready.campaign_id}/trigger",
        json={"user": {"external_id": "c1"}, "event": {"product": "Fast"}},
        headers={"Authorization": f"Bearer {other_key['value']}", "Idempotency-Key": "same"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["trigger_id"] == done[0].json()["trigger_id"]


async def test_one_user_fallbacks_unknown_user_draft_and_webhooks(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    # An unknown external_id is created (the general path), then triggered.
    created = await _one(client, tenant, ready.campaign_id, "new-one")
    assert created.status_code == 200, created.text
    assert created.json()["messages"][0]["skip_reason"] == "no_address"
    user = await client.get("/api/client/users/new-one", headers=tenant.sk)
    assert user.status_code == 200
    # A subscribed webhook endpoint still receives message.queued for a known user.
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "h1", "email": "h1@example.com"}], headers=tenant.sk
    )
    await client.post(
        "/api/client/webhooks",
        json={"name": "hooks", "url": "https://1.1.1.1/hooks", "event_types": ["message.queued"]},
        headers=tenant.sk,
    )
    hooked = await _one(client, tenant, ready.campaign_id, "h1")
    assert hooked.status_code == 200, hooked.text
    message_id = hooked.json()["messages"][0]["message_id"]
    async with db.transaction() as session:
        from sqlalchemy import select

        from clarion.webhooks.models import WebhookEvent

        types = (
            (await session.execute(select(WebhookEvent.event_type).where(WebhookEvent.project_id == tenant.project_id)))
            .scalars()
            .all()
        )
    assert types == ["message.queued"], (types, message_id)
    # A draft campaign refuses the fast shape too.
    draft = await make_campaign(client, tenant)
    assert_problem(await _one(client, tenant, draft.campaign_id, "h1"), 409, "state_conflict")
    await drain(db)  # leave nothing due behind: other tests' workers claim across projects


async def test_a_batch_whose_lease_ran_out_is_not_sent_again(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    """Worker A claims a batch and stalls past its lease; worker B claims the rows again and
    sends them. When A wakes up it must not send them a second time."""
    import asyncio
    from datetime import timedelta

    from clarion.core.clock import utcnow
    from clarion.core.queue import claim_due
    from clarion.delivery.models import MESSAGES

    users = [{"external_id": f"l{i}", "email": f"l{i}@example.com"} for i in range(3)]
    fired = await client.post(
        f"/api/client/campaigns/{ready.campaign_id}/trigger", json={"users": users}, headers=tenant.sk
    )
    assert fired.status_code == 200, fired.text
    async with db.transaction() as session:
        stale = await claim_due(
            session,
            MESSAGES,
            now=utcnow(),
            limit=10,
            lease=timedelta(seconds=0.5),
            ready_state="queued",
            claimed_state="sending",
            extra_where=MESSAGES.c.campaign_id == ready.campaign_id,
        )
    assert len(stale) == 3
    await asyncio.sleep(0.6)  # A's lease runs out
    await drain(db)  # worker B claims the expired rows and sends them
    await MessageSource(db).send_claimed(ready.campaign_id, stale)  # A wakes up
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == [f"l{i}@example.com" for i in range(3)]
    delivery = (await client.get(f"/api/client/campaigns/{ready.campaign_id}", headers=tenant.sk)).json()["delivery"]
    assert delivery["sent"] == 3, delivery


async def test_a_batch_is_renewed_only_when_its_lease_runs_short(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    """Claimed moments ago, a batch is still this worker's: taking it for sending reads the
    campaign only and leaves the rows alone. With less than half a lease left, the rows still
    held are renewed."""
    from datetime import timedelta

    from sqlalchemy import select

    from clarion.core.clock import utcnow
    from clarion.core.queue import claim_due
    from clarion.delivery.models import MESSAGES

    users = [{"external_id": f"r{i}", "email": f"r{i}@example.com"} for i in range(2)]
    fired = await client.post(
        f"/api/client/campaigns/{ready.campaign_id}/trigger", json={"users": users}, headers=tenant.sk
    )
    assert fired.status_code == 200, fired.text
    source = MessageSource(db)

    async def claim(lease: timedelta) -> list[Any]:
        async with db.transaction() as session:
            return await claim_due(
                session,
                MESSAGES,
                now=utcnow(),
                limit=10,
                lease=lease,
                ready_state="queued",
                claimed_state="sending",
                extra_where=MESSAGES.c.campaign_id == ready.campaign_id,
            )

    async def leases() -> dict[int, Any]:
        async with db.transaction() as session:
            rows = await session.execute(
                select(MESSAGES.c.id, MESSAGES.c.lease_until).where(MESSAGES.c.campaign_id == ready.campaign_id)
            )
            return {int(i): lease for i, lease in rows.all()}

    fresh = await claim(source.lease)
    assert len(fresh) == 2
    before = await leases()
    assert await source._take_for_sending(ready.campaign_id, fresh) == {r.id for r in fresh}
    assert await leases() == before
    async with db.transaction() as session:  # give the rows back, then claim them with a short lease
        await session.execute(MESSAGES.update().where(MESSAGES.c.id.in_(before)).values(state="queued"))
    short = await claim(source.lease / 3)
    assert await source._take_for_sending(ready.campaign_id, short) == {r.id for r in short}
    after = await leases()
    assert all(after[r.id] > r.lease_until + source.lease / 2 for r in short)
    await drain(db)


async def test_a_worker_claims_only_what_the_providers_rate_allows(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    r = await scheduled_campaign(client, tenant)
    limited = await client.patch(
        f"/api/client/providers/{r.provider_id}", json={"rate_limit": 3, "rate_interval": "minute"}, headers=tenant.sk
    )
    assert limited.status_code == 200, limited.text
    users = [{"external_id": f"r{i}", "email": f"r{i}@example.com"} for i in range(10)]
    fired = await client.post(
        f"/api/client/campaigns/{r.campaign_id}/trigger", json={"users": users}, headers=tenant.sk
    )
    assert fired.status_code == 200, fired.text
    source = MessageSource(db, batch_size=100)
    assert await source.run_once() == 3  # the batch is the provider's budget, not the batch size
    assert await source.run_once() == 0  # and the minute's budget is spent
    progress = (
        await client.get(
            f"/api/client/campaigns/{r.campaign_id}/triggers/{fired.json()['trigger_id']}", headers=tenant.sk
        )
    ).json()
    assert progress["messages"] == {"delivered": 3, "queued": 7}
    # Leave nothing due behind: other tests' workers claim across projects.
    aborted = await client.patch(f"/api/client/campaigns/{r.campaign_id}", json={"state": "aborted"}, headers=tenant.sk)
    assert aborted.json()["state"] == "aborted"


async def test_an_audience_materialises_in_chunks(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, monkeypatch: Any
) -> None:
    """Chunks of 2 users: every chunk resumes after the last id of the one before, so nothing is
    skipped or doubled (the 5,000-user chunk of production works the same way)."""
    from clarion.delivery import audience

    monkeypatch.setattr(audience, "CHUNK_SIZE", 2)
    users = [{"external_id": f"c{i}", "email": f"c{i}@example.com"} for i in range(7)]
    r = await scheduled_campaign(client, tenant, list_ids=[await audience_list(client, tenant, users)])
    fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    assert fired.status_code == 200, fired.text
    await drain(db)
    progress = (
        await client.get(
            f"/api/client/campaigns/{r.campaign_id}/triggers/{fired.json()['trigger_id']}", headers=tenant.sk
        )
    ).json()
    assert progress["recipients"] == 7 and progress["messages"] == {"delivered": 7}
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == sorted(u["email"] for u in users)


async def test_a_per_call_recipient_named_by_anonymous_id_only(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    await client.post(
        "/api/client/users/batch", json=[{"anonymous_id": "anon-7", "email": "anon7@example.com"}], headers=tenant.sk
    )
    fired = await client.post(
        f"/api/client/campaigns/{ready.campaign_id}/trigger",
        json={"users": [{"anonymous_id": "anon-7", "plan": "trial"}]},
        headers=tenant.sk,
    )
    assert fired.status_code == 200, fired.text
    (message,) = fired.json()["messages"]
    assert message["state"] == "queued" and message["external_id"] is None
    await drain(db)
    captured = await captured_messages(client, tenant)
    assert [c["to"] for c in captured] == ["anon7@example.com"]


class WorkerDied(Exception):
    """Stands for a worker process killed between two chunks."""


async def test_a_worker_dying_mid_audience_hands_the_job_over_within_a_short_lease(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, monkeypatch: Any
) -> None:
    """The materialisation job is claimed with the worker's long job lease, but each committed
    chunk shortens it to CHUNK_LEASE_SECONDS: a worker killed mid-audience leaves a job another
    worker takes over within seconds, and the rerun adds only what is missing."""
    from datetime import timedelta

    from sqlalchemy import select

    from clarion.core.clock import utcnow
    from clarion.core.queue import claim_due
    from clarion.delivery import audience
    from clarion.worker.jobs import JOB_TABLE, JobContext

    monkeypatch.setattr(audience, "CHUNK_SIZE", 2)
    users = [{"external_id": f"k{i}", "email": f"k{i}@example.com"} for i in range(5)]
    r = await scheduled_campaign(client, tenant, list_ids=[await audience_list(client, tenant, users)])
    fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    assert fired.status_code == 200, fired.text
    async with db.transaction() as session:  # a worker claims the job with a 300 s lease …
        jobs = await claim_due(
            session,
            JOB_TABLE,
            now=utcnow(),
            limit=1,
            lease=timedelta(seconds=300),
            extra_where=JOB_TABLE.c.kind == audience.MATERIALISE_JOB,
        )
    (job,) = jobs
    real_chunk = audience.materialise_chunk
    chunks = 0

    async def chunk_then_die(*args: Any) -> Any:
        nonlocal chunks
        chunks += 1
        if chunks == 2:
            raise WorkerDied  # … and dies in its second chunk (its first is committed)
        return await real_chunk(*args)

    monkeypatch.setattr(audience, "materialise_chunk", chunk_then_die)
    ctx = JobContext(db, job.id, job.project_id, job.attempts)
    with contextlib.suppress(WorkerDied):
        await audience.materialise_trigger(ctx, dict(job.payload))
    async with db.transaction(readonly=True) as session:
        state, lease_until = (
            await session.execute(select(JOB_TABLE.c.state, JOB_TABLE.c.lease_until).where(JOB_TABLE.c.id == job.id))
        ).one()
    assert state == "running"
    assert lease_until <= utcnow() + timedelta(seconds=audience.CHUNK_LEASE_SECONDS + 1)
    # Once that lease runs out, any worker finishes the audience: every user exactly once.
    monkeypatch.setattr(audience, "materialise_chunk", real_chunk)
    async with db.transaction() as session:
        await session.execute(
            JOB_TABLE.update().where(JOB_TABLE.c.id == job.id).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    await drain(db)
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == sorted(u["email"] for u in users)
