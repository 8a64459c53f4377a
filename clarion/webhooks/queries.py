"""The webhook hot-path SQL, in one place. Core statements on ``Table`` objects bypass the tenancy
layer, so each one that touches a single project filters ``project_id`` itself; the worker's
statements address rows by primary key across projects on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Table, bindparam, delete, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.queue import claim_due
from clarion.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[assignment]
EVENTS: Table = WebhookEvent.__table__  # type: ignore[assignment]
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[assignment]
ATTEMPTS: Table = WebhookAttempt.__table__  # type: ignore[assignment]


async def active_subscriptions(session: AsyncSession, project_id: int) -> list[tuple[int, frozenset[str]]]:
    """(endpoint id, subscribed types) of the project's active endpoints.

    Uses ix_webhook_endpoints_project_id; a project has a handful of endpoints, so matching types
    in Python beats a per-dialect JSON containment query.
    """
    rows = await session.execute(
        select(ENDPOINTS.c.id, ENDPOINTS.c.event_types).where(
            ENDPOINTS.c.project_id == project_id, ENDPOINTS.c.status == "active"
        )
    )
    return [(int(r.id), frozenset(r.event_types or ())) for r in rows]


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(EVENTS), rows)


async def insert_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(DELIVERIES), rows)


async def claim_due_deliveries(session: AsyncSession, *, now: datetime, limit: int, lease: timedelta) -> list[Row[Any]]:
    """Claim due deliveries of active endpoints (ix_webhook_deliveries_due: state, due_at)."""
    active = select(ENDPOINTS.c.id).where(ENDPOINTS.c.status == "active")
    return await claim_due(
        session,
        DELIVERIES,
        now=now,
        limit=limit,
        lease=lease,
        ready_state="queued",
        claimed_state="running",
        extra_where=DELIVERIES.c.endpoint_id.in_(active.scalar_subquery()),
    )


async def event_bodies(session: AsyncSession, event_ids: Iterable[str]) -> dict[str, str]:
    ids = list(set(event_ids))
    rows = await session.execute(select(EVENTS.c.id, EVENTS.c.body).where(EVENTS.c.id.in_(ids)))
    return {r.id: r.body for r in rows}


async def endpoints_by_id(session: AsyncSession, endpoint_ids: Iterable[int]) -> dict[int, Row[Any]]:
    ids = list(set(endpoint_ids))
    rows = await session.execute(select(ENDPOINTS).where(ENDPOINTS.c.id.in_(ids)))
    return {int(r.id): r for r in rows}


async def existing_deliveries(session: AsyncSession, delivery_ids: Iterable[str]) -> set[str]:
    """Which of ``delivery_ids`` still exist (their endpoint may have been deleted meanwhile)."""
    ids = list(set(delivery_ids))
    rows = await session.execute(select(DELIVERIES.c.id).where(DELIVERIES.c.id.in_(ids)))
    return set(rows.scalars())


async def insert_attempts(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One executemany for a whole batch: the statement is compiled once and cached (a multi-row
    ``VALUES`` list would be compiled anew for every batch, which costs more than it saves)."""
    if rows:
        await session.execute(insert(ATTEMPTS), rows)


async def mark_succeeded(
    session: AsyncSession, delivery_ids: Sequence[str], *, status_code: int, now: datetime
) -> None:
    """One UPDATE for every delivery of a batch acknowledged with ``status_code``; only rows still
    ``running`` (ours) change."""
    if delivery_ids:
        await session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(delivery_ids), DELIVERIES.c.state == "running")
            .values(
                state="succeeded",
                lease_until=None,
                last_status_code=status_code,
                last_error=None,
                completed_at=now,
                updated_at=now,
            )
        )


async def release_claimed(session: AsyncSession, delivery_ids: Sequence[str], now: datetime, *, state: str) -> None:
    """Give back claimed deliveries that were not attempted (``state`` queued or held), undoing
    the claim's attempt count."""
    if delivery_ids:
        await session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(delivery_ids), DELIVERIES.c.state == "running")
            .values(state=state, lease_until=None, attempts=DELIVERIES.c.attempts - 1, updated_at=now)
        )


_UPDATE_DELIVERY = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("b_id"), DELIVERIES.c.state == "running")
    .values(
        state=bindparam("b_state"),
        due_at=bindparam("b_due_at"),
        lease_until=None,
        last_status_code=bindparam("b_status_code"),
        last_error=bindparam("b_error"),
        completed_at=bindparam("b_completed_at"),
        updated_at=bindparam("b_now"),
    )
)


async def record_delivery_outcomes(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One executemany for a whole batch; only rows still ``running`` (ours) change."""
    if rows:
        await session.execute(_UPDATE_DELIVERY, rows)


async def clear_failing(session: AsyncSession, endpoint_ids: Sequence[int]) -> None:
    if endpoint_ids:
        await session.execute(
            update(ENDPOINTS)
            .where(ENDPOINTS.c.id.in_(endpoint_ids), ENDPOINTS.c.failing_since.is_not(None))
            .values(failing_since=None)
        )


async def mark_failing(session: AsyncSession, endpoint_ids: Sequence[int], now: datetime) -> None:
    if endpoint_ids:
        await session.execute(
            update(ENDPOINTS)
            .where(ENDPOINTS.c.id.in_(endpoint_ids), ENDPOINTS.c.failing_since.is_(None))
            .values(failing_since=now)
        )


async def disable_endpoints(
    session: AsyncSession, endpoint_ids: Sequence[int], *, reason: str, now: datetime, failing_before: datetime | None
) -> list[int]:
    """Disable the active ones among ``endpoint_ids`` (those failing since ``failing_before`` if
    given) and hold their queued deliveries; returns the ids disabled."""
    if not endpoint_ids:
        return []
    stmt = update(ENDPOINTS).where(ENDPOINTS.c.id.in_(endpoint_ids), ENDPOINTS.c.status == "active")
    if failing_before is not None:
        stmt = stmt.where(ENDPOINTS.c.failing_since <= failing_before)
    result = await session.execute(
        stmt.values(status="disabled", disabled_reason=reason, updated_at=now).returning(ENDPOINTS.c.id)
    )
    disabled = [int(i) for i in result.scalars()]
    await hold_deliveries(session, disabled, now)
    return disabled


async def hold_deliveries(session: AsyncSession, endpoint_ids: Sequence[int], now: datetime) -> None:
    """Park queued deliveries of endpoints that stopped being active (ix_webhook_deliveries_endpoint)."""
    if endpoint_ids:
        await session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.endpoint_id.in_(endpoint_ids), DELIVERIES.c.state == "queued")
            .values(state="held", updated_at=now)
        )


async def endpoint_statuses(session: AsyncSession, endpoint_ids: Iterable[int]) -> dict[int, str]:
    ids = list(set(endpoint_ids))
    if not ids:
        return {}
    rows = await session.execute(select(ENDPOINTS.c.id, ENDPOINTS.c.status).where(ENDPOINTS.c.id.in_(ids)))
    return {int(r.id): str(r.status) for r in rows}


async def release_held(
    session: AsyncSession, *, project_id: int, endpoint_id: int, now: datetime, window: timedelta
) -> None:
    """On re-enabling: deliveries still inside their retry window are due now, the rest fail."""
    base = update(DELIVERIES).where(
        DELIVERIES.c.project_id == project_id,
        DELIVERIES.c.endpoint_id == endpoint_id,
        DELIVERIES.c.state == "held",
    )
    await session.execute(
        base.where(DELIVERIES.c.window_start > now - window).values(state="queued", due_at=now, updated_at=now)
    )
    await session.execute(
        base.where(DELIVERIES.c.window_start <= now - window).values(
            state="failed",
            completed_at=now,
            updated_at=now,
            last_error="retry window ended while the endpoint was not active",
        )
    )


async def purge_finished(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished deliveries completed before ``before`` (attempts cascade),
    then events older than ``before`` that no delivery references any more."""
    doomed = (
        select(DELIVERIES.c.id)
        .where(DELIVERIES.c.state.in_(("succeeded", "failed")), DELIVERIES.c.completed_at < before)
        .limit(limit)
    )
    result = await session.execute(delete(DELIVERIES).where(DELIVERIES.c.id.in_(doomed.scalar_subquery())))
    orphans = (
        select(EVENTS.c.id)
        .where(EVENTS.c.created_at < before, ~exists().where(DELIVERIES.c.event_id == EVENTS.c.id))
        .limit(limit)
    )
    await session.execute(delete(EVENTS).where(EVENTS.c.id.in_(orphans.scalar_subquery())))
    return int(getattr(result, "rowcount", 0) or 0)
