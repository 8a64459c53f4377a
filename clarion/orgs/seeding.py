"""What every new project starts with. Domains that seed rows add one call here."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.orgs.models import Project


async def seed_new_project(session: AsyncSession, project: Project) -> None:
    """Create the rows a new project needs (default subscriptions, … as domains land)."""
    from clarion.providers.service import seed_capture_providers
    from clarion.subscriptions.service import seed_default_subscriptions

    await seed_default_subscriptions(session, project.id)
    await seed_capture_providers(session, project.id)
