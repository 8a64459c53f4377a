"""`/campaigns` CRUD, state changes and duplication (contract §B3)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import ApiError, ErrorCode
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.campaigns import preview, service
from clarion.campaigns.models import Campaign
from clarion.campaigns.schemas import CampaignCreate, CampaignOut, CampaignUpdate
from clarion.rendering.render import RenderError, RenderSettings

router = APIRouter(tags=["campaigns"])
CampaignId = Path(alias="campaignId", ge=1, le=2**63 - 1)
ABORT_WAIT_SECONDS = 10.0
ABORT_POLL_SECONDS = 0.05


@router.get("/campaigns", response_model=Paged[CampaignOut], operation_id="listCampaigns")
async def list_campaigns(
    response: Response, ctx: ProjectContext = project_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(Campaign).where(Campaign.archived_at.is_(None))
        if params.q:
            stmt = stmt.where(Campaign.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Campaign.id,
            sortable={
                "id": Campaign.id,
                "created_at": Campaign.created_at,
                "updated_at": Campaign.updated_at,
                "name": Campaign.name,
            },
            default_sort="created_at",
        )
        items = await service.hydrate(session, page.results)
    page.apply_headers(response)
    return page.body(items)


@router.post("/campaigns", response_model=CampaignOut, operation_id="createCampaign")
async def create_campaign(body: CampaignCreate, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        campaign = await service.create_campaign(session, body)
        return (await service.hydrate(session, [campaign]))[0]


@router.get("/campaigns/{campaignId}", response_model=CampaignOut, operation_id="getCampaign")
async def get_campaign(campaign_id: int = CampaignId, ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        campaign = await service.get_campaign(session, campaign_id)
        return (await service.hydrate(session, [campaign]))[0]


@router.patch("/campaigns/{campaignId}", response_model=CampaignOut, operation_id="updateCampaign")
async def update_campaign(
    body: CampaignUpdate, campaign_id: int = CampaignId, ctx: ProjectContext = project_ctx("editor")
) -> Any:
    async with ctx.write() as session:
        campaign = await service.get_campaign(session, campaign_id)
        changes = body.model_dump(exclude_unset=True)
        campaign = await service.update_campaign(session, campaign, changes, ctx.principal.role)
        aborting = campaign.state == "aborting"
        out = (await service.hydrate(session, [campaign]))[0]
    if not aborting:
        return out
    await wait_for_abort(ctx, campaign_id)
    async with ctx.read() as session:
        return (await service.hydrate(session, [await service.get_campaign(session, campaign_id)]))[0]


async def wait_for_abort(ctx: ProjectContext, campaign_id: int) -> None:
    """After the abort committed, wait (bounded) for in-flight provider calls to record their
    outcome, then mark the campaign ``aborted``; past the bound it stays ``aborting`` and the
    scheduler duty finishes the transition when the leases expire."""
    from clarion.delivery.schedule import settle_abort

    deadline = time.monotonic() + ABORT_WAIT_SECONDS
    while True:
        async with ctx.write() as session:
            if await settle_abort(session, campaign_id):
                return
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(ABORT_POLL_SECONDS)


@router.delete("/campaigns/{campaignId}", response_model=bool, operation_id="deleteCampaign")
async def delete_campaign(campaign_id: int = CampaignId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        await service.delete_campaign(session, await service.get_campaign(session, campaign_id), ctx.principal.role)
    return True


@router.get("/campaigns/{campaignId}/preview", response_model=dict[str, Any], operation_id="previewCampaign")
async def preview_campaign(campaign_id: int = CampaignId, ctx: ProjectContext = project_ctx()) -> Any:
    """The primary template (the campaign's channel, the project's default locale) rendered for a
    representative user; ``422 validation_failed`` when no template serves that locale."""
    settings = ctx.request.app.state.settings
    async with ctx.read() as session:
        campaign = await service.get_campaign(session, campaign_id)
        try:
            return await preview.preview_campaign(
                session, campaign, RenderSettings(settings.base_url, settings.resolved_secret_key())
            )
        except RenderError as exc:
            raise ApiError(
                ErrorCode.validation_failed, f"The campaign cannot be previewed: {exc.detail}", param=exc.reason
            ) from exc


@router.post("/campaigns/{campaignId}/duplicate", response_model=CampaignOut, operation_id="duplicateCampaign")
async def duplicate_campaign(campaign_id: int = CampaignId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        copy = await service.duplicate_campaign(session, await service.get_campaign(session, campaign_id))
        return (await service.hydrate(session, [copy]))[0]
