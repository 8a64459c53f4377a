"""Audience triggers: the campaign's lists (minus exclusions) become message rows, in SQL, in
chunks of users ordered by id — never by loading users into Python.

Each chunk is one transaction: ``INSERT INTO messages … SELECT`` (eligible users ``queued``, the
rest ``skipped`` with the reason from `clarion.subscriptions.eligibility`), the matching
``INSERT INTO message_events … SELECT``, and the counters. ``ON CONFLICT DO NOTHING`` on
(campaign, trigger, user) makes a re-run after a crash harmless: only the rows a run inserts get
an event and reach the counters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, case, func, insert, literal, null, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.sql import dialect_name, insert_for
from clarion.delivery.ids_sql import prefixed_id_sql
from clarion.delivery.local_time import local_due_sql
from clarion.delivery.models import MESSAGE_EVENTS, MESSAGES, Trigger
from clarion.delivery.webhook_fanout import AppendedEvent, fan_out
from clarion.lists.queries import audience_user_ids
from clarion.orgs.models import Project
from clarion.subscriptions.eligibility import ineligibility_reason
from clarion.users.models import User
from clarion.webhooks import queries as webhook_queries
from clarion.worker.jobs import JobContext, enqueue_job, job_handler

MATERIALISE_JOB = "trigger.materialise"
CHUNK_SIZE = 5000
# How long a materialisation job's lease runs after each committed chunk (a chunk takes seconds).
CHUNK_LEASE_SECONDS = 30.0
USERS: Table = User.__table__  # type: ignore[assignment]


async def enqueue_materialisation(session: AsyncSession, trigger: Trigger) -> None:
    await enqueue_job(session, MATERIALISE_JOB, {"trigger_id": trigger.id}, project_id=trigger.project_id)


async def materialise_chunk(
    session: AsyncSession, campaign: Campaign, trigger: Trigger, after_user_id: int
) -> int | None:
    """Create the messages of the next chunk of users after ``after_user_id``; return the last
    user id of the chunk, or ``None`` when the audience is exhausted."""
    now = utcnow()
    ids = audience_user_ids(campaign.project_id, campaign.list_ids or [], campaign.exclusion_list_ids or []).order_by(
        None
    )
    member_ids = ids.subquery("members")
    chunk = (
        select(member_ids.c.user_id)
        .where(member_ids.c.user_id > after_user_id)
        .order_by(member_ids.c.user_id)
        .limit(CHUNK_SIZE)
        .subquery("chunk")
    )
    bounds = (await session.execute(select(func.max(chunk.c.user_id), func.count()).select_from(chunk))).one()
    last, size = bounds
    if not size:
        return None
    reason = ineligibility_reason(USERS, channel=campaign.channel, subscription_id=campaign.subscription_id)
    due_at = await _due_at_sql(session, campaign, now)
    rows = (
        select(
            prefixed_id_sql("msg", literal(trigger.id), USERS.c.id),
            literal(campaign.project_id),
            literal(campaign.id),
            literal(trigger.id),
            USERS.c.id,
            literal(campaign.channel),
            case((reason.is_(None), literal("queued")), else_=literal("skipped")),
            reason,
            due_at,
            literal(0),
            literal(now, type_=MESSAGES.c.created_at.type),
            literal(now, type_=MESSAGES.c.updated_at.type),
        )
        .select_from(USERS)
        .where(
            USERS.c.project_id == campaign.project_id,
            USERS.c.id > after_user_id,
            USERS.c.id <= last,
            USERS.c.id.in_(select(chunk.c.user_id)),
        )
    )
    columns = [
        "public_id",
        "project_id",
        "campaign_id",
        "trigger_id",
        "user_id",
        "channel",
        "state",
        "skip_reason",
        "due_at",
        "attempts",
        "created_at",
        "updated_at",
    ]
    inserted = (
        await session.execute(
            insert_for(session, MESSAGES)
            .from_select(columns, rows)
            .on_conflict_do_nothing(index_elements=["campaign_id", "trigger_id", "user_id"])
            .returning(MESSAGES.c.id, MESSAGES.c.state)
        )
    ).all()
    # Only the rows this run inserted count and get their first event: a re-run of a chunk
    # (an expired job lease, a retried crash) finds the earlier rows already there.
    if not inserted:
        return int(last)
    in_chunk = MESSAGES.c.id.in_([int(i) for i, _ in inserted])
    await session.execute(
        insert(MESSAGE_EVENTS).from_select(
            ["public_id", "project_id", "message_id", "campaign_id", "type", "data", "created_at"],
            select(
                prefixed_id_sql("evt", literal(0), MESSAGES.c.id),
                MESSAGES.c.project_id,
                MESSAGES.c.id,
                MESSAGES.c.campaign_id,
                MESSAGES.c.state,
                _skip_data(session),
                literal(now, type_=MESSAGE_EVENTS.c.created_at.type),
            ).where(in_chunk),
        )
    )
    if await webhook_queries.active_subscriptions(session, campaign.project_id):
        appended = (
            await session.execute(
                select(
                    MESSAGE_EVENTS.c.public_id,
                    MESSAGE_EVENTS.c.message_id,
                    MESSAGE_EVENTS.c.type,
                    MESSAGE_EVENTS.c.data,
                )
                .join(MESSAGES, MESSAGES.c.id == MESSAGE_EVENTS.c.message_id)
                .where(in_chunk)
            )
        ).all()
        await fan_out(session, [AppendedEvent(p, campaign.project_id, m, t, d, now) for p, m, t, d in appended])
    total = len(inserted)
    skipped = sum(1 for _, state in inserted if state == "skipped")
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(total=Campaign.total + total, skipped=Campaign.skipped + skipped)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Trigger)
        .where(Trigger.id == trigger.id)
        .values(recipients=func.coalesce(Trigger.recipients, 0) + total, skipped=Trigger.skipped + skipped)
        .execution_options(synchronize_session=False)
    )
    return int(last)


async def _due_at_sql(session: AsyncSession, campaign: Campaign, now: datetime) -> ColumnElement[Any]:
    """``now``, or for a blast sent in each user's zone: the wall-clock time ``send_at`` shows in
    the project's zone, read in the user's zone (the project's when the user has none)."""
    if not (campaign.type == "blast" and campaign.send_in_user_timezone and campaign.send_at is not None):
        return literal(now, type_=MESSAGES.c.due_at.type)
    project_zone = (
        await session.execute(select(Project.timezone).where(Project.id == campaign.project_id))
    ).scalar_one() or "UTC"
    wall = campaign.send_at.astimezone(ZoneInfo(project_zone)).replace(tzinfo=None)
    zone = func.coalesce(func.nullif(USERS.c.timezone, ""), literal(project_zone))
    return type_coerce(local_due_sql(session.get_bind().dialect.name, wall, zone, project_zone), MESSAGES.c.due_at.type)


@job_handler(MATERIALISE_JOB)
async def materialise_trigger(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Run the chunks; each commits on its own so sending starts while the rest materialises,
    and renews the job's lease to ``CHUNK_LEASE_SECONDS``. A crashed worker's job is claimed
    again once that short lease runs out and runs the chunks again (inserts are idempotent, so
    only the rows not yet written are added)."""
    trigger_id = int(payload["trigger_id"])
    after = int(payload.get("after_user_id", 0))
    project_id = ctx.project_id
    assert project_id is not None
    while True:
        async with ctx.db.transaction(project_id=project_id) as session:
            trigger = (await session.execute(select(Trigger).where(Trigger.id == trigger_id))).scalar_one_or_none()
            if trigger is None:
                return
            campaign = (await session.execute(select(Campaign).where(Campaign.id == trigger.campaign_id))).scalar_one()
            if campaign.state in ("aborting", "aborted") or campaign.archived_at is not None:
                trigger.state = "aborted"
                return
            if after == 0 and trigger.state == "pending":
                trigger.state = "materialising"
            last = await materialise_chunk(session, campaign, trigger, after)
            # Committed with the chunk: a worker that dies mid-audience hands the job over within
            # CHUNK_LEASE_SECONDS, not after the claim's whole lease (chunks are idempotent).
            await ctx.keep_alive(session, seconds=CHUNK_LEASE_SECONDS)
            if last is None:
                trigger.state = "ready"
                trigger.materialised_at = utcnow()
                if trigger.kind in ("schedule", "audience") and campaign.state == "loading":
                    campaign.state = "running"
                if trigger.recipients is None:
                    trigger.recipients = 0
                return
            after = last


def _skip_data(session: AsyncSession) -> ColumnElement[Any]:
    """A first event's ``data``: ``{"reason": …}`` for a skipped message (as on the per-call and
    one-user paths), null for a queued one; built in SQL, JSON by the database's own function."""
    build = func.jsonb_build_object if dialect_name(session) == "postgresql" else func.json_object
    return case((MESSAGES.c.skip_reason.is_not(None), build(literal("reason"), MESSAGES.c.skip_reason)), else_=null())
