"""The webhook outbox: the one entry point through which the rest of Clarion emits events.

``publish_event`` (or ``publish_events`` for a batch) runs inside the caller's transaction: the
event row and one delivery row per active endpoint of the project subscribed to that type exist
exactly when the caller's change commits — no event is lost, none is sent for a rolled-back
change. After committing, callers may ``await waker.notify(WEBHOOKS_TOPIC)`` so an idle worker
dispatches at once instead of at its next poll.

The payload is exactly contract §E3::

    {"id": "evt_…", "event_type": …, "timestamp": "<ISO-8601>", "project_id": <int>,
     "data": {"message_id", "trigger_id", "campaign_id", "journey_id", "channel",
              "user": {"id", "external_id", "anonymous_id", "email"},
              "provider_id", "provider_message_id", "reason", "url"}}

Callers pass only the ``data`` fields they know; the rest are null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import utcnow
from clarion.core.ids import prefixed_ulid
from clarion.webhooks import queries
from clarion.webhooks.catalogue import EVENT_TYPES

WEBHOOKS_TOPIC = "webhooks"

Channel = Literal["email", "text", "push", "webhook", "in_app"]


class EventUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    external_id: str | None = None
    anonymous_id: str | None = None
    email: str | None = None


class EventData(BaseModel):
    """The ``data`` object of every webhook event; unknown keys are a programming error."""

    model_config = ConfigDict(extra="forbid")

    message_id: str | None = None
    trigger_id: str | None = None
    campaign_id: int | None = None
    journey_id: int | None = None
    channel: Channel | None = None
    user: EventUser = EventUser()
    provider_id: int | None = None
    provider_message_id: str | None = None
    reason: str | None = None
    url: str | None = None


class InvalidEvent(ValueError):
    """``publish_event`` was called with an unknown event type or malformed data."""


@dataclass
class OutgoingEvent:
    event_type: str
    data: Mapping[str, Any]
    occurred_at: datetime | None = None
    id: str = field(default_factory=lambda: prefixed_ulid("evt"))


def iso_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_payload(project_id: int, event: OutgoingEvent) -> bytes:
    """The exact bytes delivered (and signed) for ``event``."""
    if event.event_type not in EVENT_TYPES:
        raise InvalidEvent(f"unknown webhook event type {event.event_type!r}")
    try:
        data = EventData.model_validate(dict(event.data))
    except ValidationError as exc:
        raise InvalidEvent(f"invalid data for {event.event_type}: {exc}") from exc
    payload = {
        "id": event.id,
        "event_type": event.event_type,
        "timestamp": iso_timestamp(event.occurred_at or utcnow()),
        "project_id": project_id,
        "data": data.model_dump(mode="json"),
    }
    return orjson.dumps(payload)


async def publish_events(
    session: AsyncSession,
    *,
    project_id: int,
    events: Sequence[OutgoingEvent],
) -> list[str]:
    """Record ``events`` for every active endpoint subscribed to them; returns their ``evt_`` ids.

    Three statements per call whatever the batch size: read the project's active endpoints, insert
    the events that have at least one subscriber, insert their deliveries.
    """
    if not events:
        return []
    bodies = [(event, build_payload(project_id, event)) for event in events]
    endpoints = await queries.active_subscriptions(session, project_id)
    if not endpoints:
        return [event.id for event in events]
    now = utcnow()
    event_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []
    for event, body in bodies:
        subscribers = [endpoint_id for endpoint_id, types in endpoints if event.event_type in types]
        if not subscribers:
            continue
        event_rows.append(
            {
                "id": event.id,
                "project_id": project_id,
                "event_type": event.event_type,
                "body": body.decode(),
                "created_at": now,
            }
        )
        for endpoint_id in subscribers:
            delivery_rows.append(
                {
                    "id": prefixed_ulid("whd"),
                    "project_id": project_id,
                    "endpoint_id": endpoint_id,
                    "event_id": event.id,
                    "event_type": event.event_type,
                    "state": "queued",
                    "due_at": now,
                    "attempts": 0,
                    "window_start": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    await queries.insert_events(session, event_rows)
    await queries.insert_deliveries(session, delivery_rows)
    return [event.id for event in events]


async def publish_event(
    session: AsyncSession,
    *,
    project_id: int,
    event_type: str,
    data: Mapping[str, Any],
    occurred_at: datetime | None = None,
) -> str:
    """Record one event (see the module docstring); returns its ``evt_`` id."""
    event = OutgoingEvent(event_type=event_type, data=data, occurred_at=occurred_at)
    await publish_events(session, project_id=project_id, events=[event])
    return event.id
