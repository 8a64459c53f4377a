"""The send loop: claim due messages by campaign, render them as a batch, hand them to the
campaign's provider, record outcomes (architecture §2.3–2.7).

- Rate limits apply at claim time: a worker takes only as many rows as the provider's bucket
  allows (`ProviderRateLimiter`, shared through Redis when configured), so a throttled message
  simply stays ``queued`` — it never bounces between workers.
- A claimed row is ``sending`` under a lease; a crashed worker's rows are claimed again when the
  lease expires. Messages carry a deterministic Message-ID, so the duplicate window is the time
  between the provider accepting a batch and our commit of its outcome.
- The campaign state is read again just before the provider call: an abort committed before
  that point stops the batch. If the batch's leases have less than half their length left
  (a slow render), the rows still held are renewed in one statement; a row whose lease ran out
  meanwhile (and was claimed by another worker) is dropped from the batch.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, func, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.queue import claim_due
from clarion.core.sql import among
from clarion.dataschema.service import classified_user_paths
from clarion.delivery.abort import abort_messages
from clarion.delivery.models import MESSAGES, Trigger
from clarion.delivery.outcomes import SentMessage, record_outcomes
from clarion.orgs.models import Project
from clarion.providers.base import OutgoingMessage, SendResult
from clarion.providers.factory import get_sender
from clarion.providers.models import Provider
from clarion.providers.ratelimit import ProviderRateLimiter
from clarion.rendering.render import ProjectInfo, Recipient, RenderFailure, RenderSettings, render_batch
from clarion.templates.models import Template
from clarion.users.models import User

log = logging.getLogger("clarion.delivery")

USERS: Table = User.__table__  # type: ignore[assignment]
MESSAGES_TOPIC = "messages"
STOPPED_STATES = ("aborting", "aborted")
USER_FIELDS = ("id", "external_id", "anonymous_id", "email", "phone", "timezone", "locale")


class MessageSource:
    topic = MESSAGES_TOPIC

    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 200,
        lease_seconds: int | None = None,
        limiter: ProviderRateLimiter | None = None,
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        # A pass that sent fewer than a quarter batch waits this long before the next (Worker).
        self.linger_below = max(1, batch_size // 4)
        self.linger_seconds = db.settings.send_linger_ms / 1000
        settings = db.settings
        self.lease = timedelta(seconds=lease_seconds if lease_seconds is not None else settings.send_lease_seconds)
        self.retry_base = settings.send_retry_base_seconds
        self.retry_cap = settings.send_retry_cap_seconds
        self.max_attempts = settings.send_max_attempts
        self.limiter = limiter or ProviderRateLimiter.from_settings(db.settings)
        self.render_settings = RenderSettings(settings.base_url, settings.resolved_secret_key())

    async def _due_campaigns(self) -> list[tuple[int, int, int, int, str]]:
        """(campaign, provider, due rows ≤ probe, rate_limit, rate_interval) with due work.

        Probes at most a few thousand due rows so it stays cheap on huge sends.
        """
        now = utcnow()
        cap = self.batch_size * 20
        expired = (MESSAGES.c.state == "sending") & (MESSAGES.c.lease_until < now)
        ready = (MESSAGES.c.state == "queued") & (MESSAGES.c.due_at <= now)
        # Two bounded index ranges (ix_messages_due), not one OR: see `claim_due`.
        parts = [select(MESSAGES.c.campaign_id).where(w).limit(cap).subquery() for w in (expired, ready)]
        probe = union_all(*(select(p.c.campaign_id) for p in parts)).subquery()
        stmt = (
            select(probe.c.campaign_id, Campaign.provider_id, func.count(), Provider.rate_limit, Provider.rate_interval)
            .join(Campaign, Campaign.id == probe.c.campaign_id)
            .join(Provider, Provider.id == Campaign.provider_id)
            .group_by(probe.c.campaign_id, Campaign.provider_id, Provider.rate_limit, Provider.rate_interval)
        )
        async with self.db.transaction(readonly=True) as session:
            rows = (await session.execute(stmt)).all()
        return [(int(a), int(b), int(c), int(d), str(e)) for a, b, c, d, e in rows]

    async def run_once(self) -> int:
        handled = 0
        for campaign_id, provider_id, due, rate_limit, rate_interval in await self._due_campaigns():
            want = min(self.batch_size, int(due))
            allowed = await self.limiter.acquire_up_to(
                provider_id, want, rate_limit=rate_limit, rate_interval=rate_interval
            )
            if allowed <= 0:
                continue
            async with self.db.transaction() as session:
                rows = await claim_due(
                    session,
                    MESSAGES,
                    now=utcnow(),
                    limit=allowed,
                    lease=self.lease,
                    ready_state="queued",
                    claimed_state="sending",
                    extra_where=MESSAGES.c.campaign_id == campaign_id,
                )
            if rows:
                handled += len(rows)
                await self.send_claimed(campaign_id, rows)
        return handled

    async def send_claimed(self, campaign_id: int, rows: list[Any]) -> None:
        project_id = int(rows[0].project_id)
        async with self.db.transaction(project_id=project_id, readonly=True) as session:
            campaign = (await session.execute(select(Campaign).where(Campaign.id == campaign_id))).scalar_one()
            if campaign.state in STOPPED_STATES or campaign.archived_at is not None:
                await self._abort_rows(rows)
                return
            project = (await session.execute(select(Project).where(Project.id == project_id))).scalar_one()
            provider = (await session.execute(select(Provider).where(Provider.id == campaign.provider_id))).scalar_one()
            templates = list(
                (await session.execute(select(Template).where(Template.campaign_id == campaign_id))).scalars()
            )
            users = await _users(session, project_id, [r.user_id for r in rows])
            triggers = await _triggers(session, {r.trigger_id for r in rows})
            classified = await classified_user_paths(session, project_id)
        recipients = []
        for row in rows:
            context = row.context or {}
            user = dict(users.get(row.user_id) or {"id": row.user_id, "data": {}})
            attributes = context.get("attributes") or {}
            if attributes:
                user["data"] = {**(user.get("data") or {}), **attributes}
            trigger_public_id, trigger_event = triggers.get(row.trigger_id, (None, {}))
            event = context.get("event") if context.get("event") is not None else trigger_event
            recipients.append(
                Recipient(
                    message_id=row.public_id,
                    user=user,
                    event=event or {},
                    context={"campaign_id": campaign_id, "trigger_id": trigger_public_id},
                )
            )
        rendered = render_batch(
            templates,
            project=ProjectInfo(
                id=project.id,
                name=project.name,
                locale=project.locale,
                timezone=project.timezone,
                link_wrap_email=bool(project.link_wrap_email),
                track_opens_email=bool(project.track_opens_email),
                link_wrap_push=bool(project.link_wrap_push),
            ),
            settings=self.render_settings,
            recipients=recipients,
            classified=classified,
            subscription_id=campaign.subscription_id,
        )
        by_id = {row.public_id: row for row in rows}
        outcomes: list[tuple[SentMessage, SendResult]] = []
        outgoing: list[OutgoingMessage] = []
        for item in rendered:
            row = by_id[item.message_id]
            if isinstance(item, RenderFailure):
                outcomes.append(
                    (_sent(row, ""), SendResult(item.message_id, "failed", error=f"{item.reason}: {item.detail}"))
                )
            else:
                outgoing.append(item)
        if outgoing:
            owned = await self._take_for_sending(campaign_id, rows)
            if owned is None:
                await self._abort_rows([by_id[m.message_id] for m in outgoing])
                outgoing = []
            else:
                # A row whose lease ran out while this batch rendered belongs to whichever worker
                # claimed it since: leave it alone, so it is not sent twice.
                outgoing = [m for m in outgoing if by_id[m.message_id].id in owned]
                outcomes = [o for o in outcomes if o[0].id in owned]
        if outgoing:
            sender = get_sender(self.db, provider)
            try:
                results = await sender.send_batch(outgoing)
            finally:
                await sender.close()
            for message, result in zip(outgoing, results, strict=True):
                outcomes.append((_sent(by_id[message.message_id], message.to), result))
        if outcomes:
            async with self.db.transaction() as session:
                await record_outcomes(
                    session,
                    outcomes,
                    now=utcnow(),
                    provider_id=provider.id,
                    retry_base=self.retry_base,
                    retry_cap=self.retry_cap,
                    max_attempts=self.max_attempts,
                )

    async def _take_for_sending(self, campaign_id: int, rows: list[Any]) -> set[int] | None:
        """Just before the provider call: ``None`` if the campaign was stopped; otherwise the ids
        of the rows this worker still holds.

        A row is claimed again only once its lease has expired, so while every row's lease has
        at least half its length to run (the usual case: the batch was claimed moments ago) all
        of them are still ours and only the campaign's state is read. Otherwise (a slow render)
        the leases of the rows still ours are renewed in one statement, which also tells which
        they are (a row claimed again by another worker no longer has our ``lease_until``).
        Workers' clocks must agree to within half a lease (``CLARION_SEND_LEASE_SECONDS``)."""
        async with self.db.transaction(readonly=True) as session:
            state = (await session.execute(select(Campaign.state).where(Campaign.id == campaign_id))).scalar_one()
        if state in STOPPED_STATES:
            return None
        now = utcnow()
        if min(r.lease_until for r in rows) - now >= self.lease / 2:
            return {int(r.id) for r in rows}
        async with self.db.transaction() as session:
            renewed = await session.execute(
                update(MESSAGES)
                .where(
                    among(session, MESSAGES.c.id, [r.id for r in rows]),
                    MESSAGES.c.state == "sending",
                    among(session, MESSAGES.c.lease_until, {r.lease_until for r in rows}),
                )
                .values(lease_until=now + self.lease)
                .returning(MESSAGES.c.id)
            )
            return {int(i) for i in renewed.scalars()}

    async def _abort_rows(self, rows: list[Any]) -> None:
        async with self.db.transaction() as session:
            await abort_messages(session, ids=[int(r.id) for r in rows], states=("sending",), now=utcnow())


def _sent(row: Any, address: str) -> SentMessage:
    return SentMessage(
        id=row.id,
        public_id=row.public_id,
        project_id=row.project_id,
        campaign_id=row.campaign_id,
        channel=row.channel,
        attempts=row.attempts,
        address=address,
    )


async def _users(session: AsyncSession, project_id: int, ids: list[int]) -> dict[int, dict[str, Any]]:
    columns = [USERS.c[f] for f in USER_FIELDS]
    where = (among(session, USERS.c.id, ids), USERS.c.project_id == project_id)
    rows = (await session.execute(select(*columns, USERS.c.data).where(*where))).all()
    return {row.id: {**{f: row[i] for i, f in enumerate(USER_FIELDS)}, "data": row.data or {}} for row in rows}


async def _triggers(session: AsyncSession, trigger_ids: set[int]) -> dict[int, tuple[str, dict[str, Any]]]:
    rows = (
        await session.execute(
            select(Trigger.id, Trigger.public_id, Trigger.event).where(among(session, Trigger.id, trigger_ids))
        )
    ).all()
    return {tid: (public_id, event or {}) for tid, public_id, event in rows}
