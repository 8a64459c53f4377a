"""Creating, reading, updating and revoking API keys. Values are returned in full only once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, not_found
from clarion.core.clock import utcnow
from clarion.core.ids import hash_key, mask_key, new_key_value
from clarion.keys.models import OrganizationApiKey, ProjectApiKey

SCOPE_PREFIX = {"secret": "sk", "public": "pk"}


def project_key_out(key: ProjectApiKey, full_value: str | None = None) -> dict[str, Any]:
    return {
        "id": key.id,
        "project_id": key.project_id,
        "name": key.name,
        "description": key.description,
        "scope": key.scope,
        "role": key.role,
        "value": full_value or mask_key(SCOPE_PREFIX[key.scope], key.last4),
        "is_system_key": key.is_system_key,
        "created_at": key.created_at,
        "updated_at": key.updated_at,
    }


def org_key_out(key: OrganizationApiKey, full_value: str | None = None) -> dict[str, Any]:
    return {
        "id": key.id,
        "organization_id": key.organization_id,
        "name": key.name,
        "description": key.description,
        "role": key.role,
        "value": full_value or mask_key("ok", key.last4),
        "created_at": key.created_at,
        "updated_at": key.updated_at,
    }


async def create_project_key(
    session: AsyncSession,
    project_id: int,
    *,
    name: str,
    scope: str,
    role: str,
    description: str | None = None,
    is_system_key: bool = False,
) -> tuple[ProjectApiKey, str]:
    value = new_key_value(SCOPE_PREFIX[scope])
    key = ProjectApiKey(
        project_id=project_id,
        name=name,
        description=description,
        scope=scope,
        role=role,
        key_hash=hash_key(value),
        last4=value[-4:],
        is_system_key=is_system_key,
    )
    session.add(key)
    await session.flush()
    return key, value


def live_project_keys() -> Select[ProjectApiKey]:
    return select(ProjectApiKey).where(ProjectApiKey.revoked_at.is_(None))


async def get_project_key(session: AsyncSession, key_id: int) -> ProjectApiKey:
    key = (await session.execute(live_project_keys().where(ProjectApiKey.id == key_id))).scalar_one_or_none()
    if key is None:
        raise not_found("API key", "keyId")
    return key


async def update_project_key(session: AsyncSession, key: ProjectApiKey, changes: dict[str, Any]) -> ProjectApiKey:
    if key.is_system_key:
        raise ApiError(ErrorCode.state_conflict, "System keys cannot be changed.")
    new_scope = changes.get("scope")
    if new_scope is not None and new_scope != key.scope:
        # The value's prefix is immutable (§D21): the scope of an issued key cannot flip sk_/pk_.
        raise ApiError(
            ErrorCode.state_conflict,
            "A key's scope is fixed by its value's prefix; create a new key with the other scope.",
            param="scope",
        )
    for field in ("name", "description", "role"):
        if field in changes and (changes[field] is not None or field == "description"):
            setattr(key, field, changes[field])
    key.updated_at = utcnow()
    await session.flush()
    return key


async def revoke_project_key(session: AsyncSession, key: ProjectApiKey) -> None:
    if key.is_system_key:
        raise ApiError(ErrorCode.state_conflict, "System keys cannot be revoked.")
    key.revoked_at = utcnow()
    await session.flush()


async def create_org_key(
    session: AsyncSession, organization_id: int, *, name: str, role: str, description: str | None = None
) -> tuple[OrganizationApiKey, str]:
    value = new_key_value("ok")
    key = OrganizationApiKey(
        organization_id=organization_id,
        name=name,
        description=description,
        role=role,
        key_hash=hash_key(value),
        last4=value[-4:],
    )
    session.add(key)
    await session.flush()
    return key, value


def live_org_keys(organization_id: int) -> Select[OrganizationApiKey]:
    return select(OrganizationApiKey).where(
        OrganizationApiKey.organization_id == organization_id, OrganizationApiKey.revoked_at.is_(None)
    )


async def get_org_key(session: AsyncSession, organization_id: int, key_id: int) -> OrganizationApiKey:
    key = (
        await session.execute(live_org_keys(organization_id).where(OrganizationApiKey.id == key_id))
    ).scalar_one_or_none()
    if key is None:
        raise not_found("API key", "keyId")
    return key
