"""The scheduler duty that moves blasts through their lifecycle (architecture §2).

- ``scheduled`` → ``loading``: a blast whose ``send_at`` is due (or unset) gets one audience
  trigger of kind ``schedule`` (idempotency key ``"schedule"``, unique per campaign) and its
  materialisation job. A blast sent in each user's zone starts ``LOCAL_TIME_LEAD`` early: the
  earliest zone (UTC+14) reaches a wall-clock time at most 26 hours before the project's zone
  does, and each message carries its own ``due_at``. A blast that already has a trigger (it
  was fired through ``POST /trigger``) is left alone, so its audience is not sent twice.
- ``loading`` → ``running`` is done by the materialisation job when the schedule trigger is ready.
- ``running`` → ``finished``: no message of the campaign is ``queued``, ``sending`` or ``throttled``.
- ``aborting`` → ``aborted``: no ``sending`` message still holds a live lease (rows whose lease
  ran out are marked ``aborted``; the send loop never sends rows of an aborting campaign).

Every step is a conditional update, so running the duty twice (or on two schedulers during a
lease hand-over) changes nothing the second time.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.ids import prefixed_ulid
from clarion.delivery.abort import abort_messages
from clarion.delivery.audience import enqueue_materialisation
from clarion.delivery.models import PENDING_MESSAGE_STATES, Message, Trigger

SCHEDULE_KEY = "schedule"
LOCAL_TIME_LEAD = timedelta(hours=26)
BATCH = 100


async def promote_scheduled(db: Database) -> int:
    """Start every due scheduled blast; returns how many were promoted."""
    now = utcnow()
    due = and_(
        Campaign.type == "blast",
        Campaign.state == "scheduled",
        Campaign.archived_at.is_(None),
        # A blast already fired through POST /trigger is not sent a second time by its schedule.
        ~exists().where(Trigger.campaign_id == Campaign.id),
        or_(
            Campaign.send_at.is_(None),
            Campaign.send_at <= now,
            and_(Campaign.send_in_user_timezone.is_(True), Campaign.send_at <= now + LOCAL_TIME_LEAD),
        ),
    )
    async with db.transaction(readonly=True) as session:
        rows = (await session.execute(select(Campaign.id, Campaign.project_id).where(due).limit(BATCH))).all()
    promoted = 0
    for campaign_id, project_id in rows:
        async with db.transaction(project_id=int(project_id)) as session:
            promoted += await _promote(session, int(campaign_id))
    return promoted


async def _promote(session: AsyncSession, campaign_id: int) -> int:
    # The campaign row is locked first (a POST /trigger on a blast locks it too), and only then
    # is the ledger read again, by a statement that sees every trigger committed before the lock
    # was granted: a blast fired through the API meanwhile is not also sent by its schedule.
    locked = select(Campaign.state).where(Campaign.id == campaign_id).with_for_update()
    if (await session.execute(locked)).scalar_one_or_none() != "scheduled":
        return 0
    if (await session.execute(select(exists().where(Trigger.campaign_id == campaign_id)))).scalar():
        return 0
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(state="loading", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    trigger = Trigger(
        public_id=prefixed_ulid("trg"),
        campaign_id=campaign_id,
        kind="schedule",
        state="pending",
        event={},
        idempotency_key=SCHEDULE_KEY,
    )
    session.add(trigger)
    await session.flush()
    await enqueue_materialisation(session, trigger)
    return 1


async def finish_running(db: Database) -> int:
    """Mark running blasts with nothing left to send ``finished``: no pending message, and no
    audience still being materialised (a blast fired again while it runs)."""
    pending = exists().where(Message.campaign_id == Campaign.id, Message.state.in_(PENDING_MESSAGE_STATES))
    loading = exists().where(Trigger.campaign_id == Campaign.id, Trigger.state.in_(("pending", "materialising")))
    async with db.transaction() as session:
        result = await session.execute(
            update(Campaign)
            .where(Campaign.type == "blast", Campaign.state == "running", ~pending, ~loading)
            .values(state="finished", updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def settle_abort(session: AsyncSession, campaign_id: int) -> bool:
    """Complete an abort if no message is in a provider call under a live lease; True if done."""
    now = utcnow()
    live = (
        await session.execute(
            select(Message.id)
            .where(Message.campaign_id == campaign_id, Message.state == "sending", Message.lease_until >= now)
            .limit(1)
        )
    ).first()
    if live is not None:
        return False
    await abort_messages(session, campaign_id=campaign_id, states=PENDING_MESSAGE_STATES, now=now)
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.state == "aborting")
        .values(state="aborted", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return True


async def settle_aborts(db: Database) -> int:
    async with db.transaction(readonly=True) as session:
        rows = (
            await session.execute(
                select(Campaign.id, Campaign.project_id).where(Campaign.state == "aborting").limit(BATCH)
            )
        ).all()
    done = 0
    for campaign_id, project_id in rows:
        async with db.transaction(project_id=int(project_id)) as session:
            done += int(await settle_abort(session, int(campaign_id)))
    return done


async def campaign_lifecycle(db: Database) -> object:
    """The scheduler duty: promote due blasts, finish drained ones, settle aborts."""
    return (await promote_scheduled(db), await finish_running(db), await settle_aborts(db))
