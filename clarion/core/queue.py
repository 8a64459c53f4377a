"""The generic due-work claimer: every table with ``state``, ``due_at``, ``lease_until`` and
``attempts`` (jobs, messages, webhook deliveries) is claimed through :func:`claim_due`.

PostgreSQL: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …`` so
many workers take disjoint batches without blocking each other. SQLite: the same statement without
``SKIP LOCKED``; its single writer (``BEGIN IMMEDIATE``) serialises claims.
An expired lease makes a claimed row claimable again, which is how a crashed worker's rows are
recovered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import RetryCallState, wait_random_exponential

from clarion.core.sql import dialect_name


async def claim_due(
    session: AsyncSession,
    table: Table,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    ready_state: str = "queued",
    claimed_state: str = "running",
    extra_where: Any = None,
    order_by: Any = None,
) -> list[Any]:
    """Claim up to ``limit`` due rows of ``table``; returns the claimed rows (all columns).

    Two statements, so each is one range of an index on ``(…, state, due_at)``: first the rows
    whose lease expired (a crashed worker's batch; few), then ready rows in ``order_by`` order
    (``due_at`` by default). One ``OR`` of both would make PostgreSQL merge two bitmaps of every
    due row before it could stop at ``limit`` — a cost that grows with the backlog.
    """
    if limit <= 0:
        return []
    c = table.c
    expired = and_(c.state == claimed_state, c.lease_until < now)
    ready = and_(c.state == ready_state, c.due_at <= now)
    rows: list[Any] = []
    for where, order in ((expired, c.lease_until), (ready, order_by if order_by is not None else c.due_at)):
        want = limit - len(rows)
        if want <= 0:
            break
        candidates = select(c.id).where(where)
        if extra_where is not None:
            candidates = candidates.where(extra_where)
        candidates = candidates.order_by(order).limit(want)
        if dialect_name(session) == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        stmt = (
            update(table)
            .where(c.id.in_(candidates.scalar_subquery()))
            .values(state=claimed_state, lease_until=now + lease, attempts=c.attempts + 1)
            .returning(*c)
        )
        result = await session.execute(stmt, execution_options={"synchronize_session": False})
        rows += result.all()
    return rows


def backoff_delay(attempt: int, *, base: float = 2.0, cap: float = 3600.0) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): tenacity's exponential full jitter.

    Our retries are rows with a ``due_at``, not a loop in memory, so we only borrow tenacity's
    wait strategy to compute the delay.
    """
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return float(wait_random_exponential(multiplier=base, max=cap)(state))
