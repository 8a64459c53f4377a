"""`GET /captured` and `DELETE /captured`: what the capture provider stored (§E7, §E8)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import delete, select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.providers.capture import CapturedMessage
from clarion.providers.schemas import CapturedMessageOut

router = APIRouter(tags=["captured"])


@router.get("/captured", response_model=Paged[CapturedMessageOut], operation_id="listCapturedMessages")
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


@router.delete("/captured", response_model=bool, operation_id="clearCapturedMessages")
async def clear_captured(ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        await session.execute(delete(CapturedMessage))
    return True
