"""Provider results become message states, events, counters and suppressions in one transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.delivery.events import record_message_event
from clarion.delivery.models import Message, MessageEvent, Trigger
from clarion.delivery.outcomes import SentMessage, record_outcomes
from clarion.providers.base import SendResult
from clarion.subscriptions.models import Suppression
from tests.conftest import Tenant
from tests.test_campaigns import Setup, make_setup


async def _campaign_and_trigger(
    db: Database, tenant: Tenant, setup: Setup, *, kind: str, **trigger_fields: Any
) -> tuple[Campaign, Trigger]:
    """An email trigger campaign on the setup's subscription and provider, with one trigger."""
    async with db.transaction(project_id=tenant.project_id) as session:
        campaign = Campaign(
            type="trigger", name="t", channel="email", subscription_id=setup.email_sub, provider_id=setup.email_provider
        )
        session.add(campaign)
        await session.flush()
        trigger = Trigger(public_id=f"trg_{kind}{campaign.id}", campaign_id=campaign.id, kind=kind, **trigger_fields)
        session.add(trigger)
        await session.flush()
    return campaign, trigger


async def test_outcomes_update_states_events_counters_and_suppressions(db: Database, tenant: Tenant) -> None:
    setup = await make_setup(db, tenant)
    campaign, trigger = await _campaign_and_trigger(db, tenant, setup, kind="users")
    async with db.transaction(project_id=tenant.project_id) as session:
        messages = []
        for i in range(6):
            m = Message(
                public_id=f"msg_o{campaign.id}_{i}",
                campaign_id=campaign.id,
                trigger_id=trigger.id,
                user_id=i + 1,
                channel="email",
                state="sending",
                attempts=1 if i != 3 else 8,
            )
            session.add(m)
            messages.append(m)
        await session.flush()
    sent = [
        SentMessage(m.id, m.public_id, tenant.project_id, campaign.id, "email", m.attempts, f"u{i}@example.com")
        for i, m in enumerate(messages)
    ]
    results = [
        SendResult(sent[0].public_id, "sent", provider_message_id="p0"),
        SendResult(sent[1].public_id, "delivered", provider_message_id="p1"),
        SendResult(
            sent[2].public_id,
            "failed",
            transient=True,
            error="451 try later",
            observations=[{"type": "delivery.rcpt-to-failed", "smtp_code": 451}],
        ),
        SendResult(sent[3].public_id, "failed", transient=True, error="451 still"),
        SendResult(
            sent[4].public_id,
            "bounced",
            error="550 no such user",
            observations=[{"type": "delivery.rcpt-to-rejected", "smtp_code": 550}],
        ),
        # A permanent failure that is not a bounce (e.g. the provider refused the message itself):
        # failed at the first attempt, no retry, no suppression.
        SendResult(sent[5].public_id, "failed", transient=False, error="554 message refused"),
    ]
    now = utcnow()
    async with db.transaction() as session:
        counts = await record_outcomes(
            session, list(zip(sent, results, strict=True)), now=now, provider_id=setup.email_provider
        )
    assert counts == {"sent": 1, "delivered": 1, "rescheduled": 1, "failed": 2, "bounced": 1}
    async with db.session(project_id=tenant.project_id) as session:
        rows = {
            m.public_id: m
            for m in (await session.execute(select(Message).where(Message.campaign_id == campaign.id))).scalars()
        }
        assert [rows[s.public_id].state for s in sent] == ["sent", "delivered", "queued", "failed", "bounced", "failed"]
        assert rows[sent[5].public_id].last_error == "554 message refused" and rows[sent[5].public_id].attempts == 1
        assert rows[sent[0].public_id].provider_message_id == "p0" and rows[sent[0].public_id].sent_at is not None
        assert rows[sent[2].public_id].lease_until is None
        events = (
            await session.execute(
                select(MessageEvent.message_id, MessageEvent.type, MessageEvent.data).where(
                    MessageEvent.campaign_id == campaign.id
                )
            )
        ).all()
        by_message: dict[int, list[str]] = {}
        for mid, t, _ in events:
            by_message.setdefault(mid, []).append(t)
        # The retry waits the jittered backoff it reports: exponential with full jitter, so at most
        # base × 2^attempts (2 s × 2 after the first attempt), and due_at is exactly that far ahead.
        (retry,) = [data for mid, t, data in events if mid == sent[2].id and t == "queue.rescheduled"]
        assert 0 <= retry["retry_in_seconds"] <= 4.0
        waited = (rows[sent[2].public_id].due_at - now).total_seconds()
        assert abs(waited - retry["retry_in_seconds"]) < 0.01
        assert sorted(by_message[sent[1].id]) == ["delivered", "sent"]
        assert sorted(by_message[sent[2].id]) == ["delivery.rcpt-to-failed", "queue.rescheduled"]
        assert by_message[sent[3].id] == ["failed"]
        assert sorted(by_message[sent[4].id]) == ["bounced", "delivery.rcpt-to-rejected"]
        assert by_message[sent[5].id] == ["failed"]
        c = (await session.execute(select(Campaign).where(Campaign.id == campaign.id))).scalar_one()
        assert (c.sent, c.delivered, c.failed, c.bounced) == (2, 1, 2, 1)
        suppressed = (await session.execute(select(Suppression.address, Suppression.reason))).all()
        assert suppressed == [("u4@example.com", "hard_bounce")]


async def test_trigger_progress_and_message_timeline(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    setup = await make_setup(db, tenant)
    campaign, trigger = await _campaign_and_trigger(db, tenant, setup, kind="users", state="ready", recipients=2)
    async with db.transaction(project_id=tenant.project_id) as session:
        m1 = Message(
            public_id=f"msg_p{campaign.id}_1",
            campaign_id=campaign.id,
            trigger_id=trigger.id,
            user_id=1,
            channel="email",
        )
        m2 = Message(
            public_id=f"msg_p{campaign.id}_2",
            campaign_id=campaign.id,
            trigger_id=trigger.id,
            user_id=2,
            channel="email",
            state="skipped",
            skip_reason="unsubscribed",
        )
        session.add_all([m1, m2])
        await session.flush()
    sent = SentMessage(m1.id, m1.public_id, tenant.project_id, campaign.id, "email", 1, "a@example.com")
    async with db.transaction() as session:
        await record_outcomes(
            session,
            [(sent, SendResult(m1.public_id, "delivered", provider_message_id="cap"))],
            now=utcnow(),
            provider_id=setup.email_provider,
        )

    progress = await client.get(f"/api/client/campaigns/{campaign.id}/triggers/{trigger.public_id}", headers=tenant.sk)
    assert progress.status_code == 200, progress.text
    assert progress.json()["messages"] == {"delivered": 1, "skipped": 1} and progress.json()["recipients"] == 2
    timeline = (await client.get(f"/api/client/messages/{m1.public_id}", headers=tenant.sk)).json()
    assert timeline["trigger_id"] == trigger.public_id and timeline["state"] == "delivered"
    assert [e["type"] for e in timeline["events"]] == ["sent", "delivered"]
    assert all(e["id"].startswith("evt_") for e in timeline["events"])
    skipped = (await client.get(f"/api/client/messages/{m2.public_id}", headers=tenant.sk)).json()
    assert skipped["skip_reason"] == "unsubscribed"
    # Another project sees neither.
    from tests.conftest import assert_problem

    assert_problem(
        await client.get(f"/api/client/messages/{m1.public_id}", headers=other_tenant.sk), 404, "resource_missing"
    )
    assert_problem(
        await client.get(f"/api/client/campaigns/{campaign.id}/triggers/{trigger.public_id}", headers=other_tenant.sk),
        404,
        "resource_missing",
    )


async def test_concurrent_opens_of_one_message_count_once(db: Database, tenant: Tenant) -> None:
    """The campaign's `opens` is unique per message even when one message's pixel is loaded
    several times at once (mail clients prefetch): the first-open check and the counter bump
    are serialised on the message row."""
    campaign, trigger = await _campaign_and_trigger(db, tenant, await make_setup(db, tenant), kind="user")
    async with db.transaction(project_id=tenant.project_id) as session:
        message = Message(
            public_id=f"msg_c{campaign.id}", campaign_id=campaign.id, trigger_id=trigger.id, user_id=1, channel="email"
        )
        session.add(message)
        await session.flush()

    async def open_once() -> None:
        async with db.transaction(project_id=tenant.project_id) as session:
            await record_message_event(
                session, project_id=tenant.project_id, message_id=message.id, campaign_id=campaign.id, type="opened"
            )

    await asyncio.gather(*(open_once() for _ in range(8)))
    async with db.session(project_id=tenant.project_id) as session:
        opens = (await session.execute(select(Campaign.opens).where(Campaign.id == campaign.id))).scalar_one()
        events = (
            await session.execute(
                select(MessageEvent.id).where(MessageEvent.message_id == message.id, MessageEvent.type == "opened")
            )
        ).all()
    assert len(events) == 8  # every open is in the timeline
    assert opens == 1
