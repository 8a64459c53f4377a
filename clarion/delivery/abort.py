"""Stopping messages: a message moved to ``aborted`` gets its ``aborted`` message event in the
same transaction, like every other state change of the ledger.

Used by a campaign's abort (its messages not yet handed to a provider), by the settling of an
abort (whatever is still pending once no provider call is in flight) and by the send loop (a
claimed batch whose campaign was stopped before the provider call). The work goes in chunks of
:data:`ABORT_CHUNK` rows, so aborting a campaign of any size holds a bounded number of ids. The
``aborted`` event is part of the message's timeline (`GET /messages/{id}`); it is not one of the
contract's webhook event types, so it is not fanned out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, literal, null, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from clarion.core.sql import among
from clarion.delivery.ids_sql import prefixed_id_sql
from clarion.delivery.models import MESSAGE_EVENTS, MESSAGES

ABORT_CHUNK = 5000
# The first number of an `aborted` event's id (`evt_<time><kind><message id>`): the queued event
# appended at materialisation uses 0, so the two never collide, and a message is aborted once.
ABORTED_EVENT_KIND = 1


async def abort_messages(
    session: AsyncSession,
    *,
    states: Iterable[str],
    now: datetime,
    campaign_id: int | None = None,
    ids: Iterable[int] | None = None,
) -> int:
    """Move the messages of ``campaign_id`` (or the messages ``ids``) that are in one of
    ``states`` to ``aborted``, each with its ``aborted`` event; returns how many moved. A row that
    left ``states`` meanwhile (a worker claimed or sent it) is left alone."""
    if (campaign_id is None) == (ids is None):
        raise ValueError("abort_messages needs a campaign or message ids")
    in_states = MESSAGES.c.state.in_(list(states))
    aborted = 0
    if ids is not None:
        id_list = list(ids)
        for start in range(0, len(id_list), ABORT_CHUNK):
            aborted += await _abort_chunk(session, id_list[start : start + ABORT_CHUNK], in_states, now)
        return aborted
    while True:
        chunk = (
            (
                await session.execute(
                    select(MESSAGES.c.id).where(MESSAGES.c.campaign_id == campaign_id, in_states).limit(ABORT_CHUNK)
                )
            )
            .scalars()
            .all()
        )
        if not chunk:
            return aborted
        aborted += await _abort_chunk(session, [int(i) for i in chunk], in_states, now)


async def _abort_chunk(session: AsyncSession, ids: list[int], in_states: ColumnElement[bool], now: datetime) -> int:
    moved = (
        (
            await session.execute(
                update(MESSAGES)
                .where(among(session, MESSAGES.c.id, ids), in_states)
                .values(state="aborted", lease_until=None, updated_at=now)
                .returning(MESSAGES.c.id)
            )
        )
        .scalars()
        .all()
    )
    if not moved:
        return 0
    await session.execute(
        insert(MESSAGE_EVENTS).from_select(
            ["public_id", "project_id", "message_id", "campaign_id", "type", "data", "created_at"],
            select(
                prefixed_id_sql("evt", literal(ABORTED_EVENT_KIND), MESSAGES.c.id),
                MESSAGES.c.project_id,
                MESSAGES.c.id,
                MESSAGES.c.campaign_id,
                literal("aborted"),
                null(),
                literal(now, type_=MESSAGE_EVENTS.c.created_at.type),
            ).where(among(session, MESSAGES.c.id, [int(i) for i in moved])),
        )
    )
    return len(moved)
