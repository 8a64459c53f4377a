"""Helpers for the list tests: write users/events directly, evaluate rules both ways, run jobs."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.events.models import Event
from clarion.lists.compiler import compile_condition, statement
from clarion.lists.evaluator import EventFacts, UserFacts, evaluate
from clarion.lists.rules import USER_FIELDS, validate_rule
from clarion.users.models import User
from clarion.worker.jobs import JobSource


async def add_users(db: Database, project_id: int, users: list[dict[str, Any]]) -> dict[str, int]:
    """Insert users (each a dict of User columns; ``data`` defaults to {}); returns external_id → id."""
    now = utcnow()
    rows = []
    for u in users:
        row = {
            "project_id": project_id,
            "data": {},
            "devices": [],
            "has_push_device": False,
            "created_at": now,
            "updated_at": now,
        }
        row.update(u)
        rows.append(row)
    async with db.transaction(project_id=project_id) as session:
        await session.execute(insert(User), rows)
        result = await session.execute(
            select(User.external_id, User.id).where(
                User.project_id == project_id, User.external_id.in_([u["external_id"] for u in users])
            )
        )
        return {str(e): int(i) for e, i in result}


async def add_events(db: Database, project_id: int, events: list[dict[str, Any]]) -> None:
    """Insert events: dicts with user_id, name, data (optional), created_at."""
    rows = [
        {"project_id": project_id, "uid": "evt_" + secrets.token_hex(10), "data": {}, "campaign_id": None, **e}
        for e in events
    ]
    async with db.transaction(project_id=project_id) as session:
        await session.execute(insert(Event), rows)


async def sql_matches(db: Database, project_id: int, rule: dict[str, Any], now: datetime) -> set[str]:
    """Members by SQL, compiled both ways (correlated, and bulk over an id range); they must agree."""
    root = validate_rule(rule).root
    results = []
    for id_range in (None, (0, 2**62)):
        condition, binds = compile_condition(
            root, db.dialect, now, project_id=project_id if id_range else None, id_range=id_range
        )
        sql = f"SELECT u.external_id FROM users AS u WHERE u.project_id = :project_id AND ({condition})"
        async with db.transaction(project_id=project_id, readonly=True) as session:
            rows = await session.execute(statement(sql, binds, project_id=project_id))
            results.append({str(r[0]) for r in rows})
    assert results[0] == results[1], (rule, results[0] ^ results[1])
    return results[0]


async def load_facts(db: Database, project_id: int) -> list[tuple[str, UserFacts, list[EventFacts]]]:
    async with db.transaction(project_id=project_id, readonly=True) as session:
        users = list((await session.execute(select(User).where(User.project_id == project_id))).scalars())
        events = list((await session.execute(select(Event).where(Event.project_id == project_id))).scalars())
    by_user: dict[int, list[EventFacts]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(EventFacts(e.name, e.data, e.created_at))
    return [
        (str(u.external_id), UserFacts({f: getattr(u, f) for f in USER_FIELDS}, u.data), by_user.get(u.id, []))
        for u in users
    ]


def evaluator_matches(
    facts: list[tuple[str, UserFacts, list[EventFacts]]], rule: dict[str, Any], now: datetime
) -> set[str]:
    root = validate_rule(rule).root
    return {ext for ext, user, events in facts if evaluate(root, user, events, now)}


async def run_jobs(db: Database, deadline: float = 30.0) -> None:
    """Run due jobs until none is left (bounded by ``deadline`` seconds)."""
    source = JobSource(db)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await source.run_once() == 0:
            return
    raise AssertionError("jobs still pending after the deadline")


_counter = 0


def node(
    type_: str, path: str, operator: str, value: Any = None, *, group: str = "user", **extra: Any
) -> dict[str, Any]:
    global _counter
    _counter += 1
    out: dict[str, Any] = {"uuid": f"n{_counter}", "type": type_, "group": group, "path": path, "operator": operator}
    if operator not in ("is set", "is not set", "empty"):
        out["value"] = value
    out.update(extra)
    return out


def wrapper(operator: str, *children: dict[str, Any], group: str = "parent", **extra: Any) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "uuid": f"w{_counter}",
        "type": "wrapper",
        "group": group,
        "path": "",
        "operator": operator,
        "children": list(children),
        **extra,
    }


def event_rule(
    name: str, *conditions: dict[str, Any], frequency: dict[str, Any] | None = None, operator: str = "and"
) -> dict[str, Any]:
    extra: dict[str, Any] = {"value": name}
    if frequency is not None:
        extra["frequency"] = frequency
    return wrapper(operator, *conditions, group="event", **extra)
