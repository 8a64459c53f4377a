"""Recording what happened to a message. Every producer (the send pipeline, tracking endpoints,
provider callbacks) goes through :func:`record_message_event`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.ids import prefixed_ulid
from clarion.delivery.models import MessageEvent

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


async def record_message_event(
    session: AsyncSession,
    *,
    project_id: int,
    message_id: int,
    campaign_id: int,
    type: str,
    data: dict[str, Any] | None = None,
) -> str:
    """Append one event to a message's history in the caller's transaction; returns its ``evt_`` id."""
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
    await session.flush()
    return public_id
