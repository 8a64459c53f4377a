"""What the tracking endpoints change: message events, subscription states."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from clarion.core.db import Database
from clarion.delivery.events import record_message_event
from clarion.delivery.models import Message
from clarion.subscriptions.models import SUBSCRIBED, UNSUBSCRIBED, Subscription, UserSubscription
from clarion.users.models import User


async def record(db: Database, project_id: int, message_public_id: Any, type: str, data: dict[str, Any] | None) -> None:
    """Record an open/click on the message the token names (tokens of proofs name no message)."""
    if not isinstance(message_public_id, str):
        return
    async with db.transaction(project_id=project_id) as session:
        message = (
            await session.execute(select(Message).where(Message.public_id == message_public_id))
        ).scalar_one_or_none()
        if message is None:
            return
        await record_message_event(
            session,
            project_id=project_id,
            message_id=message.id,
            campaign_id=message.campaign_id,
            type=type,
            data=data,
        )


async def subscription_name(db: Database, project_id: int, subscription_id: Any) -> str | None:
    if not isinstance(subscription_id, int):
        return None
    async with db.transaction(project_id=project_id, readonly=True) as session:
        name = (
            await session.execute(select(Subscription.name).where(Subscription.id == subscription_id))
        ).scalar_one_or_none()
    return None if name is None else str(name)


async def _set_state(session: Any, user_id: int, subscription_id: int, state: int) -> bool:
    """Set one user's state; returns whether it changed (same-state toggles are no-ops)."""
    row = (
        await session.execute(
            select(UserSubscription).where(
                UserSubscription.user_id == user_id, UserSubscription.subscription_id == subscription_id
            )
        )
    ).scalar_one_or_none()
    if row is None:
        session.add(UserSubscription(user_id=user_id, subscription_id=subscription_id, state=state))
        await session.flush()
        return True
    if row.state == state:
        return False
    row.state = state
    await session.flush()
    return True


async def unsubscribe(db: Database, payload: dict[str, Any]) -> None:
    """State 0 on the token's subscription for the token's user, and an ``unsubscribed`` event."""
    project_id, user_id, subscription_id = payload["p"], payload.get("u"), payload.get("s")
    async with db.transaction(project_id=project_id) as session:
        if isinstance(user_id, int) and isinstance(subscription_id, int):
            user = (await session.execute(select(User.id).where(User.id == user_id))).first()
            sub = (await session.execute(select(Subscription.id).where(Subscription.id == subscription_id))).first()
            if user is not None and sub is not None:
                await _set_state(session, user_id, subscription_id, UNSUBSCRIBED)
        public_id = payload.get("m")
        if isinstance(public_id, str):
            message = (
                await session.execute(select(Message).where(Message.public_id == public_id))
            ).scalar_one_or_none()
            if message is not None:
                await record_message_event(
                    session,
                    project_id=project_id,
                    message_id=message.id,
                    campaign_id=message.campaign_id,
                    type="unsubscribed",
                    data={"subscription_id": subscription_id},
                )


async def preferences(db: Database, project_id: int, user_id: Any) -> list[tuple[int, str, bool]] | None:
    """The project's public subscriptions with the user's state (no row counts as subscribed)."""
    if not isinstance(user_id, int):
        return None
    async with db.transaction(project_id=project_id, readonly=True) as session:
        if (await session.execute(select(User.id).where(User.id == user_id))).first() is None:
            return None
        subs = (
            (
                await session.execute(
                    select(Subscription).where(Subscription.is_public.is_(True)).order_by(Subscription.id)
                )
            )
            .scalars()
            .all()
        )
        states = {
            r.subscription_id: r.state
            for r in (
                await session.execute(select(UserSubscription).where(UserSubscription.user_id == user_id))
            ).scalars()
        }
    return [(s.id, s.name, states.get(s.id, SUBSCRIBED) != UNSUBSCRIBED) for s in subs]


async def save_preferences(db: Database, project_id: int, user_id: Any, chosen: set[str]) -> bool | None:
    if not isinstance(user_id, int):
        return None
    async with db.transaction(project_id=project_id) as session:
        if (await session.execute(select(User.id).where(User.id == user_id))).first() is None:
            return None
        subs = (await session.execute(select(Subscription.id).where(Subscription.is_public.is_(True)))).scalars().all()
        for sid in subs:
            await _set_state(session, user_id, int(sid), SUBSCRIBED if str(sid) in chosen else UNSUBSCRIBED)
    return True
