"""`/data-schema` routes (§E8)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.dataschema import service
from clarion.dataschema.models import DataSchemaPath
from clarion.dataschema.rebuild import REBUILD_JOB
from clarion.dataschema.schemas import DataSchemaPathOut, DataSchemaPathUpdate, RebuildOut
from clarion.worker.jobs import JOBS_TOPIC, enqueue_job

router = APIRouter(tags=["data-schema"])


def path_out(row: DataSchemaPath) -> DataSchemaPathOut:
    return DataSchemaPathOut(
        id=row.id,
        project_id=row.project_id,
        kind=row.kind,
        event_name=row.event_name or None,
        path=row.path,
        type=row.data_type,
        visibility=row.visibility,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/data-schema", response_model=Paged[DataSchemaPathOut], operation_id="listDataSchema")
async def list_paths(
    response: Response,
    kind: str | None = Query(default=None, description="`user` or `event`."),
    ctx: ProjectContext = project_ctx(),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        stmt = select(DataSchemaPath)
        if kind:
            stmt = stmt.where(DataSchemaPath.kind == kind)
        if params.q:
            stmt = stmt.where(DataSchemaPath.path.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=DataSchemaPath.id,
            sortable={"id": DataSchemaPath.id, "path": DataSchemaPath.path},
            default_sort="path",
            default_desc=False,
        )
    page.apply_headers(response)
    return page.body([path_out(r) for r in page.results])


@router.patch("/data-schema/{id}", response_model=DataSchemaPathOut, operation_id="updateDataSchemaPath")
async def update_path(
    body: DataSchemaPathUpdate,
    path_id: int = Path(alias="id", ge=1, le=2**63 - 1),
    ctx: ProjectContext = project_ctx("admin"),
) -> Any:
    async with ctx.write() as session:
        row = await service.get_path(session, path_id)
        return path_out(await service.set_visibility(session, row, body.visibility))


@router.post("/data-schema/rebuild", response_model=RebuildOut, operation_id="rebuildDataSchema")
async def rebuild(ctx: ProjectContext = project_ctx("admin")) -> Any:
    async with ctx.write() as session:
        await enqueue_job(session, REBUILD_JOB, {}, project_id=ctx.project_id)
    await ctx.request.app.state.waker.notify(JOBS_TOPIC)
    return {"success": True}
