"""`/keys` (project keys, client surface) and `/organizations/api-keys` (admin surface)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Response

from clarion.api.auth import ORG_ROLES, PROJECT_ROLES
from clarion.api.context import OrgContext, ProjectContext, org_ctx, project_ctx
from clarion.api.errors import ApiError, ErrorCode
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.core.clock import utcnow
from clarion.keys import service
from clarion.keys.models import OrganizationApiKey, ProjectApiKey
from clarion.keys.schemas import (
    OrganizationApiKeyCreate,
    OrganizationApiKeyOut,
    OrganizationApiKeyUpdate,
    ProjectApiKeyCreate,
    ProjectApiKeyOut,
    ProjectApiKeyUpdate,
)

client = APIRouter(tags=["keys"])
admin = APIRouter(tags=["organization api keys"])

KeyId = Path(alias="keyId", ge=1, le=2**63 - 1)


def _check_project_role(caller: str, wanted: str) -> None:
    if PROJECT_ROLES.index(wanted) > PROJECT_ROLES.index(caller):
        raise ApiError(ErrorCode.permission_denied, "A key cannot be given a role above the caller's.", param="role")


def _check_org_role(caller: str, wanted: str) -> None:
    if ORG_ROLES.index(wanted) > ORG_ROLES.index(caller):
        raise ApiError(ErrorCode.permission_denied, "A key cannot be given a role above the caller's.", param="role")


@client.get("/keys", response_model=Paged[ProjectApiKeyOut], operation_id="listProjectApiKeys")
async def list_keys(
    response: Response, ctx: ProjectContext = project_ctx("admin"), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = service.live_project_keys()
        if params.q:
            stmt = stmt.where(ProjectApiKey.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=ProjectApiKey.id,
            sortable={"id": ProjectApiKey.id, "created_at": ProjectApiKey.created_at, "name": ProjectApiKey.name},
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([service.project_key_out(k) for k in page.results])


@client.post("/keys", response_model=ProjectApiKeyOut, operation_id="createProjectApiKey")
async def create_key(body: ProjectApiKeyCreate, ctx: ProjectContext = project_ctx("admin")) -> Any:
    role = body.role or ctx.principal.role
    _check_project_role(ctx.principal.role, role)
    async with ctx.write() as session:
        key, value = await service.create_project_key(
            session, ctx.project_id, name=body.name, scope=body.scope, role=role, description=body.description
        )
        return service.project_key_out(key, value)


@client.get("/keys/{keyId}", response_model=ProjectApiKeyOut, operation_id="getProjectApiKey")
async def get_key(key_id: int = KeyId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.read() as session:
        return service.project_key_out(await service.get_project_key(session, key_id))


@client.patch("/keys/{keyId}", response_model=ProjectApiKeyOut, operation_id="updateProjectApiKey")
async def update_key(body: ProjectApiKeyUpdate, key_id: int = KeyId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    if body.role is not None:
        _check_project_role(ctx.principal.role, body.role)
    async with ctx.write() as session:
        key = await service.get_project_key(session, key_id)
        key = await service.update_project_key(session, key, body.model_dump(exclude_unset=True))
        return service.project_key_out(key)


@client.delete("/keys/{keyId}", response_model=bool, operation_id="revokeProjectApiKey")
async def revoke_key(key_id: int = KeyId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        key = await service.get_project_key(session, key_id)
        await service.revoke_project_key(session, key)
    return True


@admin.get(
    "/organizations/api-keys", response_model=Paged[OrganizationApiKeyOut], operation_id="listOrganizationApiKeys"
)
async def list_org_keys(
    response: Response, ctx: OrgContext = org_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = service.live_org_keys(ctx.organization_id)
        if params.q:
            stmt = stmt.where(OrganizationApiKey.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=OrganizationApiKey.id,
            sortable={
                "id": OrganizationApiKey.id,
                "created_at": OrganizationApiKey.created_at,
                "name": OrganizationApiKey.name,
            },
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([service.org_key_out(k) for k in page.results])


@admin.post("/organizations/api-keys", response_model=OrganizationApiKeyOut, operation_id="createOrganizationApiKey")
async def create_org_key(body: OrganizationApiKeyCreate, ctx: OrgContext = org_ctx("admin")) -> Any:
    _check_org_role(ctx.principal.role, body.role)
    async with ctx.write() as session:
        key, value = await service.create_org_key(
            session, ctx.organization_id, name=body.name, role=body.role, description=body.description
        )
        return service.org_key_out(key, value)


@admin.get(
    "/organizations/api-keys/{keyId}", response_model=OrganizationApiKeyOut, operation_id="getOrganizationApiKey"
)
async def get_org_key(key_id: int = KeyId, ctx: OrgContext = org_ctx()) -> Any:
    async with ctx.read() as session:
        return service.org_key_out(await service.get_org_key(session, ctx.organization_id, key_id))


@admin.patch(
    "/organizations/api-keys/{keyId}", response_model=OrganizationApiKeyOut, operation_id="updateOrganizationApiKey"
)
async def update_org_key(
    body: OrganizationApiKeyUpdate, key_id: int = KeyId, ctx: OrgContext = org_ctx("admin")
) -> Any:
    async with ctx.write() as session:
        key = await service.get_org_key(session, ctx.organization_id, key_id)
        _check_org_role(ctx.principal.role, key.role)
        if body.role is not None:
            _check_org_role(ctx.principal.role, body.role)
            key.role = body.role
        if body.name is not None:
            key.name = body.name
        if "description" in body.model_fields_set:
            key.description = body.description
        key.updated_at = utcnow()
        await session.flush()
        return service.org_key_out(key)


@admin.delete("/organizations/api-keys/{keyId}", response_model=bool, operation_id="revokeOrganizationApiKey")
async def revoke_org_key(key_id: int = KeyId, ctx: OrgContext = org_ctx("admin")) -> Any:
    async with ctx.write() as session:
        key = await service.get_org_key(session, ctx.organization_id, key_id)
        _check_org_role(ctx.principal.role, key.role)
        key.revoked_at = utcnow()
    return True
