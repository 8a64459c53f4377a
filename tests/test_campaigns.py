"""Campaign CRUD, hydration, state transitions, archive-then-delete, duplicate (contract §B3)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest_asyncio
from sqlalchemy import select

from clarion.core.db import Database
from clarion.delivery.models import Message, MessageEvent, Trigger
from clarion.providers.models import Provider
from clarion.subscriptions.models import Subscription
from clarion.templates.models import Template
from tests.conftest import Tenant, assert_problem


@dataclass
class Setup:
    email_sub: int
    text_sub: int
    email_provider: int
    text_provider: int


async def make_setup(db: Database, tenant: Tenant) -> Setup:
    async with db.transaction(project_id=tenant.project_id) as session:
        email_sub = Subscription(name="Marketing", channel="email", is_public=True)
        text_sub = Subscription(name="SMS", channel="text", is_public=False)
        email_provider = Provider(type="capture", name="Capture email", group="email", is_default=False)
        text_provider = Provider(type="capture", name="Capture text", group="text", is_default=False)
        session.add_all([email_sub, text_sub, email_provider, text_provider])
        await session.flush()
        return Setup(email_sub.id, text_sub.id, email_provider.id, text_provider.id)


@pytest_asyncio.fixture
async def setup(db: Database, tenant: Tenant) -> Setup:
    return await make_setup(db, tenant)


def blast(setup: Setup, **extra: object) -> dict[str, object]:
    return {
        "type": "blast",
        "name": "Launch",
        "subscription_id": setup.email_sub,
        "provider_id": setup.email_provider,
        **extra,
    }


async def add_template(
    client: httpx.AsyncClient, tenant: Tenant, campaign_id: int, *, locale: str, channel: str = "email"
) -> None:
    data: dict[str, object] = (
        {"from": {"address": "hello@example.com"}, "subject": "Hi", "html": "<p>Hi</p>"}
        if channel == "email"
        else {"text": "Hi"}
    )
    r = await client.post(
        "/api/client/templates",
        json={"type": channel, "campaign_id": campaign_id, "locale": locale, "data": data},
        headers=tenant.sk,
    )
    assert r.status_code == 200, r.text


async def test_create_and_read_campaign(client: httpx.AsyncClient, tenant: Tenant, setup: Setup) -> None:
    r = await client.post(
        "/api/client/campaigns", json=blast(setup, list_ids=[3, 3, 4], tags=["launch"]), headers=tenant.sk
    )
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["state"] == "draft" and c["channel"] == "email" and c["type"] == "blast"
    assert c["list_ids"] == [3, 4] and c["tags"] == ["launch"]
    assert c["delivery"] == {
        "sent": 0,
        "total": 0,
        "opens": 0,
        "clicks": 0,
        "bounced": 0,
        "delivered": 0,
        "failed": 0,
        "skipped": 0,
    }
    assert c["subscription"]["id"] == setup.email_sub and c["subscription"]["channel"] == "email"
    assert (
        c["provider"]["id"] == setup.email_provider
        and "data" not in c["provider"]
        and "data_encrypted" not in c["provider"]
    )
    got = (await client.get(f"/api/client/campaigns/{c['id']}", headers=tenant.sk)).json()
    assert got == c
    listed = await client.get("/api/client/campaigns?limit=100", headers=tenant.sk)
    assert [x["id"] for x in listed.json()["results"]] == [c["id"]] and listed.headers["x-total-count"] == "1"


async def test_channel_must_match_subscription_and_provider(
    client: httpx.AsyncClient, tenant: Tenant, setup: Setup
) -> None:
    body = assert_problem(
        await client.post(
            "/api/client/campaigns", json=blast(setup, provider_id=setup.text_provider), headers=tenant.sk
        ),
        422,
        "validation_failed",
    )
    assert body["errors"][0]["param"] == "provider_id"
    body = assert_problem(
        await client.post("/api/client/campaigns", json=blast(setup, channel="text"), headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert {e["param"] for e in body["errors"]} == {"subscription_id", "provider_id"}
    body = assert_problem(
        await client.post("/api/client/campaigns", json=blast(setup, subscription_id=999999), headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "subscription_id"
    body = assert_problem(
        await client.post("/api/client/campaigns", json={**blast(setup), "type": "newsletter"}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "type"


async def test_switching_subscription_channel_needs_matching_provider(
    client: httpx.AsyncClient, tenant: Tenant, setup: Setup
) -> None:
    c = (await client.post("/api/client/campaigns", json=blast(setup), headers=tenant.sk)).json()
    assert_problem(
        await client.patch(
            f"/api/client/campaigns/{c['id']}", json={"subscription_id": setup.text_sub}, headers=tenant.sk
        ),
        422,
        "validation_failed",
    )
    moved = await client.patch(
        f"/api/client/campaigns/{c['id']}",
        json={"subscription_id": setup.text_sub, "provider_id": setup.text_provider},
        headers=tenant.sk,
    )
    assert moved.status_code == 200 and moved.json()["channel"] == "text"


async def test_state_transitions(client: httpx.AsyncClient, tenant: Tenant, setup: Setup) -> None:
    c = (await client.post("/api/client/campaigns", json=blast(setup), headers=tenant.sk)).json()
    url = f"/api/client/campaigns/{c['id']}"
    body = assert_problem(
        await client.patch(url, json={"state": "scheduled"}, headers=tenant.sk), 422, "validation_failed"
    )
    assert [e["param"] for e in body["errors"]] == ["list_ids", "templates"]
    assert_problem(await client.patch(url, json={"state": "running"}, headers=tenant.sk), 409, "state_conflict")
    await client.patch(url, json={"list_ids": [1]}, headers=tenant.sk)
    # A template in another locale does not serve the project's default locale ("en"): a user
    # without a locale would get no message.
    await add_template(client, tenant, c["id"], locale="de")
    body = assert_problem(
        await client.patch(url, json={"state": "scheduled"}, headers=tenant.sk), 422, "validation_failed"
    )
    assert [e["param"] for e in body["errors"]] == ["templates"] and "(en)" in body["errors"][0]["message"]
    await add_template(client, tenant, c["id"], locale="en")
    editor = (await client.post("/api/client/keys", json={"name": "ed", "role": "editor"}, headers=tenant.sk)).json()
    assert_problem(
        await client.patch(url, json={"state": "scheduled"}, headers={"Authorization": f"Bearer {editor['value']}"}),
        403,
        "permission_denied",
    )
    scheduled = await client.patch(url, json={"state": "scheduled"}, headers=tenant.sk)
    assert scheduled.status_code == 200 and scheduled.json()["state"] == "scheduled"
    as_editor = {"Authorization": f"Bearer {editor['value']}"}
    # Deleting (archiving) a live campaign aborts it: an editor may not, as with PATCH aborted.
    assert_problem(await client.delete(url, headers=as_editor), 403, "permission_denied")
    assert_problem(await client.patch(url, json={"state": "aborted"}, headers=as_editor), 403, "permission_denied")
    assert (await client.get(url, headers=tenant.sk)).json()["state"] == "scheduled"
    aborted = await client.patch(url, json={"state": "aborted"}, headers=tenant.sk)
    assert aborted.json()["state"] == "aborted"
    assert_problem(await client.patch(url, json={"state": "scheduled"}, headers=tenant.sk), 409, "state_conflict")
    assert_problem(await client.patch(url, json={"list_ids": [2]}, headers=tenant.sk), 409, "state_conflict")
    # A null that would clear the audience or the timing is a change too; restating a value is not.
    for cleared in ({"list_ids": None}, {"exclusion_list_ids": [7]}, {"send_in_user_timezone": True}):
        assert_problem(await client.patch(url, json=cleared, headers=tenant.sk), 409, "state_conflict")
    restated = await client.patch(url, json={"list_ids": [1], "provider_id": None}, headers=tenant.sk)
    assert restated.status_code == 200 and restated.json()["list_ids"] == [1]
    renamed = await client.patch(url, json={"name": "Still renameable"}, headers=tenant.sk)
    assert renamed.json()["name"] == "Still renameable"


async def test_scheduling_needs_a_template_of_the_campaigns_channel(
    client: httpx.AsyncClient, tenant: Tenant, setup: Setup
) -> None:
    # A trigger campaign: a scheduled blast left behind would be promoted by other tests' scheduler runs.
    c = (await client.post("/api/client/campaigns", json=blast(setup, type="trigger"), headers=tenant.sk)).json()
    url = f"/api/client/campaigns/{c['id']}"
    await add_template(client, tenant, c["id"], locale="en")
    # Moved to the text channel before scheduling: its email template no longer serves it.
    moved = await client.patch(
        url, json={"subscription_id": setup.text_sub, "provider_id": setup.text_provider}, headers=tenant.sk
    )
    assert moved.status_code == 200 and moved.json()["channel"] == "text"
    body = assert_problem(
        await client.patch(url, json={"state": "scheduled"}, headers=tenant.sk), 422, "validation_failed"
    )
    assert [e["param"] for e in body["errors"]] == ["templates"] and "text template" in body["errors"][0]["message"]
    await add_template(client, tenant, c["id"], locale="en", channel="text")
    scheduled = await client.patch(url, json={"state": "scheduled"}, headers=tenant.sk)
    assert scheduled.status_code == 200 and scheduled.json()["state"] == "scheduled"


async def test_abort_stops_unsent_messages(
    client: httpx.AsyncClient, tenant: Tenant, setup: Setup, db: Database
) -> None:
    c = (await client.post("/api/client/campaigns", json=blast(setup, list_ids=[1]), headers=tenant.sk)).json()
    await add_template(client, tenant, c["id"], locale="en")
    scheduled = await client.patch(f"/api/client/campaigns/{c['id']}", json={"state": "scheduled"}, headers=tenant.sk)
    assert scheduled.status_code == 200, scheduled.text
    async with db.transaction(project_id=tenant.project_id) as session:
        trigger = Trigger(public_id="trg_test" + str(c["id"]), campaign_id=c["id"], kind="audience")
        session.add(trigger)
        await session.flush()
        for i, state in enumerate(["queued", "throttled", "sent", "queued"]):
            session.add(
                Message(
                    public_id=f"msg_t{c['id']}_{i}",
                    campaign_id=c["id"],
                    trigger_id=trigger.id,
                    user_id=i + 1,
                    channel="email",
                    state=state,
                )
            )
    await client.patch(f"/api/client/campaigns/{c['id']}", json={"state": "aborted"}, headers=tenant.sk)
    async with db.session(project_id=tenant.project_id) as session:
        states = sorted((await session.execute(select(Message.state).where(Message.campaign_id == c["id"]))).scalars())
        # Each aborted message got its `aborted` event in the abort's transaction; the sent one none.
        events = (
            await session.execute(
                select(Message.public_id, MessageEvent.type, MessageEvent.public_id)
                .join(MessageEvent, MessageEvent.message_id == Message.id)
                .where(Message.campaign_id == c["id"])
                .order_by(Message.public_id)
            )
        ).all()
    assert states == ["aborted", "aborted", "aborted", "sent"]
    assert [(m, t) for m, t, _ in events] == [(f"msg_t{c['id']}_{i}", "aborted") for i in (0, 1, 3)]
    assert len({e for _, _, e in events}) == 3
    timeline = (await client.get(f"/api/client/messages/msg_t{c['id']}_1", headers=tenant.sk)).json()
    assert timeline["state"] == "aborted" and [e["type"] for e in timeline["events"]] == ["aborted"]


async def test_archive_then_delete_and_duplicate(
    client: httpx.AsyncClient, tenant: Tenant, setup: Setup, db: Database
) -> None:
    c = (
        await client.post("/api/client/campaigns", json=blast(setup, list_ids=[5], tags=["a"]), headers=tenant.sk)
    ).json()
    await add_template(client, tenant, c["id"], locale="en")
    await add_template(client, tenant, c["id"], locale="de")
    copy = (await client.post(f"/api/client/campaigns/{c['id']}/duplicate", headers=tenant.sk)).json()
    assert copy["id"] != c["id"] and copy["state"] == "draft" and copy["list_ids"] == [5] and copy["tags"] == ["a"]

    async def templates(campaign_id: int) -> list[tuple[str, str, dict[str, object]]]:
        async with db.session(project_id=tenant.project_id) as session:
            rows = await session.execute(
                select(Template.type, Template.locale, Template.data)
                .where(Template.campaign_id == campaign_id)
                .order_by(Template.locale)
            )
            return [(r.type, r.locale, r.data) for r in rows]

    copied = await templates(copy["id"])
    assert copied == await templates(c["id"]) and [t[1] for t in copied] == ["de", "en"]
    assert (await client.delete(f"/api/client/campaigns/{c['id']}", headers=tenant.sk)).json() is True
    listed = {x["id"] for x in (await client.get("/api/client/campaigns", headers=tenant.sk)).json()["results"]}
    assert c["id"] not in listed and copy["id"] in listed
    assert (await client.get(f"/api/client/campaigns/{c['id']}", headers=tenant.sk)).status_code == 200
    assert_problem(
        await client.patch(f"/api/client/campaigns/{c['id']}", json={"name": "x"}, headers=tenant.sk),
        409,
        "state_conflict",
    )
    assert (await client.delete(f"/api/client/campaigns/{c['id']}", headers=tenant.sk)).json() is True
    assert_problem(await client.get(f"/api/client/campaigns/{c['id']}", headers=tenant.sk), 404, "resource_missing")


async def add_history(db: Database, tenant: Tenant, campaign_id: int) -> None:
    """One trigger of the campaign with one message and its event."""
    async with db.transaction(project_id=tenant.project_id) as session:
        trigger = Trigger(public_id=f"trg_h{campaign_id}", campaign_id=campaign_id, kind="user")
        session.add(trigger)
        await session.flush()
        message = Message(
            public_id=f"msg_h{campaign_id}", campaign_id=campaign_id, trigger_id=trigger.id, user_id=1, channel="email"
        )
        session.add(message)
        await session.flush()
        session.add(
            MessageEvent(public_id=f"evt_h{campaign_id}", message_id=message.id, campaign_id=campaign_id, type="queued")
        )


async def test_deleting_a_campaign_deletes_its_triggers_messages_and_events(
    client: httpx.AsyncClient, tenant: Tenant, setup: Setup, db: Database
) -> None:
    gone = (await client.post("/api/client/campaigns", json=blast(setup, list_ids=[5]), headers=tenant.sk)).json()
    kept = (await client.post("/api/client/campaigns", json=blast(setup, list_ids=[5]), headers=tenant.sk)).json()
    for c in (gone, kept):
        await add_history(db, tenant, c["id"])

    async def history(campaign_id: int) -> tuple[int, int, int]:
        async with db.session(project_id=tenant.project_id) as session:
            counts = []
            for model in (Trigger, Message, MessageEvent):
                rows = await session.execute(select(model.id).where(model.campaign_id == campaign_id))
                counts.append(len(rows.all()))
            return counts[0], counts[1], counts[2]

    assert (await client.delete(f"/api/client/campaigns/{gone['id']}", headers=tenant.sk)).json() is True
    assert await history(gone["id"]) == (1, 1, 1)  # archived: the history stays
    assert (await client.delete(f"/api/client/campaigns/{gone['id']}", headers=tenant.sk)).json() is True
    assert await history(gone["id"]) == (0, 0, 0)
    assert await history(kept["id"]) == (1, 1, 1)


async def test_preview_renders_the_primary_template_for_a_representative_user(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, setup: Setup
) -> None:
    c = (await client.post("/api/client/campaigns", json=blast(setup), headers=tenant.sk)).json()
    url = f"/api/client/campaigns/{c['id']}/preview"
    body = assert_problem(await client.get(url, headers=tenant.sk), 422, "validation_failed")
    assert body["param"] == "template_missing"
    subject = "Hi {{ user.email }}{{ user.data.first_name }}{{ event.product }}"

    async def template(locale: str, greeting: str) -> int:
        r = await client.post(
            "/api/client/templates",
            json={
                "type": "email",
                "campaign_id": c["id"],
                "locale": locale,
                "data": {
                    "from": {"address": "hello@example.com"},
                    "subject": f"{greeting} {subject}",
                    "html": "<p>x</p>",
                },
            },
            headers=tenant.sk,
        )
        assert r.status_code == 200, r.text
        return int(r.json()["id"])

    await template("de", "Hallo")
    assert_problem(await client.get(url, headers=tenant.sk), 422, "validation_failed")  # not the default locale
    english = await template("en", "Hello")
    preview = await client.get(url, headers=tenant.sk)
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    # The project's default locale ("en"); the stand-in user has an address but no custom
    # attributes and there is no event, so those render blank.
    assert shown["template_id"] == english and shown["locale"] == "en"
    assert shown["subject"] == "Hello Hi preview@example.com"
    assert "<p>x</p>" in shown["html"]
    assert_problem(await client.get(url, headers=other_tenant.sk), 404, "resource_missing")


async def test_campaigns_are_per_project(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, setup: Setup, db: Database
) -> None:
    c = (await client.post("/api/client/campaigns", json=blast(setup), headers=tenant.sk)).json()
    for method, url in (("GET", f"/api/client/campaigns/{c['id']}"), ("DELETE", f"/api/client/campaigns/{c['id']}")):
        assert_problem(await client.request(method, url, headers=other_tenant.sk), 404, "resource_missing")
    # Another project's subscription/provider ids can't be borrowed.
    other = await make_setup(db, other_tenant)
    assert_problem(
        await client.post("/api/client/campaigns", json=blast(other), headers=tenant.sk), 422, "validation_failed"
    )
    assert (await client.get("/api/client/campaigns", headers=other_tenant.sk)).json()["results"] == []
