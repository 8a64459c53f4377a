"""Folding one user into another when an anonymous visitor identifies."""

from __future__ import annotations

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.events.models import Event
from clarion.lists.service import move_memberships
from clarion.subscriptions.models import UserSubscription
from clarion.users.models import User, UserSession


async def merge_users(session: AsyncSession, source_id: int, target_id: int) -> None:
    """Move everything that belongs to ``source_id`` onto ``target_id``, then delete the source.

    Events and sessions move; subscription states move unless the target already has a state for
    that subscription (the identified profile's explicit choice wins). Domains that attach rows to
    users (list memberships, messages, …) add their move here, before the source is deleted.
    """
    if source_id == target_id:
        return
    await session.execute(update(Event).where(Event.user_id == source_id).values(user_id=target_id))
    await session.execute(update(UserSession).where(UserSession.user_id == source_id).values(user_id=target_id))
    target_subs = select(UserSubscription.subscription_id).where(UserSubscription.user_id == target_id)
    await session.execute(
        update(UserSubscription)
        .where(and_(UserSubscription.user_id == source_id, UserSubscription.subscription_id.not_in(target_subs)))
        .values(user_id=target_id)
    )
    await session.execute(delete(UserSubscription).where(UserSubscription.user_id == source_id))
    project_id = (await session.execute(select(User.project_id).where(User.id == target_id))).scalar_one()
    await move_memberships(session, project_id, source_id, target_id)
    await session.execute(delete(User).where(User.id == source_id))
