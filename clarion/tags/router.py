"""`/tags` CRUD (contract §B9)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.tags import service
from clarion.tags.models import Tag
from clarion.tags.schemas import TagCreate, TagOut, TagUpdate

router = APIRouter(tags=["tags"])
TagId = Path(alias="tagId", ge=1, le=2**63 - 1)


@router.get("/tags", response_model=Paged[TagOut], operation_id="listTags")
async def list_tags(
    response: Response, ctx: ProjectContext = project_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(Tag)
        if params.q:
            stmt = stmt.where(Tag.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=Tag.id,
            sortable={"id": Tag.id, "name": Tag.name, "created_at": Tag.created_at, "updated_at": Tag.updated_at},
            default_sort="created_at",
        )
    page.apply_headers(response)
    return page.body([TagOut.model_validate(t) for t in page.results])


@router.post("/tags", response_model=TagOut, operation_id="createTag")
async def create_tag(body: TagCreate, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        return TagOut.model_validate(await service.create_tag(session, body.name))


@router.get("/tags/{tagId}", response_model=TagOut, operation_id="getTag")
async def get_tag(tag_id: int = TagId, ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        return TagOut.model_validate(await service.get_tag(session, tag_id))


@router.patch("/tags/{tagId}", response_model=TagOut, operation_id="updateTag")
async def update_tag(body: TagUpdate, tag_id: int = TagId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        tag = await service.get_tag(session, tag_id)
        return TagOut.model_validate(await service.rename_tag(session, tag, body.name))


@router.delete("/tags/{tagId}", response_model=bool, operation_id="deleteTag")
async def delete_tag(tag_id: int = TagId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        await service.delete_tag(session, await service.get_tag(session, tag_id))
    return True
