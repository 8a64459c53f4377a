"""The per-project suppression list: addresses that must never receive on a channel."""

from __future__ import annotations

from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, not_found
from clarion.core.clock import utcnow
from clarion.core.sql import insert_for
from clarion.subscriptions.models import Suppression
from clarion.users.validation import ItemInvalid, normalise_email, normalise_phone

SUPPRESSIONS: Table = Suppression.__table__  # type: ignore[assignment]
SUPPRESSIBLE_CHANNELS = ("email", "text")
REASONS = ("hard_bounce", "complaint", "manual", "stop_keyword")


def normalise_address(channel: str, address: str) -> str:
    """The stored form of an address, identical to how user addresses are stored."""
    return normalise_email(address) if channel == "email" else normalise_phone(address)


async def create_suppression(session: AsyncSession, channel: str, address: str, reason: str) -> Suppression:
    try:
        normalised = normalise_address(channel, address)
    except ItemInvalid as exc:
        raise ApiError(ErrorCode.validation_failed, exc.message, param="address") from exc
    duplicate = ApiError(
        ErrorCode.resource_already_exists, f"{normalised} is already suppressed on {channel}.", param="address"
    )
    existing = await session.execute(
        select(Suppression.id).where(Suppression.channel == channel, Suppression.address == normalised)
    )
    if existing.first() is not None:
        raise duplicate
    row = Suppression(channel=channel, address=normalised, reason=reason)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise duplicate from exc
    return row


async def suppress(session: AsyncSession, project_id: int, channel: str, address: str, reason: str) -> None:
    """Add an address idempotently (bounce, complaint and STOP handlers call this)."""
    now = utcnow()
    stmt = insert_for(session, SUPPRESSIONS).values(
        project_id=project_id,
        channel=channel,
        address=normalise_address(channel, address),
        reason=reason,
        created_at=now,
        updated_at=now,
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["project_id", "channel", "address"]))


async def get_suppression(session: AsyncSession, suppression_id: int) -> Suppression:
    row = (await session.execute(select(Suppression).where(Suppression.id == suppression_id))).scalar_one_or_none()
    if row is None:
        raise not_found("suppression", "suppressionId")
    return row
