"""Admin surface (`ok_` keys): projects, onboarding metadata, the organisation itself.
Client surface: `GET /me`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import select

from clarion.api.context import OrgContext, ProjectContext, org_ctx, project_ctx
from clarion.api.errors import not_found
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.orgs import service
from clarion.orgs.models import Organization, Project
from clarion.orgs.schemas import (
    CurrentOrganization,
    OrganizationOut,
    OrgOnboardingMetadata,
    OrgOnboardingMetadataCreate,
    OrgProject,
    OrgProjectCreate,
    OrgProjectUpdate,
    ProjectFields,
    ProjectOut,
)

admin = APIRouter(tags=["projects"])
client = APIRouter(tags=["projects"])

ProjectId = Path(alias="projectId", ge=1, le=2**63 - 1)


def _project_fields(project: Project) -> dict[str, Any]:
    return OrgProject.model_validate(project).model_dump(exclude={"role", "has_provider"})


@admin.get("/projects", response_model=Paged[ProjectFields], operation_id="listProjects")
async def list_projects(
    response: Response, ctx: OrgContext = org_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(Project).where(Project.organization_id == ctx.organization_id)
        if params.q:
            stmt = stmt.where(Project.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Project.id,
            sortable={
                "id": Project.id,
                "created_at": Project.created_at,
                "updated_at": Project.updated_at,
                "name": Project.name,
            },
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([_project_fields(p) for p in page.results])


@admin.post("/projects", response_model=OrgProject, operation_id="createProject")
async def create_project(body: OrgProjectCreate, ctx: OrgContext = org_ctx("admin")) -> Any:
    async with ctx.write() as session:
        project = await service.create_project(session, ctx.organization_id, body.model_dump())
        has_provider = await service.has_provider(session, project.id)
    return {**_project_fields(project), "role": "admin", "has_provider": has_provider}


@admin.patch("/projects/{projectId}", response_model=OrgProject, operation_id="updateProject")
async def update_project(
    body: OrgProjectUpdate, project_id: int = ProjectId, ctx: OrgContext = org_ctx("admin")
) -> Any:
    async with ctx.write() as session:
        project = await service.get_org_project(session, ctx.organization_id, project_id)
        project = await service.update_project(session, project, body.model_dump(exclude_unset=True))
        has_provider = await service.has_provider(session, project.id)
    return {**_project_fields(project), "role": "admin", "has_provider": has_provider}


@admin.post(
    "/projects/{projectId}/onboarding-metadata",
    response_model=OrgOnboardingMetadata,
    operation_id="submitProjectOnboardingMetadata",
)
async def submit_onboarding(
    body: OrgOnboardingMetadataCreate, project_id: int = ProjectId, ctx: OrgContext = org_ctx("admin")
) -> Any:
    async with ctx.write() as session:
        await service.get_org_project(session, ctx.organization_id, project_id)
        row = await service.upsert_onboarding(session, project_id, body.model_dump(mode="json"))
        return OrgOnboardingMetadata.model_validate(row)


@admin.get("/organizations/me", response_model=CurrentOrganization, operation_id="getCurrentOrganization")
async def current_organization(ctx: OrgContext = org_ctx()) -> Any:
    async with ctx.read() as session:
        org = await session.get(Organization, ctx.organization_id)
        if org is None:
            raise not_found("organization")
        return {"organization": OrganizationOut.model_validate(org), "role": ctx.principal.role}


@client.get("/me", response_model=ProjectOut, operation_id="getCurrentProject")
async def current_project(ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        project = await session.get(Project, ctx.project_id)
        if project is None:
            raise not_found("project")
        has_provider = await service.has_provider(session, project.id)
    return {**_project_fields(project), "role": ctx.principal.role, "has_provider": has_provider}
