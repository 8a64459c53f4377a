"""`POST /data-schema/rebuild`: rescan every user and event, in bounded batches, as a job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select

from clarion.dataschema.service import collect_paths, replace_paths
from clarion.events.models import Event
from clarion.users.models import User
from clarion.worker.jobs import JobContext, job_handler

REBUILD_JOB = "dataschema.rebuild"
BATCH = 2000


async def _scan(ctx: JobContext, table: Table, columns: list[Any], found: dict[tuple[str, str, str], str]) -> None:
    assert ctx.project_id is not None
    last_id = 0
    while True:
        async with ctx.db.transaction(project_id=ctx.project_id, readonly=True) as session:
            rows = list(
                await session.execute(
                    select(table.c.id, *columns)
                    .where(table.c.project_id == ctx.project_id, table.c.id > last_id)
                    .order_by(table.c.id)
                    .limit(BATCH)
                )
            )
        if not rows:
            return
        for row in rows:
            if len(row) == 3:
                collect_paths("event", row[1], row[2], found)
            else:
                collect_paths("user", "", row[1], found)
        last_id = rows[-1][0]


@job_handler(REBUILD_JOB)
async def run_rebuild(ctx: JobContext, payload: dict[str, Any]) -> None:
    del payload
    assert ctx.project_id is not None
    found: dict[tuple[str, str, str], str] = {}
    users: Table = User.__table__  # type: ignore[assignment]
    events: Table = Event.__table__  # type: ignore[assignment]
    await _scan(ctx, users, [users.c.data], found)
    await _scan(ctx, events, [events.c.name, events.c.data], found)
    async with ctx.db.transaction(project_id=ctx.project_id) as session:
        await replace_paths(session, ctx.project_id, found)
