"""The background job that runs an uploaded CSV import and records its progress."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import update

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.imports.csv_users import HeaderInvalid, ImportProgress, ProgressCallback, import_users_csv
from clarion.imports.models import UserImport
from clarion.worker.jobs import JobContext, job_handler

IMPORT_JOB = "users.import"


async def _save(db: Database, project_id: int, import_id: int, **values: Any) -> None:
    async with db.transaction(project_id=project_id) as session:
        await session.execute(
            update(UserImport).where(UserImport.id == import_id).values(updated_at=utcnow(), **values)
        )


def _progress_values(state: ImportProgress) -> dict[str, Any]:
    return {
        "processed_rows": state.processed,
        "imported_rows": state.imported,
        "failed_rows": state.failed,
        "errors": state.errors,
    }


async def run_import(
    db: Database,
    project_id: int,
    import_id: int,
    path: Path,
    list_id: int | None,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[ImportProgress, str | None]:
    """Run one import, recording progress on its row; returns the outcome and a file-level error."""
    await _save(db, project_id, import_id, state="running")

    async def progress(state: ImportProgress) -> None:
        await _save(db, project_id, import_id, **_progress_values(state))
        if on_progress is not None:
            await on_progress(state)

    try:
        result = await import_users_csv(db, project_id, path, list_id=list_id, progress=progress)
    except (HeaderInvalid, UnicodeDecodeError, csv.Error) as exc:
        message = "The file is not UTF-8 text." if isinstance(exc, UnicodeDecodeError) else str(exc)
        await _save(db, project_id, import_id, state="failed", last_error=message, finished_at=utcnow())
        return ImportProgress(), message
    except Exception as exc:
        await _save(db, project_id, import_id, state="failed", last_error=str(exc)[:2000], finished_at=utcnow())
        raise
    await _save(db, project_id, import_id, state="finished", finished_at=utcnow(), **_progress_values(result))
    return result, None


@job_handler(IMPORT_JOB)
async def run_import_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    assert ctx.project_id is not None
    path = Path(payload["path"])
    await run_import(ctx.db, ctx.project_id, int(payload["import_id"]), path, payload.get("list_id"))
    if payload.get("delete_file", True):
        await anyio.Path(path).unlink(missing_ok=True)
