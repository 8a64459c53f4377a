"""`POST /events` for known users on PostgreSQL in one statement (the hot path of event ingest).

A batch whose every item names an existing user by ``external_id`` (no ``anonymous_id``, no
``user`` block) and whose event names no live dynamic list watches needs no user upsert and no
list re-evaluation. One autocommit statement then resolves the bearer key (as
:func:`clarion.api.auth.resolve_principal` does), maps the external ids to user ids, checks that
all of them exist, that no published dynamic list names these events, and that the key may post
events, and only if all of that holds inserts every event and registers the batch's payload paths
in the data schema (``ON CONFLICT DO NOTHING``: known paths keep their type and visibility). Anything else answers
:class:`Handover`, having written nothing, and the request goes down the general path
(:func:`clarion.events.ingest.track_events`), which does all of the above in its transaction.

Items are validated by the same :func:`clarion.events.ingest.parse_event`; a batch with an
invalid item is handed over too (the general path reports per-item errors and stores the rest).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import Table, and_, any_, exists, func, literal_column, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import array

from clarion.api.fast_path import Compiled, KeyRow, key_cte
from clarion.api.schemas import contains_nul
from clarion.core.clock import utcnow
from clarion.core.db import Database, json_dumps
from clarion.core.ids import prefixed_ulid
from clarion.dataschema.service import PATHS, collect_paths, remember_paths
from clarion.events.ingest import EVENTS, parse_event
from clarion.lists.models import UserList
from clarion.users.models import User
from clarion.users.validation import ItemInvalid

USERS: Table = User.__table__  # type: ignore[assignment]
LISTS: Table = UserList.__table__  # type: ignore[assignment]
EVENT_ROLES = ("editor", "publisher", "admin")  # secret keys; publishable keys may always post
MAX_ITEMS = 100

# Positional inputs of the statement, with their SQL types.
INPUTS: dict[str, str] = {
    "digest": "varchar",
    "scope": "varchar",
    "external_ids": "varchar[]",
    "distinct_users": "integer",
    "names": "varchar[]",
    "uids": "varchar[]",
    "event_external_ids": "varchar[]",
    "event_names": "varchar[]",
    "datas": "text[]",
    "created": "timestamptz[]",
    "path_names": "varchar[]",
    "paths": "varchar[]",
    "path_types": "varchar[]",
    "now": "timestamptz",
}


def _input(name: str) -> Any:
    return literal_column(f"${list(INPUTS).index(name) + 1}::{INPUTS[name]}")


@dataclass(frozen=True)
class Handover:
    """The general path must answer; ``key`` is what the statement found (``None``: no live key)."""

    key: KeyRow | None


def _statement() -> Any:
    key = key_cte(_input("digest"))
    # One probe of ux_users_project_external per id, whatever the planner's statistics say (an
    # ``= ANY(array)`` filter or a plain join lets it walk every user of the project instead).
    wanted = func.unnest(_input("external_ids")).table_valued("v").render_derived(name="w")
    probe = (
        select(USERS.c.id)
        .where(USERS.c.project_id == key.c.project_id, USERS.c.external_id == wanted.c.v)
        .limit(1)  # unique anyway; keeps the planner from flattening the probe into a join
        .lateral("u")
    )
    known = (
        select(probe.c.id, wanted.c.v.label("external_id"))
        .select_from(key.join(wanted, true()).join(probe, true()))
        .cte("known")
    )
    watched = exists().where(
        LISTS.c.project_id == key.c.project_id,
        LISTS.c.type == "dynamic",
        LISTS.c.archived_at.is_(None),
        LISTS.c.published.is_(True),
        LISTS.c.rule_event_names.op("?|")(_input("names")),
    )
    allowed = (
        select(
            (select(func.count()).select_from(known).scalar_subquery() == _input("distinct_users")).label("all_known"),
            (~watched).label("unwatched"),
            (
                (key.c.scope == _input("scope"))
                & ((key.c.scope == "public") | (key.c.role == any_(array(list(EVENT_ROLES)))))
            ).label("may_post"),
        )
        .select_from(key)
        .cte("allowed")
    )
    items = (
        func.unnest(
            _input("uids"), _input("event_external_ids"), _input("event_names"), _input("datas"), _input("created")
        )
        .table_valued("uid", "external_id", "name", "data", "created_at")
        .render_derived(name="e")
    )
    proceed = and_(allowed.c.all_known, allowed.c.unwatched, allowed.c.may_post)
    inserted = (
        postgresql.insert(EVENTS)
        .from_select(
            ["project_id", "uid", "user_id", "name", "campaign_id", "data", "created_at"],
            select(
                key.c.project_id,
                items.c.uid,
                known.c.id,
                items.c.name,
                literal_column("NULL::bigint"),
                literal_column("e.data::jsonb"),
                items.c.created_at,
            )
            .select_from(key.join(allowed, true()).join(items, true()))
            .join(known, known.c.external_id == items.c.external_id)
            .where(proceed),
        )
        .returning(literal_column("1"))
        .cte("inserted")
    )
    paths = (
        func.unnest(_input("path_names"), _input("paths"), _input("path_types"))
        .table_valued("event_name", "path", "data_type")
        .render_derived(name="p")
    )
    registered = (
        postgresql.insert(PATHS)
        .from_select(
            ["project_id", "kind", "event_name", "path", "data_type", "visibility", "created_at", "updated_at"],
            select(
                key.c.project_id,
                literal_column("'event'"),
                paths.c.event_name,
                paths.c.path,
                paths.c.data_type,
                literal_column("'public'"),
                _input("now"),
                _input("now"),
            )
            .select_from(key.join(allowed, true()).join(paths, true()))
            .where(proceed),
        )
        .on_conflict_do_nothing(index_elements=["project_id", "kind", "event_name", "path"])
        .returning(literal_column("1"))
        .cte("registered")
    )
    return select(
        key.c.id,
        key.c.project_id,
        key.c.organization_id,
        key.c.scope,
        key.c.role,
        select(func.count()).select_from(inserted).scalar_subquery().label("inserted"),
        select(func.count()).select_from(registered).scalar_subquery().label("registered"),
    ).select_from(key)


@functools.cache
def _compiled() -> Compiled:
    """Built once per process, on first use (the models must be loaded)."""
    return Compiled.of(_statement(), list(INPUTS))


def parse_known(items: Any) -> tuple[list[dict[str, Any]], list[str]] | None:
    """The parsed events and each one's ``external_id`` when every item is valid and names its
    user by ``external_id`` alone; ``None`` otherwise (the general path decides)."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        return None
    now = utcnow()
    check_nul = contains_nul(items)
    rows: list[dict[str, Any]] = []
    externals: list[str] = []
    for item in items:
        try:
            row, change = parse_event(item, now, check_nul=check_nul)
        except ItemInvalid:
            return None
        if change.external_id is None or change.anonymous_id is not None or change.changes_profile:
            return None
        if isinstance(item, dict) and "user" in item:
            return None
        rows.append(row)
        externals.append(change.external_id)
    return rows, externals


async def ingest_known(
    db: Database, *, digest: str, scope: str, rows: list[dict[str, Any]], externals: list[str]
) -> int | Handover:
    """Insert the events (returns how many), or :class:`Handover` having written nothing.
    ``scope``: the key scope the bearer value's prefix promises (``secret`` or ``public``)."""
    paths: dict[tuple[str, str, str], str] = {}
    for row in rows:
        collect_paths("event", row["name"], row["data"], paths)
    keys = sorted(paths)
    statement = _compiled()
    distinct = sorted(set(externals))
    now = utcnow()
    async with db.driver_connection() as connection:
        result = await connection.fetchrow(
            statement.sql,
            *statement.args(
                {
                    "digest": digest,
                    "scope": scope,
                    "external_ids": distinct,
                    "distinct_users": len(distinct),
                    "names": sorted({row["name"] for row in rows}),
                    "uids": [prefixed_ulid("evt") for _ in rows],
                    "event_external_ids": externals,
                    "event_names": [row["name"] for row in rows],
                    "datas": [json_dumps(row["data"]) for row in rows],
                    "created": [row["created_at"].astimezone(UTC) for row in rows],
                    # Truncated as clarion.dataschema.service.record_paths stores them.
                    "path_names": [name[:255] for _, name, _ in keys],
                    "paths": [path[:500] for _, _, path in keys],
                    "path_types": [paths[k] for k in keys],
                    "now": now,
                }
            ),
        )
    if result is None:
        return Handover(None)
    key = KeyRow(result["id"], result["project_id"], result["organization_id"], result["scope"], result["role"])
    if result["inserted"] != len(rows):
        return Handover(key)
    remember_paths(str(db.engine.url), key.project_id, keys)
    return len(rows)
