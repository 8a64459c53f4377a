"""Background job behind `PATCH /users`: the validated items, upserted in one transaction."""

from __future__ import annotations

from typing import Any

from clarion.users.upsert import upsert_users
from clarion.users.validation import UserChange
from clarion.worker.jobs import JobContext, job_handler

UPSERT_JOB = "users.upsert"


@job_handler(UPSERT_JOB)
async def run_user_upsert(ctx: JobContext, payload: dict[str, Any]) -> None:
    assert ctx.project_id is not None
    changes = [UserChange.from_payload(p) for p in payload.get("items", [])]
    async with ctx.db.transaction(project_id=ctx.project_id) as session:
        await upsert_users(session, ctx.project_id, changes)
