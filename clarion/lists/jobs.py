"""Background jobs of lists: materialising a dynamic list, importing a CSV into a static list."""

from __future__ import annotations

import csv
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.lists import queries
from clarion.lists.models import ListUser, UserList
from clarion.lists.rules import EventRule, Group, Node, validate_rule
from clarion.lists.service import (
    IMPORT_JOB,
    MATERIALISE_JOB,
    MAX_BATCH,
    add_user_ids,
    refresh_count,
    resolve_external_ids,
)
from clarion.worker.jobs import JobContext, enqueue_job, job_handler

log = logging.getLogger("clarion.lists")

# Users per materialisation transaction: big enough that per-statement overhead is negligible,
# small enough that one transaction never holds locks on a large part of the table.
CHUNK_IDS = 50_000
MAX_IMPORT_ERRORS = 100
UNKNOWN_USER = "No user with this external_id."


async def materialise(ctx: JobContext, list_id: int, version: int, *, chunk: int = CHUNK_IDS) -> bool:
    """Rebuild a dynamic list's membership in chunks of user ids; False if the list moved on."""
    project_id = ctx.project_id
    assert project_id is not None
    db = ctx.db
    async with db.transaction(project_id=project_id, readonly=True) as session:
        lst = (await session.execute(select(UserList).where(UserList.id == list_id))).scalar_one_or_none()
        if lst is None or lst.type != "dynamic" or lst.version != version or lst.archived_at is not None:
            return False
        if not lst.published or lst.rule is None:
            return False
        root = validate_rule(lst.rule).root
        bounds = await queries.user_id_bounds(session, project_id)
    now = utcnow()
    if bounds is None:
        async with db.transaction(project_id=project_id) as session:
            await session.execute(
                delete(ListUser).where(ListUser.project_id == project_id, ListUser.list_id == list_id)
            )
    else:
        lo, hi = bounds
        start = lo
        while start <= hi:
            end = min(start + chunk - 1, hi)
            async with db.transaction(project_id=project_id) as session:
                current = (
                    await session.execute(select(UserList.version).where(UserList.id == list_id))
                ).scalar_one_or_none()
                if current != version:
                    return False
                await queries.materialise_range(
                    session,
                    dialect=db.dialect,
                    project_id=project_id,
                    list_id=list_id,
                    root=root,
                    now=now,
                    lo=start,
                    hi=end,
                )
            start = end + 1
    async with db.transaction(project_id=project_id) as session:
        lst = (await session.execute(select(UserList).where(UserList.id == list_id))).scalar_one_or_none()
        if lst is None or lst.version != version:
            return False
        await refresh_count(session, lst)
        lst.refreshed_at = now
        if lst.published:
            lst.state = "ready"
    return True


@job_handler(MATERIALISE_JOB)
async def materialise_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    await materialise(ctx, int(payload["list_id"]), int(payload["version"]))


async def _update_status(ctx: JobContext, list_id: int, **changes: Any) -> None:
    assert ctx.project_id is not None
    async with ctx.db.transaction(project_id=ctx.project_id) as session:
        lst = (await session.execute(select(UserList).where(UserList.id == list_id))).scalar_one_or_none()
        if lst is None:
            return
        status = dict(lst.import_status or {})
        status.update(changes)
        lst.import_status = status


@job_handler(IMPORT_JOB)
async def import_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Stream the uploaded CSV (column ``external_id``) into the list, 1,000 rows per transaction."""
    project_id = ctx.project_id
    assert project_id is not None
    list_id = int(payload["list_id"])
    path = Path(payload["path"])
    await _update_status(ctx, list_id, state="running", started_at=utcnow().isoformat())
    processed = added = failed = 0
    errors: list[dict[str, Any]] = []

    async def flush(batch: list[tuple[int, str]]) -> None:
        nonlocal added, failed
        async with ctx.db.transaction(project_id=project_id) as session:
            lst = (await session.execute(select(UserList).where(UserList.id == list_id))).scalar_one_or_none()
            if lst is None:
                return
            found = await resolve_external_ids(session, project_id, [ext for _, ext in batch])
            for row_number, ext in batch:
                if ext not in found:
                    failed += 1
                    if len(errors) < MAX_IMPORT_ERRORS:
                        errors.append({"row": row_number, "external_id": ext, "message": UNKNOWN_USER})
            added += await add_user_ids(session, project_id, list_id, list(found.values()))
            await refresh_count(session, lst)
            status = dict(lst.import_status or {})
            status.update(processed_rows=processed, added_rows=added, failed_rows=failed, errors=list(errors))
            lst.import_status = status

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # noqa: ASYNC230 (local file, read by line)
            reader = csv.DictReader(handle)
            column = next((f for f in (reader.fieldnames or []) if f.strip().lower() == "external_id"), None)
            if column is None:
                raise ValueError("The CSV has no external_id column.")
            batch: list[tuple[int, str]] = []
            for row in reader:
                processed += 1
                value = (row.get(column) or "").strip()
                if not value:
                    failed += 1
                    if len(errors) < MAX_IMPORT_ERRORS:
                        errors.append({"row": processed, "external_id": None, "message": "external_id is empty."})
                    continue
                batch.append((processed, value))
                if len(batch) >= MAX_BATCH:
                    await flush(batch)
                    batch = []
            if batch:
                await flush(batch)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        await _update_status(
            ctx,
            list_id,
            state="failed",
            finished_at=utcnow().isoformat(),
            error=str(exc),
            processed_rows=processed,
            added_rows=added,
            failed_rows=failed,
            errors=errors,
        )
        _remove(path)
        return
    await _update_status(
        ctx,
        list_id,
        state="finished",
        finished_at=utcnow().isoformat(),
        processed_rows=processed,
        added_rows=added,
        failed_rows=failed,
        errors=errors,
    )
    _remove(path)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


REFRESH_INTERVAL = timedelta(minutes=15)


def _has_rolling_window(node: Node) -> bool:
    if isinstance(node, EventRule):
        return node.frequency is not None and node.frequency.kind == "rolling"
    if isinstance(node, Group):
        return any(_has_rolling_window(k) for k in node.children)
    return False


async def refresh_windowed_lists(db: Database) -> int:
    """Periodic duty: rolling windows move with time, so re-materialise lists that use one.

    Lists refreshed within ``REFRESH_INTERVAL`` are skipped; the job keeps the list ``ready``
    (members stay readable) and is version-checked like any materialisation.
    """
    cutoff = utcnow() - REFRESH_INTERVAL
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(UserList.id, UserList.project_id, UserList.version, UserList.rule).where(
                    UserList.type == "dynamic",
                    UserList.state == "ready",
                    UserList.published.is_(True),
                    UserList.archived_at.is_(None),
                    UserList.refreshed_at < cutoff,
                )
            )
        ).all()
        queued = 0
        for row in rows:
            if row.rule is None or not _has_rolling_window(validate_rule(row.rule).root):
                continue
            await enqueue_job(
                session, MATERIALISE_JOB, {"list_id": row.id, "version": row.version}, project_id=row.project_id
            )
            queued += 1
    return queued
