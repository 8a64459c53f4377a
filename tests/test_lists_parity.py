"""Parity: the SQL compiler and the in-process evaluator agree on generated users, events and rules.

A dataset of 1,500 users and ~5,000 events is drawn from value pools full of edge cases (missing
keys, nulls, type mismatches, case variants, impossible dates, offsets, several timezones); then
hypothesis generates rule trees (every type and operator, nested wrappers, event rules with
payload conditions and rolling/fixed frequencies) and each one must select exactly the same users
through SQL (on this backend) and through the evaluator.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection

from clarion.api.errors import ApiError
from clarion.core.db import Database
from clarion.lists.compiler import compile_condition, statement
from clarion.lists.evaluator import evaluate
from clarion.lists.rules import OPERATORS, VALUELESS, validate_rule
from tests.conftest import Tenant
from tests.lists_support import add_events, add_users, load_facts

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
USERS = 1500
EVENTS = 5000
EXAMPLES = 300

STRINGS = [
    "",
    "a",
    "ab",
    "Ab",
    "abc",
    "bca",
    "Hello",
    "héllo",
    "ß",
    "5",
    "true",
    "x y",
    "2026-03-10",
    "2026-03-10T12:00:00Z",
    "2026-03-10T23:30:00-05:00",
    "2026-02-30",
    "2026-03-10T12:00:00.5+10:00",
    "2026-03-11 00:00",
    "2026-03-19T23:59:59.999999Z",
    "not a date",
]
NUMBERS: list[Any] = [0, 1, -1, 5, 5.5, 1e20, -0.0, 2.5e-7, 123456789, 3]
DATES = [
    "2026-03-10",
    "2026-03-10T12:00:00Z",
    "2026-03-11",
    "2026-03-19T23:00:00-05:00",
    "2026-03-20",
    "2026-01-01T00:00:00+14:00",
]
TIMEZONES = [None, "UTC", "Australia/Sydney", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati", "Invalid/Zone"]
EVENT_NAMES = ["purchase", "visit", "signup"]
USER_KEYS = ["s", "n", "b", "d", "a", "o"]
EVENT_KEYS = ["total", "sku", "d", "tags"]


def _scalar(rng: random.Random) -> Any:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(STRINGS) if rng.random() < 0.7 else "".join(rng.choice("aAbß é") for _ in range(3))
    if kind == 1:
        return rng.choice(NUMBERS)
    if kind == 2:
        return rng.random() < 0.5
    return None


def _value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.6:
        return _scalar(rng)
    if roll < 0.85:
        return [_scalar(rng) for _ in range(rng.randrange(4))]
    return {"k": _scalar(rng)}


def _document(rng: random.Random, keys: list[str]) -> dict[str, Any]:
    return {k: _value(rng) for k in keys if rng.random() < 0.8}


def _dataset(seed: int) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]:
    rng = random.Random(seed)
    users = [
        {
            "external_id": f"p{i}",
            "email": rng.choice([None, "a@x.com", "A@x.com", "bob@y.org", ""]),
            "timezone": rng.choice(TIMEZONES),
            "data": _document(rng, USER_KEYS),
            "created_at": NOW - timedelta(days=rng.randrange(0, 60), seconds=rng.randrange(86400)),
        }
        for i in range(USERS)
    ]
    events = []
    for _ in range(EVENTS):
        owner = rng.randrange(USERS)
        when = NOW + timedelta(seconds=rng.randrange(-45 * 86400, 2 * 86400))
        events.append(
            (owner, {"name": rng.choice(EVENT_NAMES), "data": _document(rng, EVENT_KEYS), "created_at": when})
        )
    return users, events


_uuid = st.uuids().map(str)
_string_value = st.sampled_from(STRINGS) | st.text(alphabet="aAbß é", max_size=3)
_number_value = st.sampled_from(NUMBERS) | st.integers(-10, 10)
_scalar_value = _string_value | _number_value | st.booleans() | st.none()


def _leaf(paths: list[str], group: str) -> st.SearchStrategy[dict[str, Any]]:
    def build(draw: Any) -> dict[str, Any]:
        rtype = draw(st.sampled_from(list(OPERATORS)))
        operator = draw(st.sampled_from(OPERATORS[rtype]))
        node: dict[str, Any] = {
            "uuid": draw(_uuid),
            "type": rtype,
            "group": group,
            "path": draw(st.sampled_from(paths)),
            "operator": operator,
        }
        if operator not in VALUELESS:
            node["value"] = draw(
                {
                    "string": _string_value,
                    "number": _number_value,
                    "boolean": st.booleans(),
                    "date": st.sampled_from(DATES),
                    "array": _scalar_value,
                }[rtype]
            )
        return node

    return st.composite(lambda draw: build(draw))()


USER_PATHS = [f"data.{k}" for k in USER_KEYS] + ["data.o.k", "data.nope", "email", "timezone", "created_at"]
EVENT_PATHS = [f"data.{k}" for k in EVENT_KEYS] + ["name", "created_at"]

_frequency = st.one_of(
    st.none(),
    st.builds(
        lambda unit, value, op, count: {
            "period": {"type": "rolling", "unit": unit, "value": value},
            "operator": op,
            "count": count,
        },
        st.sampled_from(["minute", "hour", "day", "week", "month", "year"]),
        st.integers(1, 40),
        st.sampled_from(["=", "<", "<=", ">", ">="]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda start, end, op, count: {
            "period": {"type": "fixed", "start_date": start, "end_date": end},
            "operator": op,
            "count": count,
        },
        st.sampled_from(["2026-02-01", "2026-03-01T00:00:00Z", "2026-03-15"]),
        st.sampled_from([None, "2026-03-19", "2026-03-20T12:00:00Z", "2026-04-01"]),
        st.sampled_from(["=", "<", "<=", ">", ">="]),
        st.integers(0, 3),
    ),
)


@st.composite
def _event_rule(draw: Any) -> dict[str, Any]:
    children = draw(st.lists(_leaf(EVENT_PATHS, "event"), max_size=2))
    node: dict[str, Any] = {
        "uuid": draw(_uuid),
        "type": "wrapper",
        "group": "event",
        "path": "name",
        "operator": draw(st.sampled_from(["and", "or"])),
        "value": draw(st.sampled_from(EVENT_NAMES)),
        "children": children,
    }
    frequency = draw(_frequency)
    if frequency is not None:
        node["frequency"] = frequency
    return node


def _wrap(children: st.SearchStrategy[list[dict[str, Any]]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda uuid, op, kids: {
            "uuid": uuid,
            "type": "wrapper",
            "group": "user",
            "path": "",
            "operator": op,
            "children": kids,
        },
        _uuid,
        st.sampled_from(["and", "or"]),
        children,
    )


RULES = st.recursive(
    _leaf(USER_PATHS, "user") | _event_rule(),
    lambda inner: _wrap(st.lists(inner, min_size=0, max_size=3)),
    max_leaves=6,
).map(
    lambda r: (
        r
        if r["type"] == "wrapper" and r["group"] != "event"
        else {"uuid": "root", "type": "wrapper", "group": "parent", "path": "", "operator": "and", "children": [r]}
    )
)


async def test_sql_and_evaluator_agree(db: Database, tenant: Tenant) -> None:
    users, events = _dataset(seed=20260320)
    ids = await add_users(db, tenant.project_id, users)
    by_index = [ids[u["external_id"]] for u in users]
    for start in range(0, len(events), 1000):
        await add_events(
            db, tenant.project_id, [{"user_id": by_index[owner], **e} for owner, e in events[start : start + 1000]]
        )
    if db.is_postgres:
        async with db.engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE users")
            await conn.exec_driver_sql("ANALYZE events")
            await conn.commit()
    facts = await load_facts(db, tenant.project_id)
    assert len(facts) == USERS
    lo, hi = min(ids.values()), max(ids.values())
    checked: list[int] = []

    def run(sync_conn: Connection) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(rule=RULES)
        def parity(rule: dict[str, Any]) -> None:
            try:
                root = validate_rule(rule).root
            except ApiError:
                return  # type/path combinations the validator refuses (e.g. a number rule on email)
            from_eval = {ext for ext, user, evs in facts if evaluate(root, user, evs, NOW)}
            # Correlated form (incremental updates) and bulk form (materialisation over an id range).
            for id_range in (None, (lo, hi)):
                condition, binds = compile_condition(
                    root, db.dialect, NOW, project_id=tenant.project_id if id_range else None, id_range=id_range
                )
                sql = f"SELECT u.external_id FROM users AS u WHERE u.project_id = :pid AND ({condition})"
                from_sql = {str(r[0]) for r in sync_conn.execute(statement(sql, binds, pid=tenant.project_id))}
                assert from_sql == from_eval, (rule, id_range, sorted(from_sql ^ from_eval)[:5])
            checked.append(len(from_sql))

        parity()

    async with db.engine.connect() as conn:
        await conn.run_sync(run)
    # The generated rules must exercise both outcomes, not only "nobody" or "everybody".
    assert len(checked) >= EXAMPLES // 3
    assert any(0 < n < USERS for n in checked)
