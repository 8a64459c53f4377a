"""Recording what happened to a message. Every producer (the send pipeline, tracking endpoints,
provider callbacks) goes through :func:`record_message_event`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign
from clarion.core.clock import utcnow
from clarion.core.ids import prefixed_ulid
from clarion.delivery.models import MESSAGES, MessageEvent
from clarion.delivery.webhook_fanout import AppendedEvent, fan_out

# The message lifecycle catalogue (§E3): `message.<type>` on the wire.
MESSAGE_EVENT_TYPES = (
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
)
_UNIQUE_COUNTERS = {"opened": "opens", "clicked": "clicks"}


async def record_message_event(
    session: AsyncSession,
    *,
    project_id: int,
    message_id: int,
    campaign_id: int,
    type: str,
    data: dict[str, Any] | None = None,
) -> str:
    """Append one event to a message's history in the caller's transaction; returns its ``evt_`` id.

    The first ``opened`` / ``clicked`` event of a message also bumps the campaign's ``opens`` /
    ``clicks`` counter (unique per message, also under concurrent events: the message row is
    locked first), in the same transaction.
    """
    counter = _UNIQUE_COUNTERS.get(type)
    first = False
    if counter is not None:
        # One message's first open/click is decided under its row lock: concurrent opens of the
        # same message (a prefetching mail client) take turns, so the counter moves once.
        await session.execute(select(MESSAGES.c.id).where(MESSAGES.c.id == message_id).with_for_update())
        seen = await session.execute(
            select(MessageEvent.id).where(MessageEvent.message_id == message_id, MessageEvent.type == type).limit(1)
        )
        first = seen.first() is None
    public_id = prefixed_ulid("evt")
    session.add(
        MessageEvent(
            public_id=public_id,
            project_id=project_id,
            message_id=message_id,
            campaign_id=campaign_id,
            type=type,
            data=data,
        )
    )
    await fan_out(session, [AppendedEvent(public_id, project_id, message_id, type, data, utcnow())])
    if counter is not None and first:
        column = getattr(Campaign, counter)
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.project_id == project_id)
            .values({counter: column + 1})
        )
    await session.flush()
    return public_id
