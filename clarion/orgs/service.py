"""Organisation and project lifecycle: create, update, onboarding, bootstrap."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import not_found
from clarion.core.clock import utcnow
from clarion.core.sql import insert_for
from clarion.orgs.models import OnboardingMetadata, Organization, Project
from clarion.orgs.seeding import seed_new_project

# New-project defaults (contract §C): email links wrapped, opens tracked, push links not wrapped.
PROJECT_DEFAULTS: dict[str, Any] = {"link_wrap_email": True, "track_opens_email": True, "link_wrap_push": False}


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "org"


async def create_organization(session: AsyncSession, name: str, domain: str | None = None) -> Organization:
    base = _slug(name)
    username = base
    while (await session.execute(select(Organization.id).where(Organization.username == username))).first():
        username = f"{base}-{secrets.token_hex(3)}"
    org = Organization(name=name, username=username, domain=domain)
    session.add(org)
    await session.flush()
    return org


async def create_project(session: AsyncSession, organization_id: int, fields: dict[str, Any]) -> Project:
    values = {**fields}
    for key, default in PROJECT_DEFAULTS.items():
        if values.get(key) is None:
            values[key] = default
    project = Project(organization_id=organization_id, **values)
    session.add(project)
    await session.flush()
    await seed_new_project(session, project)
    return project


async def get_org_project(session: AsyncSession, organization_id: int, project_id: int) -> Project:
    project = (
        await session.execute(
            select(Project).where(Project.id == project_id, Project.organization_id == organization_id)
        )
    ).scalar_one_or_none()
    if project is None:
        raise not_found("project", "projectId")
    return project


async def update_project(session: AsyncSession, project: Project, changes: dict[str, Any]) -> Project:
    required = {"name", "locale", "timezone"}
    for key, value in changes.items():
        if value is None and key in required:
            continue  # required columns: null means "leave as is"
        setattr(project, key, value)
    project.updated_at = utcnow()
    await session.flush()
    return project


async def upsert_onboarding(session: AsyncSession, project_id: int, fields: dict[str, Any]) -> OnboardingMetadata:
    now = utcnow()
    stmt = insert_for(session, OnboardingMetadata).values(
        project_id=project_id, created_at=now, updated_at=now, **fields
    )
    stmt = stmt.on_conflict_do_update(index_elements=["project_id"], set_={**fields, "updated_at": now})
    await session.execute(stmt)
    row = (
        await session.execute(
            select(OnboardingMetadata)
            .where(OnboardingMetadata.project_id == project_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return row


async def has_provider(session: AsyncSession, project_id: int) -> bool:
    """Whether the project has at least one live delivery provider configured."""
    from clarion.core.db import Base

    providers = Base.metadata.tables.get("providers")
    if providers is None:  # the providers domain is not installed in this build
        return False
    stmt = select(func.count()).select_from(providers).where(providers.c.project_id == project_id)
    if "deleted_at" in providers.c:
        stmt = stmt.where(providers.c.deleted_at.is_(None))
    return int((await session.execute(stmt)).scalar() or 0) > 0


async def organization_count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Organization))).scalar() or 0)


@dataclass
class BootstrapResult:
    organization_id: int
    project_id: int
    org_key: str
    secret_key: str
    publishable_key: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "project_id": self.project_id,
            "org_key": self.org_key,
            "secret_key": self.secret_key,
            "publishable_key": self.publishable_key,
        }
