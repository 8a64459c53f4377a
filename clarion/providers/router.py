"""The Providers API (§E7) and `GET /captured` / `DELETE /captured` (what the capture provider
stored, §E8). ``router`` carries both sets of routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import delete, select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.providers import service
from clarion.providers.capture import CapturedMessage
from clarion.providers.models import Provider
from clarion.providers.schemas import (
    CapturedMessageOut,
    ProviderCreate,
    ProviderGroup,
    ProviderOut,
    ProviderTestResult,
    ProviderUpdate,
)

router = APIRouter()


@router.get(
    "/captured", tags=["captured"], response_model=Paged[CapturedMessageOut], operation_id="listCapturedMessages"
)
async def list_captured(
    response: Response,
    message_id: str | None = Query(default=None, max_length=64),
    channel: str | None = Query(default=None, max_length=10),
    to: str | None = Query(default=None, max_length=2048),
    ctx: ProjectContext = project_ctx(),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        stmt = select(CapturedMessage)
        if message_id:
            stmt = stmt.where(CapturedMessage.message_id == message_id)
        if channel:
            stmt = stmt.where(CapturedMessage.channel == channel)
        if to:
            stmt = stmt.where(CapturedMessage.to == to)
        page = await paginate(
            session,
            stmt,
            params,
            id_column=CapturedMessage.id,
            sortable={"id": CapturedMessage.id, "created_at": CapturedMessage.created_at},
            default_sort="id",
        )
    page.apply_headers(response)
    return page.body([CapturedMessageOut.model_validate(m) for m in page.results])


@router.delete("/captured", tags=["captured"], response_model=bool, operation_id="clearCapturedMessages")
async def clear_captured(ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        await session.execute(delete(CapturedMessage))
    return True


providers = APIRouter(tags=["providers"])
ProviderId = Path(alias="providerId", ge=1, le=2**63 - 1)


def _secret(ctx: ProjectContext) -> str:
    return ctx.db.settings.resolved_secret_key()


@providers.get("/providers", response_model=Paged[ProviderOut], operation_id="listProviders")
async def list_providers(
    response: Response,
    group: ProviderGroup | None = Query(default=None),
    include_deleted: bool = Query(default=False),
    ctx: ProjectContext = project_ctx("admin"),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        stmt = select(Provider)
        if group is not None:
            stmt = stmt.where(Provider.group == group)
        if not include_deleted:
            stmt = stmt.where(Provider.deleted_at.is_(None))
        if params.q:
            stmt = stmt.where(Provider.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Provider.id,
            sortable={
                "id": Provider.id,
                "name": Provider.name,
                "created_at": Provider.created_at,
                "updated_at": Provider.updated_at,
            },
            default_sort="id",
        )
    page.apply_headers(response)
    return page.body([ProviderOut.model_validate(p) for p in page.results])


@providers.post("/providers", response_model=ProviderOut, operation_id="createProvider")
async def create_provider(body: ProviderCreate, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        provider = await service.create_provider(session, _secret(ctx), body.model_dump())
        return ProviderOut.model_validate(provider)


@providers.get("/providers/{providerId}", response_model=ProviderOut, operation_id="getProvider")
async def get_provider(provider_id: int = ProviderId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.read() as session:
        return ProviderOut.model_validate(await service.get_provider(session, provider_id))


@providers.patch("/providers/{providerId}", response_model=ProviderOut, operation_id="updateProvider")
async def update_provider(
    body: ProviderUpdate, provider_id: int = ProviderId, ctx: ProjectContext = project_ctx("admin")
) -> Any:
    async with ctx.write() as session:
        provider = await service.get_provider(session, provider_id, include_deleted=False)
        changes = body.model_dump(exclude_unset=True)
        return ProviderOut.model_validate(await service.update_provider(session, _secret(ctx), provider, changes))


@providers.delete("/providers/{providerId}", response_model=bool, operation_id="deleteProvider")
async def delete_provider(provider_id: int = ProviderId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        await service.delete_provider(session, await service.get_provider(session, provider_id, include_deleted=False))
    return True


@providers.post("/providers/{providerId}/test", response_model=ProviderTestResult, operation_id="testProvider")
async def test_provider(provider_id: int = ProviderId, ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.read() as session:
        provider = await service.get_provider(session, provider_id, include_deleted=False)
    success, message = await service.test_provider(_secret(ctx), provider)
    return ProviderTestResult(success=success, message=message)


router.include_router(providers)
