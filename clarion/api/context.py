"""Per-request context handed to routes: who is calling, and sessions scoped to their project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.auth import OrgRole, Principal, ProjectRole, org_key, project_key
from clarion.core.db import Database


@dataclass
class ProjectContext:
    principal: Principal
    db: Database
    request: Request

    @property
    def project_id(self) -> int:
        assert self.principal.project_id is not None
        return self.principal.project_id

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction scoped to the caller's project, committed when the block ends."""
        async with self.db.transaction(project_id=self.project_id) as session:
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.db.transaction(project_id=self.project_id, readonly=True) as session:
            yield session


@dataclass
class OrgContext:
    principal: Principal
    db: Database
    request: Request

    @property
    def organization_id(self) -> int:
        return self.principal.organization_id

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        async with self.db.transaction() as session:
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.db.transaction(readonly=True) as session:
            yield session


def project_ctx(minimum_role: ProjectRole = "support", *, allow_public: bool = False):  # type: ignore[no-untyped-def]
    """Dependency for client-surface routes; see :func:`clarion.api.auth.project_key`."""
    auth = project_key(minimum_role, allow_public=allow_public)

    async def dependency(request: Request, principal: Principal = auth) -> ProjectContext:
        return ProjectContext(principal, request.app.state.db, request)

    return Depends(dependency)


def org_ctx(minimum_role: OrgRole = "member"):  # type: ignore[no-untyped-def]
    auth = org_key(minimum_role)

    async def dependency(request: Request, principal: Principal = auth) -> OrgContext:
        return OrgContext(principal, request.app.state.db, request)

    return Depends(dependency)
