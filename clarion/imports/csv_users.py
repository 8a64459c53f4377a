"""Streaming CSV → users. The file is read incrementally (``csv`` over a text stream) and
written in bounded batches, so memory stays flat whatever the file size.

Header names ``external_id``, ``anonymous_id``, ``email``, ``phone``, ``timezone``, ``locale``
map to first-class fields (case-insensitive); every other column becomes a string attribute in
``data`` (empty cells are skipped). Row numbers count the header as row 1.

On PostgreSQL, rows identified by ``external_id`` alone go through ``COPY`` into a temporary
staging table and one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` per batch; rows carrying an
``anonymous_id`` (identity linking) and every row on SQLite use the shared user upsert.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import Database
from clarion.core.sql import dialect_name
from clarion.dataschema.service import collect_paths, record_paths
from clarion.lists.service import add_imported_users, on_users_changed
from clarion.users.upsert import upsert_users
from clarion.users.validation import ItemInvalid, UserChange, parse_user_item

FIRST_CLASS = ("external_id", "anonymous_id", "email", "phone", "timezone", "locale")
BATCH_ROWS = 5000
MAX_ERRORS = 1000

ProgressCallback = Callable[["ImportProgress"], Awaitable[None]]


@dataclass
class ImportProgress:
    processed: int = 0
    imported: int = 0
    failed: int = 0
    bytes_read: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, row: int, code: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"row": row, "code": code, "message": message})


class HeaderInvalid(ValueError):
    pass


def _rows(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    text_stream = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        yield from _records(csv.reader(text_stream))
    finally:
        text_stream.detach()  # the caller owns (and keeps reading the position of) the binary file


def _records(reader: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        header = next(reader)
    except StopIteration:
        raise HeaderInvalid("The file is empty; the first row must name the columns.") from None
    names = [h.strip() for h in header]
    keys = [n.lower() if n.lower() in FIRST_CLASS else n for n in names]
    if "external_id" not in keys and "anonymous_id" not in keys:
        raise HeaderInvalid("The header needs an external_id or anonymous_id column.")
    row_number = 1
    for record in reader:
        row_number += 1
        if not any(cell.strip() for cell in record):
            continue
        item: dict[str, Any] = {}
        data: dict[str, Any] = {}
        for key, cell in zip(keys, record, strict=False):
            value = cell.strip()
            if not key or not value:
                continue
            if key in FIRST_CLASS:
                item[key] = value
            else:
                data[key] = value
        if data:
            item["data"] = data
        yield row_number, item


async def _stage_and_merge(session: AsyncSession, project_id: int, changes: list[UserChange]) -> list[int]:
    """PostgreSQL: COPY the batch into a staging table, then merge it into ``users`` in one statement."""
    merged: dict[str, UserChange] = {}
    for change in changes:  # ON CONFLICT cannot touch a row twice: fold repeats first
        assert change.external_id is not None
        previous = merged.get(change.external_id)
        if previous is None:  # CSV cells are never null: an absent field means "keep"
            merged[change.external_id] = change
        else:
            previous.fields.update(change.fields)
            previous.data = {**(previous.data or {}), **(change.data or {})}
    await session.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS import_users_stage (external_id text, email text, phone text,"
            " timezone text, locale text, data jsonb) ON COMMIT DELETE ROWS"
        )
    )
    records = [
        (
            ext,
            c.fields.get("email"),
            c.fields.get("phone"),
            c.fields.get("timezone"),
            c.fields.get("locale"),
            orjson.dumps(c.data or {}).decode(),
        )
        for ext, c in merged.items()
    ]
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        "import_users_stage",
        records=records,
        columns=["external_id", "email", "phone", "timezone", "locale", "data"],
    )
    # ux_users_project_external is the conflict target.
    result = await session.execute(
        text(
            """
            INSERT INTO users (project_id, external_id, email, phone, timezone, locale, data, devices,
                               has_push_device, created_at, updated_at)
            SELECT :project_id, s.external_id, s.email, s.phone, s.timezone, s.locale, s.data, '[]'::jsonb,
                   false, now(), now()
            FROM import_users_stage s
            ON CONFLICT (project_id, external_id) DO UPDATE SET
                email = COALESCE(EXCLUDED.email, users.email),
                phone = COALESCE(EXCLUDED.phone, users.phone),
                timezone = COALESCE(EXCLUDED.timezone, users.timezone),
                locale = COALESCE(EXCLUDED.locale, users.locale),
                data = users.data || EXCLUDED.data,
                updated_at = EXCLUDED.updated_at
            RETURNING id
            """
        ),
        {"project_id": project_id},
    )
    ids = [r[0] for r in result]
    await session.execute(text("DELETE FROM import_users_stage"))
    return ids


async def add_to_list(session: AsyncSession, project_id: int, list_id: int, user_ids: list[int]) -> None:
    """Static-list membership for imported users (ignored when the list is not a static list here)."""
    if user_ids:
        await add_imported_users(session, project_id, list_id, user_ids)


async def _write_batch(db: Database, project_id: int, batch: list[tuple[int, UserChange]], list_id: int | None) -> int:
    async with db.transaction(project_id=project_id) as session:
        if dialect_name(session) == "postgresql":
            fast = [c for _, c in batch if c.anonymous_id is None]
            slow = [c for _, c in batch if c.anonymous_id is not None]
            ids = await _stage_and_merge(session, project_id, fast) if fast else []
            if ids:
                # The staged merge bypasses upsert_users: keep dynamic lists current here.
                await on_users_changed(session, project_id, ids)
        else:
            slow = [c for _, c in batch]
            ids = []
        if slow:
            ids.extend(row["id"] for row in await upsert_users(session, project_id, slow))
        paths: dict[tuple[str, str, str], str] = {}
        for _, change in batch:
            collect_paths("user", "", change.data, paths)
        if paths:
            await record_paths(session, project_id, paths)
        if list_id is not None:
            await add_to_list(session, project_id, list_id, sorted(set(ids)))
    return len(batch)


async def import_users_csv(
    db: Database,
    project_id: int,
    path: Path,
    *,
    list_id: int | None = None,
    progress: ProgressCallback | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportProgress:
    """Import ``path``; invalid rows are reported (with row numbers) and skipped."""
    state = ImportProgress()
    with path.open("rb") as raw:
        batch: list[tuple[int, UserChange]] = []

        async def flush() -> None:
            if batch:
                state.imported += await _write_batch(db, project_id, batch, list_id)
                batch.clear()
            state.bytes_read = raw.tell()
            if progress is not None:
                await progress(state)

        for row_number, item in _rows(raw):
            state.processed += 1
            try:
                batch.append((row_number, parse_user_item(item)))
            except ItemInvalid as exc:
                state.error(row_number, exc.code.value, exc.message)
            if state.processed % batch_rows == 0:
                await flush()
        await flush()
    return state
