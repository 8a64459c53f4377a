"""Message events become webhook events (§E3): one place that turns appended `message_events`
rows into outbox rows, in the same transaction.

Lifecycle types are published as ``message.<type>``; protocol observations keep their SPEC
names (``delivery.*``, ``queue.*``, ``incoming-report.*``). The webhook event id is the message
event's own ``evt_`` id, so both histories line up. When the project has no endpoint subscribed
to any of the types, this costs one indexed query and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.delivery.models import Message, Trigger
from clarion.users.models import User
from clarion.webhooks import queries as webhook_queries
from clarion.webhooks.catalogue import EVENT_TYPES
from clarion.webhooks.outbox import OutgoingEvent, publish_events

LIFECYCLE = {
    "queued",
    "sent",
    "delivered",
    "bounced",
    "opened",
    "clicked",
    "failed",
    "complained",
    "unsubscribed",
    "skipped",
}


@dataclass(frozen=True)
class AppendedEvent:
    public_id: str
    project_id: int
    message_id: int
    type: str
    data: dict[str, Any] | None
    created_at: datetime


def webhook_type(message_event_type: str) -> str | None:
    name = f"message.{message_event_type}" if message_event_type in LIFECYCLE else message_event_type
    return name if name in EVENT_TYPES else None


async def fan_out(session: AsyncSession, events: Iterable[AppendedEvent]) -> int:
    """Publish webhook events for ``events``; returns how many were published."""
    by_project: dict[int, list[AppendedEvent]] = defaultdict(list)
    for event in events:
        by_project[event.project_id].append(event)
    published = 0
    for project_id, items in by_project.items():
        endpoints = await webhook_queries.active_subscriptions(session, project_id)
        subscribed = set().union(*(types for _, types in endpoints)) if endpoints else set()
        wanted = [(e, t) for e in items if (t := webhook_type(e.type)) is not None and t in subscribed]
        if not wanted:
            continue
        info = await _message_info(session, {e.message_id for e, _ in wanted})
        outgoing = []
        for event, type_ in wanted:
            base = info.get(event.message_id)
            if base is None:
                continue
            extra = event.data or {}
            data = {
                **base,
                "reason": extra.get("reason"),
                "url": extra.get("url"),
            }
            if extra.get("provider_message_id"):
                data["provider_message_id"] = extra["provider_message_id"]
            outgoing.append(
                OutgoingEvent(event_type=type_, data=data, occurred_at=event.created_at, id=event.public_id)
            )
        await publish_events(session, project_id=project_id, events=outgoing)
        published += len(outgoing)
    return published


async def _message_info(session: AsyncSession, message_ids: set[int]) -> dict[int, dict[str, Any]]:
    rows = (
        await session.execute(
            select(
                Message.id,
                Message.public_id,
                Trigger.public_id,
                Message.campaign_id,
                Message.channel,
                Message.provider_id,
                Message.provider_message_id,
                User.id,
                User.external_id,
                User.anonymous_id,
                User.email,
            )
            .join(Trigger, Trigger.id == Message.trigger_id)
            .outerjoin(User, User.id == Message.user_id)
            .where(Message.id.in_(message_ids))
        )
    ).all()
    return {
        mid: {
            "message_id": public_id,
            "trigger_id": trigger_public_id,
            "campaign_id": campaign_id,
            "channel": channel,
            "provider_id": provider_id,
            "provider_message_id": provider_message_id,
            "user": {"id": uid, "external_id": external_id, "anonymous_id": anonymous_id, "email": email},
        }
        for (
            mid,
            public_id,
            trigger_public_id,
            campaign_id,
            channel,
            provider_id,
            provider_message_id,
            uid,
            external_id,
            anonymous_id,
            email,
        ) in rows
    }
