"""May this user receive on this channel for this subscription? One answer, two shapes.

:func:`ineligibility_reason` is a SQL expression over a ``users`` row: ``NULL`` when the user may
receive, else ``no_address``, ``suppressed`` or ``unsubscribed`` (checked in that order).
:func:`eligible` is the same as a WHERE condition for bulk ``INSERT … SELECT`` audience
materialisation, and :func:`may_receive` evaluates the very same expression for one user, so the
bulk and single paths cannot disagree. §E10: no state row = subscribed; state 0 blocks;
suppression blocks whatever the state.

Indexes: ``user_subscriptions`` primary key (user_id, subscription_id);
``ux_suppressions_project_channel_address``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, FromClause, and_, case, exists, false, literal, null, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.subscriptions.models import UNSUBSCRIBED, Suppression, UserSubscription
from clarion.users.upsert import USERS

STATES = UserSubscription.__table__
SUPPRESSIONS = Suppression.__table__
REASONS = ("no_address", "suppressed", "unsubscribed")


def _address(users: FromClause, channel: str) -> ColumnElement[Any] | None:
    if channel == "email":
        return users.c.email
    if channel == "text":
        return users.c.phone
    return None


def _has_address(users: FromClause, channel: str) -> ColumnElement[bool]:
    address = _address(users, channel)
    if address is not None:
        return and_(address.is_not(None), address != "")
    if channel == "push":
        return users.c.has_push_device.is_(True)
    return true()  # webhook and in-app need no address


def _suppressed(users: FromClause, channel: str) -> ColumnElement[bool]:
    address = _address(users, channel)
    if address is None:
        return false()
    return exists().where(
        SUPPRESSIONS.c.project_id == users.c.project_id,
        SUPPRESSIONS.c.channel == channel,
        SUPPRESSIONS.c.address == address,
    )


def _unsubscribed(users: FromClause, subscription_id: int | ColumnElement[Any]) -> ColumnElement[bool]:
    return exists().where(
        STATES.c.user_id == users.c.id,
        STATES.c.subscription_id == subscription_id,
        STATES.c.state == UNSUBSCRIBED,
    )


def ineligibility_reason(
    users: FromClause, *, channel: str, subscription_id: int | ColumnElement[Any]
) -> ColumnElement[Any]:
    """``NULL`` if the ``users`` row may receive, else the reason it may not. ``subscription_id``
    may be a column (e.g. the campaign's, in a join)."""
    return case(
        (~_has_address(users, channel), literal("no_address")),
        (_suppressed(users, channel), literal("suppressed")),
        (_unsubscribed(users, subscription_id), literal("unsubscribed")),
        else_=null(),
    )


def eligible(users: FromClause, *, channel: str, subscription_id: int) -> ColumnElement[bool]:
    """WHERE condition keeping only users who may receive; ``users`` may be an alias."""
    return and_(
        _has_address(users, channel),
        ~_suppressed(users, channel),
        ~_unsubscribed(users, subscription_id),
    )


async def may_receive(
    session: AsyncSession, *, user: Any, channel: str, subscription_id: int
) -> tuple[bool, str | None]:
    """``(True, None)`` or ``(False, reason)`` for one user (a ``User`` or a user id)."""
    user_id = user if isinstance(user, int) else user.id
    reason = (
        await session.execute(
            select(ineligibility_reason(USERS, channel=channel, subscription_id=subscription_id)).where(
                USERS.c.id == user_id
            )
        )
    ).scalar_one()
    return reason is None, reason
