"""The one enforced place of project scoping (clarion/core/tenancy.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from clarion.core.db import Database
from clarion.core.tenancy import CrossProjectAccess
from clarion.tags.models import Tag
from tests.conftest import Tenant


async def test_scoped_sessions_see_and_change_only_their_project(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with db.transaction(project_id=tenant.project_id) as session:
        session.add(Tag(name="mine"))
    async with db.transaction(project_id=other_tenant.project_id) as session:
        session.add(Tag(name="theirs"))
    async with db.transaction(project_id=tenant.project_id) as session:
        names = set((await session.execute(select(Tag.name))).scalars())
        assert names == {"mine"}
        # A bulk UPDATE without a WHERE still only touches this project.
        await session.execute(update(Tag).values(name="renamed"))
    async with db.transaction(project_id=other_tenant.project_id) as session:
        assert set((await session.execute(select(Tag.name))).scalars()) == {"theirs"}


async def test_writing_another_projects_row_raises(db: Database, tenant: Tenant, other_tenant: Tenant) -> None:
    with pytest.raises(CrossProjectAccess):
        async with db.transaction(project_id=tenant.project_id) as session:
            session.add(Tag(name="sneaky", project_id=other_tenant.project_id))


async def test_project_owned_query_without_scope_raises(db: Database) -> None:
    session = db.session()
    session.info.pop("unscoped", None)
    with pytest.raises(CrossProjectAccess):
        async with session:
            await session.execute(select(Tag))
