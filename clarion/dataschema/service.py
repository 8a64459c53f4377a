"""Recording written paths (batched, cached), visibility, classified stripping, rebuild."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import not_found
from clarion.core.clock import utcnow
from clarion.core.sql import insert_for
from clarion.dataschema.inference import leaf_paths, remove_path
from clarion.dataschema.models import DataSchemaPath

PATHS: Table = DataSchemaPath.__table__  # type: ignore[assignment]
VISIBILITIES = ("public", "hidden", "classified")

# Paths this process has recently seen recorded, so a hot write path skips the upsert entirely.
# Entries expire so a rebuild in another process is picked up again within the TTL.
_SEEN_TTL = 60.0
_SEEN_MAX = 200_000
# Keyed by database too: one process (e.g. the test suite) may talk to several databases whose
# project ids coincide.
_seen: dict[tuple[str, int, str, str, str], float] = {}


def _remember(keys: Iterable[tuple[str, int, str, str, str]]) -> None:
    if len(_seen) > _SEEN_MAX:
        _seen.clear()
    now = time.monotonic()
    for key in keys:
        _seen[key] = now


def forget_project(project_id: int) -> None:
    for key in [k for k in _seen if k[1] == project_id]:
        _seen.pop(key, None)


def collect_paths(
    kind: str, event_name: str, document: dict[str, Any] | None, into: dict[tuple[str, str, str], str]
) -> None:
    """Add the leaf paths of ``document`` to ``into`` (first type seen wins)."""
    if not document:
        return
    for path, data_type in leaf_paths(document):
        into.setdefault((kind, event_name, path), data_type)


def remember_paths(database: str, project_id: int, paths: Iterable[tuple[str, str, str]]) -> None:
    """Note paths registered elsewhere (the events fast path) so the next write skips them."""
    _remember((database, project_id, *key) for key in paths)


async def record_paths(session: AsyncSession, project_id: int, paths: dict[tuple[str, str, str], str]) -> None:
    """Register new paths in one statement; known ones keep their type and visibility."""
    now_mono = time.monotonic()
    database = str(session.get_bind().engine.url)
    fresh = [key for key in paths if now_mono - _seen.get((database, project_id, *key), -_SEEN_TTL * 2) > _SEEN_TTL]
    if not fresh:
        return
    now = utcnow()
    rows = [
        {
            "project_id": project_id,
            "kind": kind,
            "event_name": event_name[:255],
            "path": path[:500],
            "data_type": paths[(kind, event_name, path)],
            "visibility": "public",
            "created_at": now,
            "updated_at": now,
        }
        for kind, event_name, path in sorted(fresh)
    ]
    stmt = insert_for(session, PATHS).on_conflict_do_nothing(
        index_elements=["project_id", "kind", "event_name", "path"]
    )
    await (await session.connection()).execute(stmt, rows)
    _remember((database, project_id, *key) for key in fresh)


async def classified_user_paths(session: AsyncSession, project_id: int) -> list[str]:
    rows = await (await session.connection()).execute(_CLASSIFIED_USER_PATHS, {"project_id": project_id})
    return [r[0] for r in rows]


# Read on every user response: built once, ``project_id`` bound per call.
_CLASSIFIED_USER_PATHS = select(PATHS.c.path).where(
    PATHS.c.project_id == bindparam("project_id"), PATHS.c.kind == "user", PATHS.c.visibility == "classified"
)


def strip_paths(data: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    if not paths:
        return data
    out = copy.deepcopy(data)
    for path in paths:
        remove_path(out, path)
    return out


async def get_path(session: AsyncSession, path_id: int) -> DataSchemaPath:
    row = (await session.execute(select(DataSchemaPath).where(DataSchemaPath.id == path_id))).scalar_one_or_none()
    if row is None:
        raise not_found("data schema path", "id")
    return row


async def set_visibility(session: AsyncSession, row: DataSchemaPath, visibility: str) -> DataSchemaPath:
    row.visibility = visibility
    row.updated_at = utcnow()
    await session.flush()
    return row


async def replace_paths(session: AsyncSession, project_id: int, found: dict[tuple[str, str, str], str]) -> int:
    """Make the recorded paths exactly ``found``: add missing ones, drop absent ones, keep visibility."""
    existing = {
        (r.kind, r.event_name, r.path): r.id
        for r in await session.execute(
            select(PATHS.c.id, PATHS.c.kind, PATHS.c.event_name, PATHS.c.path).where(PATHS.c.project_id == project_id)
        )
    }
    stale = [ident for key, ident in existing.items() if key not in found]
    for start in range(0, len(stale), 500):
        chunk = stale[start : start + 500]
        await session.execute(delete(PATHS).where(PATHS.c.project_id == project_id, PATHS.c.id.in_(chunk)))
    forget_project(project_id)
    missing = {key: value for key, value in found.items() if key not in existing}
    items = list(missing.items())
    for start in range(0, len(items), 500):
        await record_paths(session, project_id, dict(items[start : start + 500]))
    return len(found)
