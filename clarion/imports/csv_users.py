"""Streaming CSV → users, parsed and written as a pipeline.

The file is read incrementally (stdlib ``csv`` over a text stream) in batches of 10,000 rows; a
worker thread parses and validates the next batch while the current one is being written, and at
most one parsed batch waits, so memory stays flat whatever the file size.

Header names ``external_id``, ``anonymous_id``, ``email``, ``phone``, ``timezone``, ``locale``
map to first-class fields (case-insensitive); every other column becomes a string attribute in
``data`` (empty cells are skipped). Row numbers count the header as row 1.

Rows are parsed by position (the header is mapped to column indexes once). Email addresses go
through ``normalise_email`` (an ASCII fast path with email-validator's cached verdict per domain;
email-validator decides anything unusual); phone numbers, timezones and locales are validated once
per distinct value in a batch.

Writing: on PostgreSQL a batch whose rows are identified by ``external_id`` alone is ``COPY``'d
into a temporary staging table and merged with one ``INSERT … SELECT … ON CONFLICT DO UPDATE``.
A batch in which any row carries an ``anonymous_id`` (identity linking), and every batch on SQLite,
goes through the shared user upsert, which applies the rows in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ErrorCode
from clarion.core.db import Database
from clarion.core.sql import dialect_name
from clarion.dataschema.service import collect_paths, record_paths
from clarion.lists.service import add_imported_users, on_users_changed
from clarion.users.upsert import upsert_users
from clarion.users.validation import (
    IDENTIFIER_MAX,
    ItemInvalid,
    UserChange,
    normalise_email,
    normalise_locale,
    normalise_phone,
    normalise_timezone,
    parse_user_item,
)

FIRST_CLASS = ("external_id", "anonymous_id", "email", "phone", "timezone", "locale")
PROFILE = ("email", "phone", "timezone", "locale")
BATCH_ROWS = 10_000
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


# One valid row: external_id, anonymous_id, email, phone, timezone, locale (None = absent), data.
Row = tuple[str | None, str | None, str | None, str | None, str | None, str | None, dict[str, str] | None]
StageRecord = tuple[str, str | None, str | None, str | None, str | None, str]


@dataclass
class Batch:
    """One parsed batch: valid rows in file order, per-row errors, and what the data columns hold."""

    rows: list[Row] = field(default_factory=list)
    processed: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    first_values: dict[str, str] = field(default_factory=dict)  # data column -> first value seen
    has_anonymous: bool = False
    bytes_read: int = 0
    # PostgreSQL's staging rows (repeats folded, data encoded), built in the parse thread so the
    # writer only copies them; None when the batch needs the general upsert.
    stage_records: list[StageRecord] | None = None


_MISSING_ID = ItemInvalid(ErrorCode.parameter_missing, "external_id: external_id or anonymous_id is required.")


class BatchParser:
    """Reads a binary CSV stream and returns it batch by batch (``next_batch`` may run in a
    worker thread; calls must not overlap)."""

    def __init__(self, stream: BinaryIO, batch_rows: int = BATCH_ROWS, *, stage: bool = False) -> None:
        self._raw = stream
        self._stage = stage
        self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        self._reader: Iterator[list[str]] = csv.reader(self._text)
        self._batch_rows = batch_rows
        self._row_number = 1
        self._header: list[str] | None = None
        self._done = False

    def close(self) -> None:
        self._text.detach()  # the caller owns (and keeps reading the position of) the binary file

    def _read_header(self) -> None:
        try:
            header = next(self._reader)
        except StopIteration:
            raise HeaderInvalid("The file is empty; the first row must name the columns.") from None
        names = [h.strip() for h in header]
        keys = [n.lower() if n.lower() in FIRST_CLASS else n for n in names]
        if "external_id" not in keys and "anonymous_id" not in keys:
            raise HeaderInvalid("The header needs an external_id or anonymous_id column.")
        self._header = keys
        width = len(keys)
        self._width = width
        # A column the header lacks reads the empty cell appended after the last column.
        index = {key: width for key in FIRST_CLASS}
        for position, key in enumerate(keys):
            if key in FIRST_CLASS:
                index[key] = position  # a repeated column: the last one wins below as well
        self._index = index
        self._data_columns = [(i, key) for i, key in enumerate(keys) if key and key not in FIRST_CLASS]
        # Rare headers (repeated first-class columns, NUL in a name) take the general per-row path.
        first_class = [k for k in keys if k in FIRST_CLASS]
        self._general = len(first_class) != len(set(first_class)) or any("\x00" in k for k in keys)

    def _general_row(self, record: list[str]) -> dict[str, Any]:
        assert self._header is not None
        item: dict[str, Any] = {}
        data: dict[str, Any] = {}
        for key, cell in zip(self._header, record, strict=False):
            value = cell.strip()
            if not key or not value:
                continue
            if key in FIRST_CLASS:
                item[key] = value
            else:
                data[key] = value
        if data:
            item["data"] = data
        return item

    def next_batch(self) -> Batch | None:
        if self._done:
            return None
        if self._header is None:
            self._read_header()
        batch = Batch()
        rows, errors, first_values = batch.rows, batch.errors, batch.first_values
        width, index, data_columns = self._width, self._index, self._data_columns
        ext_i, anon_i = index["external_id"], index["anonymous_id"]
        email_i, phone_i, tz_i, locale_i = index["email"], index["phone"], index["timezone"], index["locale"]
        n_data = len(data_columns)
        # Each distinct phone/timezone/locale cell is checked once per batch (phonenumbers costs
        # 50-125 µs a number); the verdict is the normalised value or the error.
        checks: tuple[tuple[int, Callable[[str], str], dict[str, str | ItemInvalid]], ...] = (
            (phone_i, normalise_phone, {}),
            (tz_i, normalise_timezone, {}),
            (locale_i, normalise_locale, {}),
        )
        general = self._general
        row_number = self._row_number
        processed = 0
        for record in self._reader:
            row_number += 1
            joined = "".join(record)
            if not joined.strip():
                continue
            processed += 1
            try:
                if general or "\x00" in joined:
                    change = parse_user_item(self._general_row(record))
                    f = change.fields
                    row: Row = (
                        change.external_id,
                        change.anonymous_id,
                        f.get("email"),
                        f.get("phone"),
                        f.get("timezone"),
                        f.get("locale"),
                        change.data or None,
                    )
                else:
                    if len(record) != width:
                        record = (record + [""] * width)[:width]
                    record.append("")
                    ext = record[ext_i].strip() or None
                    if ext is not None and len(ext) > IDENTIFIER_MAX:
                        raise ItemInvalid(
                            ErrorCode.parameter_invalid_format, f"external_id: at most {IDENTIFIER_MAX} characters."
                        )
                    anon = record[anon_i].strip() or None
                    if anon is not None and len(anon) > IDENTIFIER_MAX:
                        raise ItemInvalid(
                            ErrorCode.parameter_invalid_format, f"anonymous_id: at most {IDENTIFIER_MAX} characters."
                        )
                    if ext is None and anon is None:
                        raise _MISSING_ID
                    email: str | None = record[email_i].strip()
                    email = normalise_email(email) if email else None
                    others: list[str | None] = []
                    for column, check, cache in checks:
                        value = record[column].strip()
                        if not value:
                            others.append(None)
                            continue
                        verdict = cache.get(value)
                        if verdict is None:
                            try:
                                verdict = check(value)
                            except ItemInvalid as exc:
                                verdict = exc
                            cache[value] = verdict
                        if isinstance(verdict, ItemInvalid):
                            raise verdict
                        others.append(verdict)
                    data = {key: v for i, key in data_columns if (v := record[i].strip())} if n_data else None
                    row = (ext, anon, email, others[0], others[1], others[2], data or None)
            except ItemInvalid as exc:
                errors.append((row_number, exc.code.value, exc.message))
            else:
                rows.append(row)
                if row[1] is not None:
                    batch.has_anonymous = True
                if row[6] and len(first_values) < n_data:
                    for key, value in row[6].items():
                        first_values.setdefault(key, value)
            if processed >= self._batch_rows:
                break
        else:
            self._done = True
        self._row_number = row_number
        batch.processed = processed
        batch.bytes_read = self._raw.tell()
        if self._stage and not batch.has_anonymous:
            batch.stage_records = stage_records(rows)
        if self._done and not processed:
            return None
        return batch


def _change(row: Row) -> UserChange:
    fields: dict[str, str | None] = {
        name: value for name, value in zip(PROFILE, row[2:6], strict=True) if value is not None
    }
    return UserChange(row[0], row[1], fields, dict(row[6]) if row[6] else None)


_STAGE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS import_users_stage (external_id text, email text, phone text,"
    " timezone text, locale text, data jsonb) ON COMMIT DELETE ROWS"
)
_MERGE_SQL = """
    INSERT INTO users (project_id, external_id, email, phone, timezone, locale, data, devices,
                       has_push_device, created_at, updated_at)
    SELECT $1, s.external_id, s.email, s.phone, s.timezone, s.locale, s.data, '[]'::jsonb, false, now(), now()
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


def stage_records(rows: list[Row]) -> list[StageRecord]:
    """The staging rows of a batch identified by ``external_id`` alone: ``ON CONFLICT`` cannot
    touch a row twice, so repeats are folded in file order (an empty cell keeps the value)."""
    merged: dict[str, list[Any]] = {}
    for ext, _anon, email, phone, tz, locale, data in rows:
        assert ext is not None
        previous = merged.get(ext)
        if previous is None:
            merged[ext] = [ext, email, phone, tz, locale, data]
            continue
        for position, value in enumerate((email, phone, tz, locale), start=1):
            if value is not None:
                previous[position] = value
        if data:
            previous[5] = {**previous[5], **data} if previous[5] else data
    dumps = orjson.dumps
    return [(v[0], v[1], v[2], v[3], v[4], dumps(v[5]).decode() if v[5] else "{}") for v in merged.values()]


async def _merge_external(session: AsyncSession, project_id: int, records: list[StageRecord]) -> list[int]:
    """PostgreSQL, rows identified by ``external_id`` alone: ``COPY`` the batch into a temporary
    staging table, then one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` (``ux_users_project_external``
    is the conflict target). Both run on the driver connection: the binary COPY encodes each value
    once, where array parameters cost a type probe per element, and the returned ids skip the
    ORM's row processing. ``ON COMMIT DELETE ROWS`` empties the stage with the transaction."""
    await session.execute(text(_STAGE_SQL))
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    await driver.copy_records_to_table(
        "import_users_stage",
        records=records,
        columns=["external_id", "email", "phone", "timezone", "locale", "data"],
    )
    return [r[0] for r in await driver.fetch(_MERGE_SQL, project_id)]


async def _write_batch(db: Database, project_id: int, batch: Batch, list_id: int | None) -> int:
    rows = batch.rows
    if not rows:
        return 0
    async with db.transaction(project_id=project_id) as session:
        if dialect_name(session) == "postgresql" and not batch.has_anonymous:
            records = batch.stage_records if batch.stage_records is not None else stage_records(rows)
            ids = await _merge_external(session, project_id, records)
            # The multi-row upsert bypasses upsert_users: keep dynamic lists and the schema current.
            await on_users_changed(session, project_id, ids)
            paths: dict[tuple[str, str, str], str] = {}
            collect_paths("user", "", batch.first_values, paths)
            if paths:
                await record_paths(session, project_id, paths)
        else:
            # Identity linking depends on order (an anonymous row, then the row that identifies it):
            # the shared upsert applies the whole batch in file order.
            # (A visitor created and identified within the batch folds into the identified user and
            # has no id of its own.)
            results = await upsert_users(session, project_id, [_change(r) for r in rows])
            ids = [int(r["id"]) for r in results if r.get("id") is not None]
        if list_id is not None and ids:
            await add_imported_users(session, project_id, list_id, sorted(set(ids)))
    return len(rows)


async def import_users_csv(
    db: Database,
    project_id: int,
    path: Path,
    *,
    list_id: int | None = None,
    progress: ProgressCallback | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportProgress:
    """Import ``path``; invalid rows are reported (with row numbers) and skipped.

    The next batch is parsed in a worker thread while the current one is written; no more than
    one parsed batch waits for the writer.
    """
    state = ImportProgress()
    with path.open("rb") as raw:
        parser = BatchParser(raw, batch_rows, stage=db.is_postgres)
        pending: asyncio.Future[Batch | None] = asyncio.ensure_future(asyncio.to_thread(parser.next_batch))
        try:
            while (batch := await pending) is not None:
                pending = asyncio.ensure_future(asyncio.to_thread(parser.next_batch))
                state.processed += batch.processed
                for row_number, code, message in batch.errors:
                    state.error(row_number, code, message)
                state.imported += await _write_batch(db, project_id, batch, list_id)
                state.bytes_read = batch.bytes_read
                if progress is not None:
                    await progress(state)
        finally:
            if not pending.done():  # the thread cannot be interrupted: let it finish before closing
                await asyncio.wait([pending])
            if not pending.cancelled():
                with contextlib.suppress(BaseException):
                    pending.exception()
            parser.close()
    return state
