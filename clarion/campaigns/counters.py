"""Campaign ``total``/``skipped`` counts appended as deltas and folded into the campaign row.

A one-user trigger adds one message to its campaign; thousands a second may fire at the same
campaign. Updating the campaign row in each of those statements would make every trigger wait for
the previous one's commit (a row lock held to the end of its transaction). The hot path appends a
:class:`~clarion.campaigns.models.CampaignCounterDelta` instead, in the same statement as the
message, and the scheduler's ``fold-campaign-counters`` duty moves deltas into the row: one
statement deletes a batch of deltas and returns exactly the rows it deleted, and the same
transaction adds them to their campaigns, so a delta is counted once whichever the reader sees.
Readers (:func:`pending_counts`) add the deltas not yet folded, so the API's counters are exact.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign, CampaignCounterDelta
from clarion.core.db import Database

DELTAS: Table = CampaignCounterDelta.__table__  # type: ignore[assignment]
FOLD_BATCH = 5000
FOLD_ROUNDS = 20  # at most this many batches per run; the next run continues


async def pending_counts(session: AsyncSession, campaign_ids: list[int]) -> dict[int, tuple[int, int]]:
    """``{campaign_id: (total, skipped)}`` appended and not yet folded (uses the campaign_id index)."""
    if not campaign_ids:
        return {}
    rows = await session.execute(
        select(DELTAS.c.campaign_id, func.sum(DELTAS.c.total), func.sum(DELTAS.c.skipped))
        .where(DELTAS.c.campaign_id.in_(campaign_ids))
        .group_by(DELTAS.c.campaign_id)
    )
    return {int(cid): (int(total or 0), int(skipped or 0)) for cid, total, skipped in rows}


async def fold_batch(session: AsyncSession, limit: int = FOLD_BATCH) -> int:
    """Fold up to ``limit`` deltas into their campaigns; returns how many were folded."""
    oldest = select(DELTAS.c.id).order_by(DELTAS.c.id).limit(limit).scalar_subquery()
    deleted = (
        await session.execute(
            delete(DELTAS)
            .where(DELTAS.c.id.in_(oldest))
            .returning(DELTAS.c.campaign_id, DELTAS.c.total, DELTAS.c.skipped)
        )
    ).all()
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for campaign_id, total, skipped in deleted:
        sums[int(campaign_id)][0] += int(total)
        sums[int(campaign_id)][1] += int(skipped)
    for campaign_id, (total, skipped) in sorted(sums.items()):  # one lock order for every folder
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(total=Campaign.total + total, skipped=Campaign.skipped + skipped)
            .execution_options(synchronize_session=False)
        )
    return len(deleted)


async def fold_counter_deltas(db: Database) -> int:
    """The scheduler duty: fold every delta appended so far (bounded per run)."""
    folded = 0
    for _ in range(FOLD_ROUNDS):
        async with db.transaction() as session:
            count = await fold_batch(session)
        folded += count
        if count < FOLD_BATCH:
            break
    return folded


async def forget_campaign(session: AsyncSession, campaign_id: int) -> None:
    """A deleted campaign's deltas go with it."""
    await session.execute(delete(DELTAS).where(DELTAS.c.campaign_id == campaign_id))
