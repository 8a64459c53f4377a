"""`clarion bootstrap` and first-start setup: an organisation, a project and fresh keys (§E11)."""

from __future__ import annotations

from sqlalchemy import select

from clarion.core.db import Database
from clarion.keys.service import create_org_key, create_project_key
from clarion.orgs.models import AdminUser, Organization, Project
from clarion.orgs.service import BootstrapResult, create_organization, create_project


async def bootstrap(
    db: Database,
    *,
    org_name: str,
    project_name: str,
    admin_email: str | None = None,
    admin_password: str | None = None,
    locale: str = "en",
    timezone: str = "UTC",
) -> BootstrapResult:
    """Create (or reuse, by name) an organisation and project and mint fresh keys for them."""
    async with db.transaction() as session:
        org = (
            (await session.execute(select(Organization).where(Organization.name == org_name).order_by(Organization.id)))
            .scalars()
            .first()
        )
        if org is None:
            org = await create_organization(session, org_name)
        project = (
            (
                await session.execute(
                    select(Project)
                    .where(Project.organization_id == org.id, Project.name == project_name)
                    .order_by(Project.id)
                )
            )
            .scalars()
            .first()
        )
        if project is None:
            project = await create_project(
                session, org.id, {"name": project_name, "locale": locale, "timezone": timezone}
            )
        _, org_value = await create_org_key(session, org.id, name="bootstrap", role="owner")
        _, secret_value = await create_project_key(
            session, project.id, name="bootstrap secret", scope="secret", role="admin"
        )
        _, public_value = await create_project_key(
            session, project.id, name="bootstrap publishable", scope="public", role="support"
        )
        if admin_email and admin_password:
            from argon2 import PasswordHasher

            hashed = PasswordHasher().hash(admin_password)
            existing = (
                await session.execute(
                    select(AdminUser).where(AdminUser.organization_id == org.id, AdminUser.email == admin_email)
                )
            ).scalar_one_or_none()
            if existing is None:
                session.add(AdminUser(organization_id=org.id, email=admin_email, password_hash=hashed, role="owner"))
            else:
                existing.password_hash = hashed
        return BootstrapResult(org.id, project.id, org_value, secret_value, public_value)
