"""Subscription types, users' states on them, and the defaults every project starts with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import not_found
from clarion.core.clock import utcnow
from clarion.core.sql import insert_for
from clarion.subscriptions.models import CHANNELS, SUBSCRIBED, Subscription, UserSubscription

STATES: Table = UserSubscription.__table__  # type: ignore[assignment]

# §E10: one default subscription per channel. Email, text and push are shown to users
# (preference pages, one-click unsubscribe); webhook and in-app are internal.
DEFAULT_SUBSCRIPTIONS = [
    ("Email", "email", True),
    ("Text messages", "text", True),
    ("Push notifications", "push", True),
    ("Webhooks", "webhook", False),
    ("In-app messages", "in_app", False),
]
assert {c for _, c, _ in DEFAULT_SUBSCRIPTIONS} == set(CHANNELS)


async def seed_default_subscriptions(session: AsyncSession, project_id: int) -> None:
    for name, channel, is_public in DEFAULT_SUBSCRIPTIONS:
        session.add(Subscription(project_id=project_id, name=name, channel=channel, is_public=is_public))
    await session.flush()


async def create_subscription(session: AsyncSession, name: str, channel: str, is_public: bool) -> Subscription:
    row = Subscription(name=name, channel=channel, is_public=is_public)
    session.add(row)
    await session.flush()
    return row


async def get_subscription(session: AsyncSession, subscription_id: int, param: str = "subscriptionId") -> Subscription:
    row = (await session.execute(select(Subscription).where(Subscription.id == subscription_id))).scalar_one_or_none()
    if row is None:
        raise not_found("subscription", param)
    return row


async def update_subscription(session: AsyncSession, row: Subscription, name: str, is_public: bool) -> Subscription:
    row.name = name
    row.is_public = is_public
    row.updated_at = utcnow()
    await session.flush()
    return row


async def existing_subscription_ids(session: AsyncSession, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    rows = await session.execute(select(Subscription.id).where(Subscription.id.in_(ids)))
    return {r[0] for r in rows}


async def set_states(session: AsyncSession, project_id: int, user_id: int, states: list[tuple[int, int]]) -> None:
    """Upsert ``(subscription_id, state)`` pairs for one user (same-state writes are no-ops)."""
    if not states:
        return
    now = utcnow()
    final = dict(states)
    rows = [
        {
            "project_id": project_id,
            "user_id": user_id,
            "subscription_id": sid,
            "state": state,
            "created_at": now,
            "updated_at": now,
        }
        for sid, state in sorted(final.items())
    ]
    stmt = insert_for(session, STATES)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "subscription_id"],
        set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
        where=STATES.c.state != stmt.excluded.state,
    )
    await session.execute(stmt, rows)


def user_subscriptions_query(user_id: int) -> Any:
    """Every subscription type of the project with the user's state (no row = subscribed)."""
    return select(Subscription, UserSubscription.state).outerjoin(
        UserSubscription,
        (UserSubscription.subscription_id == Subscription.id) & (UserSubscription.user_id == user_id),
    )


def user_subscription_out(sub: Subscription, state: int | None) -> dict[str, Any]:
    return {
        "subscription_id": sub.id,
        "state": SUBSCRIBED if state is None else state,
        "name": sub.name,
        "channel": sub.channel,
    }
