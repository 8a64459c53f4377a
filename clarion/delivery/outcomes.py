"""Recording what providers said about a batch: one statement per outcome group, message events
appended in the same transaction, campaign counters bumped once per batch.

Outcomes (architecture §2.5):
- accepted → ``sent`` (``delivered`` too when the provider confirms delivery synchronously);
- transient failure → back to ``queued`` with ``due_at`` pushed by exponential backoff with
  jitter, until ``max_attempts``; then ``failed``;
- permanent failure → ``failed``; a recipient rejection → ``bounced``, and the address is
  suppressed on the channel (``hard_bounce``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign
from clarion.core.bulk import insert_rows, update_rows
from clarion.core.ids import prefixed_ulid
from clarion.core.queue import backoff_delay
from clarion.core.sql import insert_for
from clarion.delivery.models import MESSAGE_EVENTS, MESSAGES
from clarion.delivery.webhook_fanout import AppendedEvent, fan_out
from clarion.providers.base import SendResult
from clarion.subscriptions.models import Suppression

DEFAULT_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class SentMessage:
    """A claimed message as the outcome recorder needs it."""

    id: int
    public_id: str
    project_id: int
    campaign_id: int
    channel: str
    attempts: int
    address: str


def _event(msg: SentMessage, type_: str, now: datetime, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "public_id": prefixed_ulid("evt"),
        "project_id": msg.project_id,
        "message_id": msg.id,
        "campaign_id": msg.campaign_id,
        "type": type_,
        "data": data,
        "created_at": now,
    }


async def record_outcomes(
    session: AsyncSession,
    outcomes: list[tuple[SentMessage, SendResult]],
    *,
    now: datetime,
    provider_id: int | None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_base: float = 2.0,
    retry_cap: float = 3600.0,
) -> Counter[str]:
    """Apply a batch of provider results; returns how many messages ended in each state."""
    events: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    per_campaign: dict[int, Counter[str]] = {}
    suppress: list[dict[str, Any]] = []
    # Rows with identical keys go out as one bulk UPDATE per group.
    groups: dict[str, list[dict[str, Any]]] = {}
    for msg, result in outcomes:
        for observation in result.observations:
            events.append(_event(msg, str(observation.get("type", "delivery.observation")), now, observation))
        values: dict[str, Any] = {"id": msg.id, "lease_until": None, "updated_at": now, "provider_id": provider_id}
        data = {"provider_message_id": result.provider_message_id, "reason": result.error}
        state: str
        if result.outcome in ("sent", "delivered"):
            values.update(
                state=result.outcome, sent_at=now, provider_message_id=result.provider_message_id, last_error=None
            )
            events.append(_event(msg, "sent", now, data))
            if result.outcome == "delivered":
                events.append(_event(msg, "delivered", now, data))
            state = result.outcome
        elif result.outcome == "bounced":
            values.update(state="bounced", last_error=result.error)
            events.append(_event(msg, "bounced", now, {**data, "bounce_type": "hard"}))
            suppress.append(
                {"project_id": msg.project_id, "channel": msg.channel, "address": msg.address, "reason": "hard_bounce"}
            )
            state = "bounced"
        elif result.transient and msg.attempts < max_attempts:
            delay = backoff_delay(msg.attempts, base=retry_base, cap=retry_cap)
            values.update(state="queued", due_at=now + timedelta(seconds=delay), last_error=result.error)
            events.append(_event(msg, "queue.rescheduled", now, {**data, "retry_in_seconds": round(delay, 3)}))
            state = "rescheduled"
        else:
            values.update(state="failed", last_error=result.error)
            events.append(_event(msg, "failed", now, data))
            state = "failed"
        groups.setdefault(state, []).append(values)
        counts[state] += 1
        per_campaign.setdefault(msg.campaign_id, Counter())[state] += 1
    for rows in groups.values():
        await update_rows(session, MESSAGES, rows)
    if events:
        await insert_rows(session, MESSAGE_EVENTS, events)
        await fan_out(
            session,
            [
                AppendedEvent(e["public_id"], e["project_id"], e["message_id"], e["type"], e["data"], now)
                for e in events
            ],
        )
    if suppress:
        now_values = [{**row, "created_at": now, "updated_at": now} for row in suppress]
        await session.execute(insert_for(session, Suppression).values(now_values).on_conflict_do_nothing())
    for campaign_id, c in per_campaign.items():
        delivered = c["delivered"]
        bumps = {
            "sent": Campaign.sent + c["sent"] + delivered,
            "delivered": Campaign.delivered + delivered,
            "bounced": Campaign.bounced + c["bounced"],
            "failed": Campaign.failed + c["failed"],
        }
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(**bumps)
            .execution_options(synchronize_session=False)
        )
    return counts
