"""Reading, presenting and deleting users; the user-session tokens of `pk_` callers."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, not_found
from clarion.core.clock import utcnow
from clarion.core.ids import hash_key
from clarion.dataschema.service import classified_user_paths, strip_paths
from clarion.users.models import User, UserSession
from clarion.users.upsert import USERS

SESSION_TTL = timedelta(minutes=15)
USER_TOKEN_HEADER = "X-Spotzee-User-Token"  # noqa: S105 (a header name, not a secret)


def user_out(row: Any, classified: list[str]) -> dict[str, Any]:
    """The wire ``User`` for an ORM row or a row dict, minus classified data paths."""
    get = row.get if isinstance(row, dict) else (lambda name: getattr(row, name))
    return {
        "id": get("id"),
        "project_id": get("project_id"),
        "external_id": get("external_id"),
        "anonymous_id": get("anonymous_id"),
        "email": get("email"),
        "phone": get("phone"),
        "timezone": get("timezone"),
        "locale": get("locale"),
        "data": strip_paths(get("data") or {}, classified),
        "has_push_device": bool(get("has_push_device")),
        "devices": list(get("devices") or []),
        "created_at": get("created_at"),
        "updated_at": get("updated_at"),
    }


async def users_out(session: AsyncSession, project_id: int, rows: list[Any]) -> list[dict[str, Any]]:
    classified = await classified_user_paths(session, project_id)
    return [user_out(r, classified) for r in rows]


async def get_user_by_external_id(session: AsyncSession, external_id: str) -> User:
    user = (await session.execute(select(User).where(User.external_id == external_id))).scalar_one_or_none()
    if user is None:
        raise not_found("user", "userId")
    return user


async def delete_users(session: AsyncSession, project_id: int, external_ids: list[str]) -> int:
    """Delete users (their events, states and sessions go with them by cascade)."""
    deleted = 0
    for start in range(0, len(external_ids), 500):
        chunk = external_ids[start : start + 500]
        result = await session.execute(
            delete(USERS).where(USERS.c.project_id == project_id, USERS.c.external_id.in_(chunk))
        )
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted


async def create_session(session: AsyncSession, user: User) -> tuple[str, datetime]:
    """Mint a token; only its hash is stored. Returns the token (shown once) and its expiry."""
    token = f"ut_{secrets.token_urlsafe(32)}"
    expires_at = utcnow() + SESSION_TTL
    session.add(UserSession(user_id=user.id, token_hash=hash_key(token), expires_at=expires_at, created_at=utcnow()))
    await session.flush()
    return token, expires_at


async def user_for_token(session: AsyncSession, token: str | None) -> User:
    """The user a live token is bound to, within the caller's project (the session is scoped)."""
    if not token:
        raise ApiError(ErrorCode.authentication_required, f"The {USER_TOKEN_HEADER} header is required.")
    row = (
        await session.execute(
            select(User)
            .join(UserSession, UserSession.user_id == User.id)
            .where(UserSession.token_hash == hash_key(token), UserSession.expires_at > utcnow())
        )
    ).scalar_one_or_none()
    if row is None:
        raise ApiError(ErrorCode.authentication_required, "The user token is invalid or has expired.")
    return row
