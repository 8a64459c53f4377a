"""`/lists` (contract §B4) and the membership/import extensions (§E8)."""

from __future__ import annotations

import csv
import io
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile
from fastapi import Path as PathParam
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import ErrorCode, field_error
from clarion.api.pagination import Paged, PageParams, page_params, paginate
from clarion.core.clock import utcnow
from clarion.lists import service
from clarion.lists.models import ListUser, UserList
from clarion.lists.schemas import (
    ListCreate,
    ListMemberOut,
    ListMembersAdd,
    ListMembersResult,
    ListOut,
    ListUpdate,
)
from clarion.users.models import User
from clarion.worker.jobs import JOBS_TOPIC, enqueue_job

router = APIRouter(tags=["lists"])
ListId = PathParam(alias="listId", ge=1, le=2**63 - 1)
UPLOAD_CHUNK = 1 << 20
MAX_UPLOAD_BYTES = 1 << 30


async def _wake(ctx: ProjectContext) -> None:
    await ctx.request.app.state.waker.notify(JOBS_TOPIC)


@router.get("/lists", response_model=Paged[ListOut], operation_id="listLists")
async def list_lists(
    response: Response, ctx: ProjectContext = project_ctx(), params: PageParams = Depends(page_params)
) -> Any:
    async with ctx.read() as session:
        stmt = select(UserList).where(UserList.archived_at.is_(None))
        if params.q:
            stmt = stmt.where(UserList.name.ilike(f"%{params.q}%"))
        page = await paginate(
            session,
            stmt,
            params,
            id_column=UserList.id,
            sortable={
                "id": UserList.id,
                "name": UserList.name,
                "created_at": UserList.created_at,
                "updated_at": UserList.updated_at,
            },
            default_sort="updated_at",
        )
        items = await service.to_out(session, page.results)
    page.apply_headers(response)
    return page.body(items)


@router.post("/lists", response_model=ListOut, operation_id="createList")
async def create_list(body: ListCreate, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        lst = await service.create_list(session, body)
        out = (await service.to_out(session, [lst]))[0]
    if lst.type == "dynamic":
        await _wake(ctx)
    return out


@router.get("/lists/{listId}", response_model=ListOut, operation_id="getList")
async def get_list(list_id: int = ListId, ctx: ProjectContext = project_ctx()) -> Any:
    async with ctx.read() as session:
        return (await service.to_out(session, [await service.get_list(session, list_id)]))[0]


@router.patch("/lists/{listId}", response_model=ListOut, operation_id="updateList")
async def update_list(body: ListUpdate, list_id: int = ListId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        lst = await service.get_list(session, list_id)
        version, state = lst.version, lst.state
        lst = await service.update_list(session, lst, body)
        out = (await service.to_out(session, [lst]))[0]
        scheduled = lst.state == "loading" and (lst.version != version or state != "loading")
    if scheduled:
        await _wake(ctx)
    return out


@router.delete("/lists/{listId}", response_model=bool, operation_id="deleteList")
async def delete_list(list_id: int = ListId, ctx: ProjectContext = project_ctx("editor")) -> Any:
    async with ctx.write() as session:
        await service.delete_list(session, await service.get_list(session, list_id))
    return True


@router.get("/lists/{listId}/users", response_model=Paged[ListMemberOut], operation_id="listListUsers")
async def list_users(
    response: Response,
    list_id: int = ListId,
    ctx: ProjectContext = project_ctx(),
    params: PageParams = Depends(page_params),
) -> Any:
    async with ctx.read() as session:
        lst = await service.get_list(session, list_id)
        membership = (ListUser.user_id == User.id) & (ListUser.list_id == lst.id)
        stmt = select(User).join(ListUser, membership & (ListUser.project_id == lst.project_id))
        if params.q:
            term = f"%{params.q}%"
            stmt = stmt.where(User.external_id.ilike(term) | User.email.ilike(term))
        page = await paginate(session, stmt, params, id_column=User.id, sortable={"id": User.id}, default_sort="id")
    page.apply_headers(response)
    return page.body([ListMemberOut.model_validate(u) for u in page.results])


@router.post("/lists/{listId}/users", response_model=ListMembersResult, operation_id="addListUsers")
async def add_list_users(
    body: ListMembersAdd, list_id: int = ListId, ctx: ProjectContext = project_ctx("editor")
) -> Any:
    async with ctx.write() as session:
        lst = await service.get_list(session, list_id)
        added, missing = await service.add_members(session, lst, body.external_ids)
    return ListMembersResult(added=added, missing=missing)


@router.delete("/lists/{listId}/users", response_model=ListMembersResult, operation_id="removeListUsers")
async def remove_list_users(
    list_id: int = ListId,
    external_id: list[str] = Query(default_factory=list, description="A user's external_id; repeat (≤1,000)."),
    ctx: ProjectContext = project_ctx("editor"),
) -> Any:
    async with ctx.write() as session:
        lst = await service.get_list(session, list_id)
        removed, missing = await service.remove_members(session, lst, external_id)
    return ListMembersResult(removed=removed, missing=missing)


def _check_header(first_chunk: bytes) -> None:
    text = first_chunk.decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(text.splitlines()[0] if text else "")), [])
    if not any(h.strip().lower() == "external_id" for h in header):
        raise field_error("file", "The CSV needs a header row with an external_id column.", ErrorCode.validation_failed)


@router.post("/lists/{listId}/import", response_model=ListOut, operation_id="importListUsers")
async def import_list_users(
    list_id: int = ListId,
    file: UploadFile = File(description="CSV with a header row containing external_id."),
    ctx: ProjectContext = project_ctx("editor"),
) -> Any:
    async with ctx.read() as session:
        lst = await service.get_list(session, list_id)
        service.require_static(lst)
    folder = Path(ctx.request.app.state.settings.data_dir) / "imports" / "lists"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{ctx.project_id}-{list_id}-{secrets.token_hex(8)}.csv"
    size = 0
    try:
        with target.open("wb") as sink:
            first = True
            while chunk := await file.read(UPLOAD_CHUNK):
                if first:
                    _check_header(chunk)
                    first = False
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise field_error("file", "The file is larger than 1 GiB.", ErrorCode.validation_failed)
                sink.write(chunk)
            if first:
                raise field_error("file", "The file is empty.", ErrorCode.validation_failed)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    async with ctx.write() as session:
        lst = await service.get_list(session, list_id)
        service.require_static(lst)
        lst.import_status = {
            "state": "queued",
            "filename": file.filename,
            "processed_rows": 0,
            "added_rows": 0,
            "failed_rows": 0,
            "errors": [],
            "started_at": None,
            "finished_at": None,
            "queued_at": utcnow().isoformat(),
        }
        await enqueue_job(
            session, service.IMPORT_JOB, {"list_id": lst.id, "path": str(target)}, project_id=ctx.project_id
        )
        await session.flush()
        out = (await service.to_out(session, [lst]))[0]
    await _wake(ctx)
    return out
