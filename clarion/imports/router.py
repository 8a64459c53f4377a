"""`POST /users/import` (multipart CSV, §E8) and import progress."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any

import anyio
from fastapi import APIRouter, File, Form, Path, UploadFile
from sqlalchemy import select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import not_found
from clarion.core.ids import prefixed_ulid
from clarion.imports.jobs import IMPORT_JOB
from clarion.imports.models import UserImport
from clarion.imports.schemas import UserImportOut
from clarion.worker.jobs import JOBS_TOPIC, enqueue_job

router = APIRouter(tags=["users"])
CHUNK = 1024 * 1024


@router.post("/users/import", response_model=UserImportOut, operation_id="importUsers")
async def import_users(
    file: UploadFile = File(..., description="CSV with a header row."),
    list_id: int | None = Form(default=None, ge=1, le=2**63 - 1),
    ctx: ProjectContext = project_ctx("editor"),
) -> Any:
    directory = FilePath(ctx.request.app.state.settings.data_dir) / "imports"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{prefixed_ulid('imp')}.csv"
    async with await anyio.open_file(target, "wb") as out:
        while chunk := await file.read(CHUNK):
            await out.write(chunk)
    async with ctx.write() as session:
        row = UserImport(filename=(file.filename or "")[:255] or None, stored_path=str(target), list_id=list_id)
        session.add(row)
        await session.flush()
        await enqueue_job(
            session,
            IMPORT_JOB,
            {"import_id": row.id, "path": str(target), "list_id": list_id},
            project_id=ctx.project_id,
            max_attempts=1,
        )
        out_row = UserImportOut.model_validate(row)
    await ctx.request.app.state.waker.notify(JOBS_TOPIC)
    return out_row


@router.get("/users/imports/{importId}", response_model=UserImportOut, operation_id="getUserImport")
async def get_import(
    import_id: int = Path(alias="importId", ge=1, le=2**63 - 1), ctx: ProjectContext = project_ctx()
) -> Any:
    async with ctx.read() as session:
        row = (await session.execute(select(UserImport).where(UserImport.id == import_id))).scalar_one_or_none()
        if row is None:
            raise not_found("import", "importId")
        return UserImportOut.model_validate(row)
