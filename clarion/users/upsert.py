"""The one user upsert every write path uses (batch API, async PATCH, events, imports).

Per call: one SELECT of every user the batch names (``FOR UPDATE`` on PostgreSQL when the batch
changes profiles), the identity decisions in Python (items apply in order, so repeats within a
batch accumulate), then at most one multi-row INSERT and one executemany UPDATE. A concurrent
insert of the same identity surfaces as a unique violation; the savepoint is rolled back and the
whole batch re-planned against the now-visible rows.

Identity rules (``external_id`` is the upsert key):
- external only / anonymous only: update that user, or create it.
- both, neither known: create one user carrying both.
- both, only the external user known: it takes the anonymous id (if no other user holds it).
- both, only an anonymous user known that has no external id: it is identified in place.
- both, each known as a different user, the anonymous one unidentified: the anonymous user is
  merged into the identified one (events, subscription states move; see ``merge_users``).
- an anonymous id already held by a *different identified* user is left where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    CursorResult,
    DateTime,
    Select,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import utcnow
from clarion.core.db import json_dumps
from clarion.core.sql import dialect_name
from clarion.dataschema.service import collect_paths, record_paths
from clarion.lists.service import on_users_changed
from clarion.users.merge import merge_users
from clarion.users.models import User
from clarion.users.validation import UserChange, deep_merge

USERS: Table = User.__table__  # type: ignore[assignment]
COLUMNS = [c.name for c in USERS.columns]
_MUTABLE = ("external_id", "anonymous_id", "email", "phone", "timezone", "locale", "data")


@dataclass
class _Plan:
    records: list[dict[str, Any]] = field(default_factory=list)  # every record touched, by position
    dirty: set[int] = field(default_factory=set)  # positions of existing records to UPDATE
    new: list[int] = field(default_factory=list)  # positions of records to INSERT
    merges: list[tuple[int, int]] = field(default_factory=list)  # (source position, target position)
    per_item: list[int] = field(default_factory=list)  # item index -> record position


def _apply(record: dict[str, Any], change: UserChange) -> bool:
    changed = False
    for name, value in change.fields.items():
        if name in change.fill_only and record.get(name):
            continue
        if record.get(name) != value:
            record[name] = value
            changed = True
    if change.data:
        merged = deep_merge(record.get("data") or {}, change.data)
        if merged != record.get("data"):
            record["data"] = merged
            changed = True
    return changed


def _plan(rows: list[dict[str, Any]], changes: list[UserChange]) -> _Plan:
    plan = _Plan()
    by_ext: dict[str, int] = {}
    by_anon: dict[str, int] = {}
    for row in rows:
        pos = len(plan.records)
        plan.records.append(dict(row))
        if row["external_id"] is not None:
            by_ext[row["external_id"]] = pos
        if row["anonymous_id"] is not None:
            by_anon[row["anonymous_id"]] = pos
    merged_away: set[int] = set()

    def create(ext: str | None, anon: str | None) -> int:
        pos = len(plan.records)
        plan.records.append({"id": None, "external_id": ext, "anonymous_id": anon, "data": {}})
        plan.new.append(pos)
        if ext is not None:
            by_ext[ext] = pos
        if anon is not None:
            by_anon[anon] = pos
        return pos

    def touch(pos: int) -> None:
        if plan.records[pos]["id"] is not None:
            plan.dirty.add(pos)

    for change in changes:
        ext, anon = change.external_id, change.anonymous_id
        e_pos = by_ext.get(ext) if ext is not None else None
        a_pos = by_anon.get(anon) if anon is not None else None
        if ext is None:
            pos = a_pos if a_pos is not None else create(None, anon)
        elif anon is None:
            pos = e_pos if e_pos is not None else create(ext, None)
        elif e_pos is None and a_pos is None:
            pos = create(ext, anon)
        elif a_pos is None:
            assert e_pos is not None
            pos = e_pos
            if plan.records[pos]["anonymous_id"] != anon:
                old = plan.records[pos]["anonymous_id"]
                if old is not None:
                    by_anon.pop(old, None)
                plan.records[pos]["anonymous_id"] = anon
                by_anon[anon] = pos
                touch(pos)
        elif e_pos is None:
            anon_record = plan.records[a_pos]
            if anon_record["external_id"] is None:
                pos = a_pos
                anon_record["external_id"] = ext
                by_ext[ext] = pos
                touch(pos)
            else:
                pos = create(ext, None)
        elif e_pos == a_pos:
            pos = e_pos
        else:
            pos = e_pos
            anon_record = plan.records[a_pos]
            if anon_record["external_id"] is None:
                # The anonymous visitor identified as an existing user: fold it in.
                anon_record["anonymous_id"] = None
                target = plan.records[pos]
                target["data"] = deep_merge(anon_record.get("data") or {}, target.get("data") or {})
                for name in ("email", "phone", "timezone", "locale"):
                    if not target.get(name) and anon_record.get(name):
                        target[name] = anon_record[name]
                old = target["anonymous_id"]
                if old is not None:
                    by_anon.pop(old, None)
                target["anonymous_id"] = anon
                by_anon[anon] = pos
                if anon_record["id"] is None:
                    plan.new.remove(a_pos)
                else:
                    plan.merges.append((a_pos, pos))
                    merged_away.add(a_pos)
                plan.dirty.discard(a_pos)
                touch(pos)
        if _apply(plan.records[pos], change):
            touch(pos)
        plan.per_item.append(pos)
    return plan


_IDENTITY = (USERS.c.id, USERS.c.external_id, USERS.c.anonymous_id)


@lru_cache(maxsize=8)
def _probe_statement(external: bool, ids_only: bool, lock: bool) -> Select[Any]:
    """One probe of the unique index per key of ``unnest(:keys)``, built once per variant.

    The probe is a ``LATERAL`` sub-select with ``LIMIT 1`` (the key is unique anyway), so the
    planner cannot turn it into a join: with statistics that lag a fast-growing project it hashed
    every user of the project for each request (13 ms at 20,000 users, growing with the project).
    With ``lock`` the rows found are then read again by primary key and locked in id order, the
    order every other locking read of users takes, so concurrent batches cannot deadlock.
    """
    column = USERS.c.external_id if external else USERS.c.anonymous_id
    columns = _IDENTITY if ids_only else (USERS,)
    keys = func.unnest(bindparam("keys", type_=ARRAY(String))).table_valued("v").render_derived(name="k")
    if not lock:
        probe = (
            select(*columns).where(USERS.c.project_id == bindparam("project_id"), column == keys.c.v).limit(1)
        ).lateral("u")
        return select(*probe.c).select_from(keys.join(probe, true())).order_by(probe.c.id)
    found = (
        select(USERS.c.id).where(USERS.c.project_id == bindparam("project_id"), column == keys.c.v).limit(1)
    ).lateral("u")
    ids = select(func.array_agg(found.c.id)).select_from(keys.join(found, true())).scalar_subquery()
    # coalesce(…) makes it one array value (``= ANY(array)``: primary-key probes), not a row set.
    array_of_ids = func.coalesce(ids, literal_column("'{}'::bigint[]"))
    return (
        select(*columns)
        .where(USERS.c.id == any_(array_of_ids))  # ids the project-filtered probe found
        .order_by(USERS.c.id)
        .with_for_update()
    )


async def _select(
    session: AsyncSession, project_id: int, changes: list[UserChange], *, lock: bool, ids_only: bool = False
) -> list[dict[str, Any]]:
    """The users ``changes`` name; only their identity columns with ``ids_only``."""
    columns = _IDENTITY if ids_only else (USERS,)
    externals = sorted({c.external_id for c in changes if c.external_id is not None})
    anonymous = sorted({c.anonymous_id for c in changes if c.anonymous_id is not None})
    postgres = dialect_name(session) == "postgresql"
    if postgres and bool(externals) != bool(anonymous):
        # One kind of key: probe the unique index once per key. The ``IN (…)`` form below lets the
        # planner scan every user of the project (it filters on ``project_id`` alone whenever its
        # statistics lag, and prefers a sequential scan for small projects), so its cost grew with
        # the audience.
        stmt = _probe_statement(bool(externals), ids_only, lock)
        connection = await session.connection()  # Core path: project_id is filtered explicitly
        result = await connection.execute(stmt, {"project_id": project_id, "keys": externals or anonymous})
        return _dicts(result)
    conditions = []
    if externals:
        conditions.append(USERS.c.external_id.in_(externals))  # ux_users_project_external
    if anonymous:
        conditions.append(USERS.c.anonymous_id.in_(anonymous))  # ux_users_project_anonymous
    stmt = select(*columns).where(USERS.c.project_id == project_id, or_(*conditions)).order_by(USERS.c.id)
    if lock and postgres:
        stmt = stmt.with_for_update()
    connection = await session.connection()  # Core path: project_id is filtered explicitly above
    return _dicts(await connection.execute(stmt))


def _dicts(result: CursorResult[Any]) -> list[dict[str, Any]]:
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


async def _execute(session: AsyncSession, project_id: int, plan: _Plan) -> None:
    now = utcnow()
    for source, target in plan.merges:
        await merge_users(session, plan.records[source]["id"], plan.records[target]["id"])
    dirty = [plan.records[pos] for pos in sorted(plan.dirty)]
    if dirty:
        stmt = (
            update(USERS)
            .where(USERS.c.id == bindparam("_id"), USERS.c.project_id == project_id)
            .values({name: bindparam(f"_{name}") for name in (*_MUTABLE, "updated_at")})
        )
        params = []
        for record in dirty:
            record["updated_at"] = now
            params.append({"_id": record["id"], **{f"_{n}": record.get(n) for n in (*_MUTABLE, "updated_at")}})
        await (await session.connection()).execute(stmt, params)

    if plan.new and dialect_name(session) == "postgresql":
        await _pg_insert(session, project_id, plan, now, skipping=False)
    elif plan.new:
        values = _new_rows(project_id, plan, now)
        result = await (await session.connection()).execute(
            USERS.insert().returning(USERS.c.id, sort_by_parameter_order=True), values
        )
        for pos, row, inserted in zip(plan.new, result, values, strict=True):
            plan.records[pos].update(inserted)
            plan.records[pos]["id"] = row[0]


def _new_rows(project_id: int, plan: _Plan, now: datetime) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    for pos in plan.new:
        record = plan.records[pos]
        values.append(
            {
                "project_id": project_id,
                "external_id": record.get("external_id"),
                "anonymous_id": record.get("anonymous_id"),
                "email": record.get("email"),
                "phone": record.get("phone"),
                "timezone": record.get("timezone"),
                "locale": record.get("locale"),
                "data": record.get("data") or {},
                "devices": [],
                "has_push_device": False,
                "created_at": now,
                "updated_at": now,
            }
        )
    return values


# PostgreSQL: new users go in as one statement with a fixed text, the columns passed as arrays
# (no per-row parameter processing or multi-VALUES rendering). ``ON CONFLICT DO NOTHING`` covers
# either unique index; the returned identities map the ids back to the rows.
_PG_INSERT_SQL = (
    "INSERT INTO users (project_id, external_id, anonymous_id, email, phone, timezone, locale, data, devices,"
    " has_push_device, created_at, updated_at)"
    " SELECT :project_id, u.external_id, u.anonymous_id, u.email, u.phone, u.timezone, u.locale, u.data::jsonb,"
    " '[]'::jsonb, false, :now, :now"
    " FROM unnest(:external_ids, :anonymous_ids, :emails, :phones, :timezones, :locales, :datas)"
    " AS u(external_id, anonymous_id, email, phone, timezone, locale, data)"
)
_PG_INSERT_PARAMS: list[BindParameter[Any]] = [
    *(
        bindparam(name, type_=ARRAY(String))
        for name in ("external_ids", "anonymous_ids", "emails", "phones", "timezones", "locales")
    ),
    bindparam("datas", type_=ARRAY(Text)),
    bindparam("now", type_=DateTime(timezone=True)),
]
_PG_INSERT = text(_PG_INSERT_SQL + " RETURNING id, external_id, anonymous_id").bindparams(*_PG_INSERT_PARAMS)
_PG_INSERT_SKIPPING = text(
    _PG_INSERT_SQL + " ON CONFLICT DO NOTHING RETURNING id, external_id, anonymous_id"
).bindparams(*_PG_INSERT_PARAMS)


async def _pg_insert(session: AsyncSession, project_id: int, plan: _Plan, now: datetime, *, skipping: bool) -> bool:
    """Insert ``plan.new`` (PostgreSQL); returns whether every row went in (``skipping`` may skip some)."""
    values = _new_rows(project_id, plan, now)
    params = {
        "project_id": project_id,
        "now": now,
        "external_ids": [v["external_id"] for v in values],
        "anonymous_ids": [v["anonymous_id"] for v in values],
        "emails": [v["email"] for v in values],
        "phones": [v["phone"] for v in values],
        "timezones": [v["timezone"] for v in values],
        "locales": [v["locale"] for v in values],
        "datas": [json_dumps(v["data"]) for v in values],
    }
    result = await (await session.connection()).execute(_PG_INSERT_SKIPPING if skipping else _PG_INSERT, params)
    # Every new record has a distinct (external_id, anonymous_id): the plan creates each identity once.
    ids = {(ext, anon): ident for ident, ext, anon in result}
    complete = True
    for pos, inserted in zip(plan.new, values, strict=True):
        ident = ids.get((inserted["external_id"], inserted["anonymous_id"]))
        if ident is None:
            complete = False
            continue
        plan.records[pos].update(inserted)
        plan.records[pos]["id"] = ident
    return complete


async def _insert_skipping_conflicts(session: AsyncSession, project_id: int, plan: _Plan) -> bool:
    """PostgreSQL, a plan that only creates users: ``INSERT … ON CONFLICT DO NOTHING`` (either
    unique index), so a concurrent creator of the same identity costs no savepoint. Returns whether
    every row went in; if not, the caller re-plans against the rows that now exist."""
    return await _pg_insert(session, project_id, plan, utcnow(), skipping=True)


def _identity_changed(rows: list[dict[str, Any]], plan: _Plan) -> bool:
    """Whether an existing record of ``plan`` (the first ``len(rows)`` records) gets a new identifier."""
    return any(
        plan.records[pos]["external_id"] != rows[pos]["external_id"]
        or plan.records[pos]["anonymous_id"] != rows[pos]["anonymous_id"]
        for pos in plan.dirty
    )


async def upsert_users(
    session: AsyncSession, project_id: int, changes: list[UserChange], *, ids_only: bool = False
) -> list[dict[str, Any]]:
    """Apply ``changes`` in order; return each item's resulting user row (as a dict).

    ``ids_only``: the caller needs only each user's ``id`` (events). When no change touches a
    profile, only the identity columns are then read, not whole rows with their ``data``.
    """
    if not changes:
        return []
    lock = any(c.changes_profile for c in changes)
    light = ids_only and not lock  # nothing is merged into a row, so its other columns are not needed
    postgres = dialect_name(session) == "postgresql"
    created: set[int] = set()  # users this call inserted, across attempts
    last_error: IntegrityError | None = None
    for attempt in range(4):
        rows = await _select(session, project_id, changes, lock=lock, ids_only=light)
        plan = _plan(rows, changes)
        # The last attempt takes the savepoint path, which raises the unique violation if it recurs.
        if postgres and attempt < 3 and plan.new and not plan.dirty and not plan.merges:
            complete = await _insert_skipping_conflicts(session, project_id, plan)
            created.update(int(plan.records[pos]["id"]) for pos in plan.new if plan.records[pos].get("id"))
            if not complete:  # a concurrent writer created some of these identities
                continue
        elif plan.dirty and not plan.new and not plan.merges and not _identity_changed(rows, plan):
            # Profile-only updates of rows this transaction has locked: no unique index is written,
            # so no concurrent writer can make them fail; no savepoint needed.
            await _execute(session, project_id, plan)
        else:
            try:
                if plan.new or plan.dirty or plan.merges:  # reads of known users need no savepoint
                    async with session.begin_nested():
                        await _execute(session, project_id, plan)
            except IntegrityError as exc:  # a concurrent writer created one of these identities
                last_error = exc
                continue
        paths: dict[tuple[str, str, str], str] = {}
        for change in changes:
            collect_paths("user", "", change.data, paths)
        if paths:
            await record_paths(session, project_id, paths)
        changed = sorted(
            created
            | {int(plan.records[pos]["id"]) for pos in plan.dirty | set(plan.new) if plan.records[pos].get("id")}
        )
        if changed:
            # Dynamic lists that read user fields follow the change in this transaction.
            await on_users_changed(session, project_id, changed)
        return [plan.records[pos] for pos in plan.per_item]
    assert last_error is not None
    raise last_error
