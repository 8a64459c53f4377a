"""The one-user trigger fast path (PostgreSQL) answers before routing and hands everything else
to the general path unchanged; campaign counters appended as deltas are exact before and after
they are folded."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from clarion.api.idempotency import RECORDS
from clarion.campaigns.counters import DELTAS, fold_counter_deltas
from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.delivery.models import Message, Trigger
from tests.conftest import Tenant, assert_problem, new_tenant
from tests.test_trigger_flow import Ready, drain, make_campaign, scheduled_campaign


@pytest_asyncio.fixture
async def ready(client: httpx.AsyncClient, tenant: Tenant) -> Ready:
    return await scheduled_campaign(client, tenant)


TRIGGER = {"user": {"external_id": "f1"}, "event": {"product": "Fast"}}


async def _known_user(client: httpx.AsyncClient, tenant: Tenant, external_id: str = "f1") -> None:
    created = await client.post(
        "/api/client/users/batch",
        json=[{"external_id": external_id, "email": f"{external_id}@example.com"}],
        headers=tenant.sk,
    )
    assert created.status_code == 200, created.text


def _refuse_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the general trigger path ran")

    monkeypatch.setattr("clarion.delivery.router.create_trigger", refuse)


async def _key(client: httpx.AsyncClient, tenant: Tenant, *, role: str, scope: str = "secret") -> dict[str, Any]:
    created = await client.post(
        "/api/client/keys", json={"name": f"{scope}-{role}", "scope": scope, "role": role}, headers=tenant.sk
    )
    assert created.status_code == 200, created.text
    body: dict[str, Any] = created.json()
    return body


async def _record_state(db: Database, key: str) -> list[str]:
    async with db.transaction() as session:
        return list((await session.execute(select(RECORDS.c.state).where(RECORDS.c.key == key))).scalars())


async def test_a_known_user_is_answered_before_the_route(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.is_postgres:
        pytest.skip("the fast path is PostgreSQL's")
    await _known_user(client, tenant)
    _refuse_general_path(monkeypatch)
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    first = await client.post(url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "fast-a"})
    assert first.status_code == 200, first.text
    assert first.headers["x-request-id"].startswith("req_") and "spotzee-version" in first.headers
    assert await _record_state(db, "fast-a") == ["completed"]
    async with db.transaction() as session:
        stored = (
            await session.execute(
                select(Trigger.event, Message.context, Message.state)
                .join(Message, Message.trigger_id == Trigger.id)
                .where(Trigger.public_id == first.json()["trigger_id"])
            )
        ).one()
    assert tuple(stored) == ({"product": "Fast"}, {"attributes": {}, "event": {"product": "Fast"}}, "queued")
    replay = await client.post(url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "fast-a"})
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    # The same key with another body is refused, and nothing more is sent.
    other = {"user": {"external_id": "f1"}, "event": {"product": "Other"}}
    assert_problem(
        await client.post(url, json=other, headers={**tenant.sk, "Idempotency-Key": "fast-a"}),
        409,
        "idempotency_key_mismatch",
    )
    await drain(db)
    captured = (await client.get("/api/client/captured?limit=100", headers=tenant.sk)).json()["results"]
    assert [c["to"] for c in captured] == ["f1@example.com"]


async def _messages(db: Database, campaign_id: int) -> int:
    async with db.transaction() as session:
        count = await session.execute(
            select(func.count()).select_from(Message).where(Message.campaign_id == campaign_id)
        )
        return int(count.scalar_one())


async def test_a_key_someone_else_holds_writes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path's completed idempotency record is a plain INSERT: when the key is held
    (by another campaign's trigger, or by a request still running), the statement fails as a
    whole, so no trigger or message of it remains, and the general path gives the answer."""
    if not db.is_postgres:
        pytest.skip("the fast path is PostgreSQL's")
    await _known_user(client, tenant)
    second = await scheduled_campaign(client, tenant)
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    first = await client.post(url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "held-1"})
    assert first.status_code == 200, first.text
    _refuse_general_path(monkeypatch)
    other_url = f"/api/client/campaigns/{second.campaign_id}/trigger"
    assert_problem(
        await client.post(other_url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "held-1"}),
        409,
        "idempotency_key_mismatch",
    )
    assert await _messages(db, second.campaign_id) == 0
    # A record still in progress (another request is running under the key).
    async with db.transaction() as session:
        await session.execute(
            RECORDS.update()
            .where(RECORDS.c.key == "held-1")
            .values(state="in_progress", locked_until=utcnow() + timedelta(minutes=1))
        )
    response = await client.post(url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "held-1"})
    assert_problem(response, 409, "idempotency_in_progress")
    assert await _messages(db, ready.campaign_id) == 1
    await drain(db)


async def test_a_trigger_recorded_under_the_key_is_not_repeated(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    """The idempotency record is gone (expired) but the trigger it created is not: the fast path
    writes nothing and the route answers with that trigger."""
    if not db.is_postgres:
        pytest.skip("the fast path is PostgreSQL's")
    await _known_user(client, tenant)
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    first = await client.post(url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "gone-1"})
    assert first.status_code == 200, first.text
    async with db.transaction() as session:
        await session.execute(RECORDS.delete().where(RECORDS.c.key == "gone-1"))
    again = await client.post(url, json=TRIGGER, headers={**tenant.sk, "Idempotency-Key": "gone-1"})
    assert again.status_code == 200, again.text
    assert again.json()["trigger_id"] == first.json()["trigger_id"]
    assert await _messages(db, ready.campaign_id) == 1
    await drain(db)


async def test_an_ineligible_user_is_skipped_on_the_fast_path(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.is_postgres:
        pytest.skip("the fast path is PostgreSQL's")
    created = await client.post("/api/client/users/batch", json=[{"external_id": "nomail-f"}], headers=tenant.sk)
    assert created.status_code == 200, created.text
    _refuse_general_path(monkeypatch)
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    headers = {**tenant.sk, "Idempotency-Key": "skip-1"}
    body = {"user": {"external_id": "nomail-f"}, "event": {"a": 1}}
    first = await client.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["success"] is True and answer["recipients"] == 1 and answer["campaign_id"] == ready.campaign_id
    [message] = answer["messages"]
    assert (message["state"], message["skip_reason"], message["external_id"]) == ("skipped", "no_address", "nomail-f")
    replay = await client.post(url, json=body, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    timeline = await client.get(f"/api/client/messages/{message['message_id']}", headers=tenant.sk)
    assert timeline.status_code == 200, timeline.text
    assert [e["type"] for e in timeline.json()["events"]] == ["skipped"]


async def test_handed_over_requests_get_the_general_paths_answers(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    # An unknown user goes down the general path, which claims the key itself.
    unknown = {"user": {"external_id": "brand-new"}, "event": {"product": "Fast"}}
    created = await client.post(url, json=unknown, headers={**tenant.sk, "Idempotency-Key": "hand-1"})
    assert created.status_code == 200, created.text
    assert await _record_state(db, "hand-1") == ["completed"]
    again = await client.post(url, json=unknown, headers={**tenant.sk, "Idempotency-Key": "hand-1"})
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == created.json()
    # Keys that may not trigger get the general path's answers.
    await _known_user(client, tenant)
    support = await _key(client, tenant, role="support")
    assert_problem(
        await client.post(
            url, json=TRIGGER, headers={"Authorization": f"Bearer {support['value']}", "Idempotency-Key": "hand-2"}
        ),
        403,
        "permission_denied",
    )
    public = await _key(client, tenant, role="admin", scope="public")
    assert_problem(
        await client.post(url, json=TRIGGER, headers={"Authorization": f"Bearer {public['value']}"}),
        401,
        "authentication_required",
    )
    revoked = await _key(client, tenant, role="admin")
    assert (await client.delete(f"/api/client/keys/{revoked['id']}", headers=tenant.sk)).status_code == 200
    assert_problem(
        await client.post(url, json=TRIGGER, headers={"Authorization": f"Bearer {revoked['value']}"}),
        401,
        "authentication_required",
    )
    # Another project's secret key cannot see the campaign.
    other = await new_tenant(db)
    await _known_user(client, other)
    assert_problem(await client.post(url, json=TRIGGER, headers=other.sk), 404, "resource_missing")
    # A body the model refuses gets the route's validation error.
    assert_problem(
        await client.post(url, json={"user": {"external_id": "f1"}, "surprise": 1}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    async with db.transaction() as session:
        messages = (
            await session.execute(
                select(func.count()).select_from(Message).where(Message.campaign_id == ready.campaign_id)
            )
        ).scalar()
    assert messages == 1  # the brand-new user's; every refused request sent nothing
    await drain(db)


async def test_counter_deltas_are_exact_before_and_after_folding(
    client: httpx.AsyncClient, tenant: Tenant, ready: Ready, db: Database
) -> None:
    await _known_user(client, tenant)
    await _known_user(client, tenant, "f2-no-mail")
    await client.post("/api/client/users/batch", json=[{"external_id": "nomail"}], headers=tenant.sk)
    url = f"/api/client/campaigns/{ready.campaign_id}/trigger"
    for body in (TRIGGER, TRIGGER, {"user": {"external_id": "nomail"}}):
        assert (await client.post(url, json=body, headers=tenant.sk)).status_code == 200
    per_call = await client.post(url, json={"users": [{"external_id": "f2-no-mail"}]}, headers=tenant.sk)
    assert per_call.status_code == 200, per_call.text

    async def delivery() -> dict[str, int]:
        campaign = await client.get(f"/api/client/campaigns/{ready.campaign_id}", headers=tenant.sk)
        out: dict[str, int] = campaign.json()["delivery"]
        return out

    before = await delivery()
    assert (before["total"], before["skipped"]) == (4, 1)
    await fold_counter_deltas(db)
    async with db.transaction() as session:
        left = (await session.execute(select(func.count()).select_from(DELTAS))).scalar()
        row = (
            await session.execute(select(Campaign.total, Campaign.skipped).where(Campaign.id == ready.campaign_id))
        ).one()
    assert left == 0
    assert tuple(row) == (4, 1)
    assert await delivery() == before
    listed = (await client.get("/api/client/campaigns?limit=100", headers=tenant.sk)).json()["results"]
    assert next(c for c in listed if c["id"] == ready.campaign_id)["delivery"]["total"] == 4
    await drain(db)


async def test_deleting_a_campaign_removes_its_counter_deltas(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    from clarion.campaigns.models import CampaignCounterDelta

    r = await make_campaign(client, tenant)
    async with db.transaction() as session:
        session.add(CampaignCounterDelta(campaign_id=r.campaign_id, total=3, skipped=1))
    for _ in range(2):  # archive, then delete
        assert (await client.delete(f"/api/client/campaigns/{r.campaign_id}", headers=tenant.sk)).status_code in (
            200,
            204,
        )
    async with db.transaction() as session:
        left = (
            await session.execute(select(func.count()).select_from(DELTAS).where(DELTAS.c.campaign_id == r.campaign_id))
        ).scalar()
    assert left == 0
