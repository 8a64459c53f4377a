"""Scheduled blasts, sending at a wall-clock time in each user's zone, and the abort guarantee."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, update

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.delivery.models import Message, MessageEvent, Trigger
from clarion.delivery.schedule import _promote, campaign_lifecycle, promote_scheduled
from clarion.delivery.sender import MessageSource
from clarion.orgs.models import Project
from clarion.providers.capture import CapturedMessage
from clarion.users.models import User
from clarion.worker.jobs import JobSource
from tests.conftest import Tenant
from tests.test_trigger_flow import Ready, audience_list, captured_messages, drain, make_campaign


async def _trigger_kinds(db: Database, tenant: Tenant, campaign_id: int) -> list[str]:
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        return list((await session.execute(select(Trigger.kind).where(Trigger.campaign_id == campaign_id))).scalars())


async def _blast(client: httpx.AsyncClient, tenant: Tenant, list_id: int, **extra: object) -> Ready:
    r = await make_campaign(client, tenant, type_="blast", list_ids=[list_id], **extra)
    scheduled = await client.patch(
        f"/api/client/campaigns/{r.campaign_id}", json={"state": "scheduled"}, headers=tenant.sk
    )
    assert scheduled.status_code == 200, scheduled.text
    return r


async def _state(client: httpx.AsyncClient, tenant: Tenant, campaign_id: int) -> str:
    return str((await client.get(f"/api/client/campaigns/{campaign_id}", headers=tenant.sk)).json()["state"])


async def test_scheduled_blast_runs_to_finished(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    list_id = await audience_list(
        client, tenant, [{"external_id": f"s{i}", "email": f"s{i}@example.com"} for i in range(4)]
    )
    r = await _blast(client, tenant, list_id)
    later = await _blast(client, tenant, list_id, send_at=(utcnow() + timedelta(hours=2)).isoformat())
    passed = await _blast(client, tenant, list_id, send_at=(utcnow() - timedelta(minutes=1)).isoformat())
    await campaign_lifecycle(db)
    await campaign_lifecycle(db)  # idempotent: still one schedule trigger
    assert await _state(client, tenant, r.campaign_id) == "loading"
    assert await _state(client, tenant, passed.campaign_id) == "loading"  # its send_at has passed
    assert await _state(client, tenant, later.campaign_id) == "scheduled"
    assert await _trigger_kinds(db, tenant, r.campaign_id) == ["schedule"]
    await JobSource(db).run_once()
    assert await _state(client, tenant, r.campaign_id) == "running"
    await drain(db)
    await campaign_lifecycle(db)
    assert await _state(client, tenant, r.campaign_id) == "finished"
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == sorted([f"s{i}@example.com" for i in range(4)] * 2)  # two blasts


async def test_local_time_blast_starts_26_hours_ahead(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    list_id = await audience_list(client, tenant, [{"external_id": "l0", "email": "l0@example.com"}])
    soon = await _blast(
        client, tenant, list_id, send_in_user_timezone=True, send_at=(utcnow() + timedelta(hours=25)).isoformat()
    )
    far = await _blast(
        client, tenant, list_id, send_in_user_timezone=True, send_at=(utcnow() + timedelta(hours=27)).isoformat()
    )
    assert await promote_scheduled(db) == 1
    assert await _state(client, tenant, soon.campaign_id) == "loading"
    assert await _state(client, tenant, far.campaign_id) == "scheduled"


async def test_due_at_is_the_wall_clock_in_each_users_zone(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    async with db.transaction() as session:
        await session.execute(update(Project).where(Project.id == tenant.project_id).values(timezone="Europe/Paris"))
    users = [
        {"external_id": "tokyo", "email": "tokyo@example.com", "timezone": "Asia/Tokyo"},
        {"external_id": "la", "email": "la@example.com", "timezone": "America/Los_Angeles"},
        {"external_id": "nozone", "email": "nozone@example.com"},
        {"external_id": "oddzone", "email": "oddzone@example.com"},
    ]
    list_id = await audience_list(client, tenant, users)
    # A zone the database does not know (zones are checked against Python's zone database on input,
    # which can differ from PostgreSQL's): that user gets the project's zone, the blast goes on.
    async with db.transaction(project_id=tenant.project_id) as session:
        await session.execute(update(User).where(User.external_id == "oddzone").values(timezone="Mars/Olympus_Mons"))
    # send_at reads 00:30 and 23:30 in Paris (UTC+1 in December): each user gets that time locally.
    cases = {
        "2026-12-01T23:30:00Z": {  # 00:30 on 2 Dec in Paris
            "tokyo": datetime(2026, 12, 1, 15, 30, tzinfo=UTC),  # 00:30 JST, the previous UTC day
            "la": datetime(2026, 12, 2, 8, 30, tzinfo=UTC),
            "nozone": datetime(2026, 12, 1, 23, 30, tzinfo=UTC),
            "oddzone": datetime(2026, 12, 1, 23, 30, tzinfo=UTC),
        },
        "2026-12-01T22:30:00Z": {  # 23:30 on 1 Dec in Paris
            "tokyo": datetime(2026, 12, 1, 14, 30, tzinfo=UTC),
            "la": datetime(2026, 12, 2, 7, 30, tzinfo=UTC),  # 23:30 PST, the next UTC day
            "nozone": datetime(2026, 12, 1, 22, 30, tzinfo=UTC),
            "oddzone": datetime(2026, 12, 1, 22, 30, tzinfo=UTC),
        },
    }
    for send_at, expected in cases.items():
        r = await _blast(client, tenant, list_id, send_in_user_timezone=True, send_at=send_at)
        fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
        assert fired.status_code == 200, fired.text
        await JobSource(db).run_once()
        async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
            rows = (
                await session.execute(
                    select(Message.user_id, Message.due_at, Message.state).where(Message.campaign_id == r.campaign_id)
                )
            ).all()
        by_user = {u["external_id"]: u["id"] for u in await _users(client, tenant)}
        got = {ext: due for ext, uid in by_user.items() for user_id, due, _ in rows if user_id == uid}
        assert got == expected
        assert {state for _, _, state in rows} == {"queued"}
        await MessageSource(db).run_once()  # other tests' due rows may go; none of these is due yet
        async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
            states = (
                await session.execute(select(Message.state).where(Message.campaign_id == r.campaign_id))
            ).scalars()
            assert set(states) == {"queued"}


async def _users(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, object]]:
    body = (await client.get("/api/client/users?limit=100", headers=tenant.sk)).json()
    return list(body["results"])


async def test_nothing_is_sent_after_abort_returns(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    list_id = await audience_list(
        client, tenant, [{"external_id": f"a{i}", "email": f"a{i}@example.com"} for i in range(40)]
    )
    r = await make_campaign(client, tenant, type_="blast", list_ids=[list_id])
    limited = await client.patch(
        f"/api/client/providers/{r.provider_id}", json={"rate_limit": 4, "rate_interval": "second"}, headers=tenant.sk
    )
    assert limited.status_code == 200, limited.text
    assert (
        await client.patch(f"/api/client/campaigns/{r.campaign_id}", json={"state": "scheduled"}, headers=tenant.sk)
    ).status_code == 200
    await campaign_lifecycle(db)
    await JobSource(db).run_once()
    stop = asyncio.Event()
    source = MessageSource(db, batch_size=2)

    async def loop() -> None:
        while not stop.is_set():
            await source.run_once()
            await asyncio.sleep(0.005)

    task = asyncio.create_task(loop())
    try:
        deadline = time.monotonic() + 20
        while await _captured(db, tenant) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await _captured(db, tenant) >= 3
        aborted = await client.patch(
            f"/api/client/campaigns/{r.campaign_id}", json={"state": "aborted"}, headers=tenant.sk
        )
        returned = utcnow()
        assert aborted.status_code == 200, aborted.text
        assert aborted.json()["state"] == "aborted"
        await asyncio.sleep(1.0)  # the loop keeps running through several more rate windows
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        last_capture = (await session.execute(select(func.max(CapturedMessage.created_at)))).scalar_one()
        last_sent = (
            await session.execute(select(func.max(Message.sent_at)).where(Message.campaign_id == r.campaign_id))
        ).scalar_one()
        states = dict(
            (
                await session.execute(
                    select(Message.state, func.count())
                    .where(Message.campaign_id == r.campaign_id)
                    .group_by(Message.state)
                )
            ).all()
        )
        aborted_events = (
            await session.execute(
                select(func.count()).where(MessageEvent.campaign_id == r.campaign_id, MessageEvent.type == "aborted")
            )
        ).scalar_one()
    assert aborted_events == states.get("aborted", 0)  # every aborted message says so in its timeline
    assert last_capture is not None and last_capture <= returned
    assert last_sent is not None and last_sent <= returned
    assert states.get("aborted", 0) > 0 and "queued" not in states and "sending" not in states
    assert await _captured(db, tenant) == states.get("delivered", 0) + states.get("sent", 0)


async def _captured(db: Database, tenant: Tenant) -> int:
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        return int((await session.execute(select(func.count()).select_from(CapturedMessage))).scalar_one())


async def test_a_blast_fired_by_hand_is_not_sent_again_by_its_schedule(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    list_id = await audience_list(client, tenant, [{"external_id": "h0", "email": "h0@example.com"}])
    r = await _blast(client, tenant, list_id)
    fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    assert fired.status_code == 200, fired.text
    assert await promote_scheduled(db) == 0
    await drain(db)
    assert len(await captured_messages(client, tenant)) == 1


async def test_a_blast_its_schedule_fired_is_not_sent_again_by_hand(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """The schedule fired the blast first: firing it through the API answers with that send
    and sends nothing more (so does a second POST /trigger)."""
    list_id = await audience_list(client, tenant, [{"external_id": "h2", "email": "h2@example.com"}])
    r = await _blast(client, tenant, list_id)
    assert await promote_scheduled(db) == 1
    first = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    again = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json()["trigger_id"] == again.json()["trigger_id"]
    await drain(db)
    assert await _trigger_kinds(db, tenant, r.campaign_id) == ["schedule"]
    assert len(await captured_messages(client, tenant)) == 1


async def test_a_blast_fired_after_the_scheduler_found_it_due_is_sent_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """The scheduler read the blast as due, then the API fired it before the promotion ran:
    the promotion re-reads the ledger under the campaign's row lock and stands down."""
    list_id = await audience_list(client, tenant, [{"external_id": "h1", "email": "h1@example.com"}])
    r = await _blast(client, tenant, list_id)
    fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", json={}, headers=tenant.sk)
    assert fired.status_code == 200, fired.text
    async with db.transaction(project_id=tenant.project_id) as session:
        assert await _promote(session, r.campaign_id) == 0  # what promote_scheduled runs per due campaign
    await drain(db)
    assert await _trigger_kinds(db, tenant, r.campaign_id) == ["audience"]
    assert len(await captured_messages(client, tenant)) == 1


async def test_firing_a_blast_twice_sends_twice_unless_the_key_repeats(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """Triggering is a send every time (the seed: "Spotzee will happily send twice"); the
    Idempotency-Key is what makes a retry safe. (The schedule is hours ahead, out of the way.)"""
    list_id = await audience_list(client, tenant, [{"external_id": "t0", "email": "t0@example.com"}])
    r = await _blast(client, tenant, list_id, send_at=(utcnow() + timedelta(hours=2)).isoformat())
    url = f"/api/client/campaigns/{r.campaign_id}/trigger"
    first = await client.post(url, json={}, headers={**tenant.sk, "Idempotency-Key": "launch-1"})
    retried = await client.post(url, json={}, headers={**tenant.sk, "Idempotency-Key": "launch-1"})
    second = await client.post(url, json={}, headers=tenant.sk)
    assert first.status_code == retried.status_code == second.status_code == 200, second.text
    assert first.json()["trigger_id"] == retried.json()["trigger_id"] != second.json()["trigger_id"]
    await drain(db)
    captured = await captured_messages(client, tenant)
    assert [c["to"] for c in captured] == ["t0@example.com", "t0@example.com"]


async def test_a_blast_fires_at_its_audience_with_no_body(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    list_id = await audience_list(
        client, tenant, [{"external_id": f"n{i}", "email": f"n{i}@example.com"} for i in range(3)]
    )
    r = await _blast(client, tenant, list_id, send_at=(utcnow() + timedelta(hours=2)).isoformat())
    fired = await client.post(f"/api/client/campaigns/{r.campaign_id}/trigger", headers=tenant.sk)  # no body at all
    assert fired.status_code == 200, fired.text
    assert fired.json()["messages"] is None
    # Fired by hand, a blast goes through the lifecycle its schedule would have given it.
    assert await _state(client, tenant, r.campaign_id) == "loading"
    await JobSource(db).run_once()
    assert await _state(client, tenant, r.campaign_id) == "running"
    await drain(db)
    await campaign_lifecycle(db)
    assert await _state(client, tenant, r.campaign_id) == "finished"
    progress = (
        await client.get(
            f"/api/client/campaigns/{r.campaign_id}/triggers/{fired.json()['trigger_id']}", headers=tenant.sk
        )
    ).json()
    assert progress["recipients"] == 3 and progress["messages"] == {"delivered": 3}


async def test_a_blast_fired_again_while_running_finishes_after_both_sends(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    list_id = await audience_list(
        client, tenant, [{"external_id": f"w{i}", "email": f"w{i}@example.com"} for i in range(2)]
    )
    r = await _blast(client, tenant, list_id, send_at=(utcnow() + timedelta(hours=2)).isoformat())
    url = f"/api/client/campaigns/{r.campaign_id}/trigger"
    assert (await client.post(url, json={}, headers=tenant.sk)).status_code == 200
    await JobSource(db).run_once()
    await drain(db)
    assert await _state(client, tenant, r.campaign_id) == "running"
    assert (await client.post(url, json={}, headers=tenant.sk)).status_code == 200  # its audience not yet written
    await campaign_lifecycle(db)
    assert await _state(client, tenant, r.campaign_id) == "running"  # not finished before the second send
    await drain(db)
    await campaign_lifecycle(db)
    assert await _state(client, tenant, r.campaign_id) == "finished"
    captured = await captured_messages(client, tenant)
    assert sorted(c["to"] for c in captured) == sorted(["w0@example.com", "w1@example.com"] * 2)
    # Fired once more after it finished: it runs again.
    assert (await client.post(url, json={}, headers=tenant.sk)).status_code == 200
    assert await _state(client, tenant, r.campaign_id) == "loading"
    await drain(db)
    await campaign_lifecycle(db)
    assert await _state(client, tenant, r.campaign_id) == "finished"
