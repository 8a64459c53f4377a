"""`GET /health`: liveness (the process answers) and readiness (database reachable, schema current)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import text

from clarion.core.migrations import current_revision, head_revision

router = APIRouter(tags=["health"])


class HealthChecks(BaseModel):
    database: Literal["ok", "unreachable"]
    migrations: Literal["current", "behind", "unknown"]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    live: bool
    ready: bool
    checks: HealthChecks


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request, response: Response) -> Health:
    db = request.app.state.db
    database: Literal["ok", "unreachable"] = "ok"
    migrations: Literal["current", "behind", "unknown"] = "unknown"
    try:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            revision = await conn.run_sync(current_revision)
        migrations = "current" if revision == head_revision() else "behind"
    except Exception:
        database = "unreachable"
    ready = database == "ok" and migrations == "current"
    if not ready:
        response.status_code = 503
    return Health(
        status="ok" if ready else "unavailable",
        live=True,
        ready=ready,
        checks=HealthChecks(database=database, migrations=migrations),
    )
