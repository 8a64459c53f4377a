"""Every operator × type, on SQLite and PostgreSQL, through the SQL compiler AND the evaluator.

Each case states the expected members by hand; both implementations must produce exactly that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clarion.core.db import Database
from tests.conftest import Tenant
from tests.lists_support import (
    add_events,
    add_users,
    evaluator_matches,
    event_rule,
    load_facts,
    node,
    sql_matches,
    wrapper,
)

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)

# A = typical values, E = "empty" values, N = JSON nulls, M = keys missing, X = type mismatches,
# F = other values, B = an impossible date.
USERS: list[dict[str, Any]] = [
    {
        "external_id": "A",
        "email": "Ann@Example.com",
        "data": {
            "s": "Hello World",
            "n": 5,
            "b": True,
            "d": "2026-03-10T12:00:00Z",
            "a": ["x", 1, True, None],
            "nested": {"k": "v"},
        },
    },
    {"external_id": "E", "data": {"s": "", "n": 0, "b": False, "d": "2026-03-10", "a": []}},
    {"external_id": "N", "data": {"s": None, "n": None, "b": None, "d": None, "a": None}},
    {"external_id": "M", "data": {}},
    {"external_id": "X", "data": {"s": 5, "n": "5", "b": "true", "d": 20260310, "a": "x", "nested": "k"}},
    {
        "external_id": "F",
        "email": "fred@example.com",
        "data": {"s": "hello", "n": 5.5, "b": True, "d": "2026-03-10T23:30:00-05:00", "a": [1.0, "X"]},
    },
    {"external_id": "B", "data": {"d": "2026-02-30"}},
]
ALL = {"A", "E", "N", "M", "X", "F", "B"}

CASES: list[tuple[str, str, str, Any, set[str]]] = [
    # string
    ("string", "data.s", "=", "Hello World", {"A"}),
    ("string", "data.s", "!=", "Hello World", ALL - {"A"}),
    ("string", "data.s", "contains", "o", {"A", "F"}),
    ("string", "data.s", "contains", "", {"A", "E", "F"}),
    ("string", "data.s", "not contain", "o", ALL - {"A", "F"}),
    ("string", "data.s", "starts with", "Hel", {"A"}),
    ("string", "data.s", "starts with", "hel", {"F"}),
    ("string", "data.s", "not start with", "Hel", ALL - {"A"}),
    ("string", "data.s", "ends with", "llo", {"F"}),
    ("string", "data.s", "ends with", "Hello World!", set()),
    ("string", "data.s", "is set", None, {"A", "E", "X", "F"}),
    ("string", "data.s", "is not set", None, {"N", "M", "B"}),
    ("string", "data.s", "empty", None, {"E", "N", "M", "B"}),
    ("string", "email", "contains", "xample", {"A", "F"}),
    ("string", "email", "=", "ann@example.com", set()),
    ("string", "email", "is set", None, {"A", "F"}),
    ("string", "data.nested.k", "=", "v", {"A"}),
    ("string", "data.nested.k", "is set", None, {"A"}),
    # number
    ("number", "data.n", "=", 5, {"A"}),
    ("number", "data.n", "!=", 5, ALL - {"A"}),
    ("number", "data.n", "<", 5.5, {"A", "E"}),
    ("number", "data.n", "<=", 5.5, {"A", "E", "F"}),
    ("number", "data.n", ">", 0, {"A", "F"}),
    ("number", "data.n", ">=", 0, {"A", "E", "F"}),
    ("number", "data.n", "=", "5", {"A"}),
    ("number", "data.n", "is set", None, {"A", "E", "X", "F"}),
    ("number", "data.n", "is not set", None, {"N", "M", "B"}),
    # boolean
    ("boolean", "data.b", "=", True, {"A", "F"}),
    ("boolean", "data.b", "=", False, {"E"}),
    ("boolean", "data.b", "!=", True, ALL - {"A", "F"}),
    ("boolean", "data.b", "is set", None, {"A", "E", "X", "F"}),
    ("boolean", "data.b", "is not set", None, {"N", "M", "B"}),
    ("boolean", "has_push_device", "=", False, ALL),
    # date
    ("date", "data.d", "=", "2026-03-10T12:00:00Z", {"A"}),
    ("date", "data.d", "=", "2026-03-10T13:00:00+01:00", {"A"}),
    ("date", "data.d", "!=", "2026-03-10T12:00:00Z", ALL - {"A"}),
    ("date", "data.d", "<", "2026-03-10T12:00:00Z", {"E"}),
    ("date", "data.d", "<=", "2026-03-10T12:00:00Z", {"A", "E"}),
    ("date", "data.d", ">", "2026-03-10T12:00:00Z", {"F"}),
    ("date", "data.d", ">=", "2026-03-10T12:00:00Z", {"A", "F"}),
    ("date", "data.d", "is same day", "2026-03-10", {"A", "E"}),
    ("date", "data.d", "is same day", "2026-03-11", {"F"}),
    ("date", "data.d", "is set", None, {"A", "E", "X", "F", "B"}),
    ("date", "data.d", "is not set", None, {"N", "M"}),
    ("date", "created_at", ">", "2000-01-01", ALL),
    # array
    ("array", "data.a", "any", "x", {"A"}),
    ("array", "data.a", "any", "X", {"F"}),
    ("array", "data.a", "any", 1, {"A", "F"}),
    ("array", "data.a", "any", True, {"A"}),
    ("array", "data.a", "any", None, {"A"}),
    ("array", "data.a", "none", "x", ALL - {"A"}),
    ("array", "data.a", "empty", None, {"E", "N", "M", "B"}),
    ("array", "data.a", "is set", None, {"A", "E", "X", "F"}),
    ("array", "data.a", "is not set", None, {"N", "M", "B"}),
]


async def _check(db: Database, tenant: Tenant, rule: dict[str, Any], expected: set[str], now: datetime = NOW) -> None:
    facts = await load_facts(db, tenant.project_id)
    assert await sql_matches(db, tenant.project_id, rule, now) == expected, rule
    assert evaluator_matches(facts, rule, now) == expected, rule


async def test_every_operator_and_type(db: Database, tenant: Tenant) -> None:
    await add_users(db, tenant.project_id, USERS)
    facts = await load_facts(db, tenant.project_id)
    for rtype, path, op, value, expected in CASES:
        rule = wrapper("and", node(rtype, path, op, value))
        got_sql = await sql_matches(db, tenant.project_id, rule, NOW)
        got_eval = evaluator_matches(facts, rule, NOW)
        assert got_sql == expected, (db.dialect, rtype, path, op, value, got_sql)
        assert got_eval == expected, ("evaluator", rtype, path, op, value, got_eval)


async def test_wrappers_nest(db: Database, tenant: Tenant) -> None:
    await add_users(db, tenant.project_id, USERS)
    rule = wrapper(
        "or",
        wrapper("and", node("number", "data.n", ">", 1), node("string", "data.s", "starts with", "h")),
        wrapper("and", node("boolean", "data.b", "=", False)),
        wrapper("or"),
    )
    await _check(db, tenant, rule, {"F", "E"})
    await _check(db, tenant, wrapper("and"), ALL)
    await _check(db, tenant, wrapper("or"), set())


async def test_is_same_day_uses_the_users_timezone(db: Database, tenant: Tenant) -> None:
    await add_users(
        db,
        tenant.project_id,
        [
            # 2026-03-10T14:00Z is 01:00 on the 11th in Sydney.
            {"external_id": "T1", "timezone": "Australia/Sydney", "data": {"d": "2026-03-10T14:00:00Z"}},
            # New York is on EDT (-04:00) from 8 March 2026: 03:59:59Z is 23:59:59 on the 10th.
            {"external_id": "T2", "timezone": "America/New_York", "data": {"d": "2026-03-11T03:59:59Z"}},
            {"external_id": "T3", "timezone": "America/New_York", "data": {"d": "2026-03-11T04:00:00Z"}},
            {"external_id": "T4", "data": {"d": "2026-03-10T23:59:59.999999Z"}},
            {"external_id": "T5", "timezone": "Invalid/Zone", "data": {"d": "2026-03-11T00:00:00Z"}},
        ],
    )
    await _check(db, tenant, wrapper("and", node("date", "data.d", "is same day", "2026-03-10")), {"T2", "T4"})
    await _check(db, tenant, wrapper("and", node("date", "data.d", "is same day", "2026-03-11")), {"T1", "T3", "T5"})
    # A value with a time is first converted to each user's local day.
    await _check(
        db,
        tenant,
        wrapper("and", node("date", "data.d", "is same day", "2026-03-10T20:00:00-05:00")),
        {"T1", "T2", "T5"},
    )


async def test_event_rules_windows_at_their_edges(db: Database, tenant: Tenant) -> None:
    ids = await add_users(db, tenant.project_id, [{"external_id": f"R{i}"} for i in range(1, 8)])
    week = timedelta(days=7)
    tick = timedelta(microseconds=1)
    await add_events(
        db,
        tenant.project_id,
        [
            {"user_id": ids["R1"], "name": "purchase", "created_at": NOW - week, "data": {"total": 10}},
            {"user_id": ids["R2"], "name": "purchase", "created_at": NOW - week - tick, "data": {"total": 10}},
            {"user_id": ids["R3"], "name": "purchase", "created_at": NOW + timedelta(seconds=1), "data": {"total": 10}},
            {"user_id": ids["R4"], "name": "purchase", "created_at": NOW, "data": {"total": 99}},
            {"user_id": ids["R4"], "name": "purchase", "created_at": NOW - timedelta(days=1), "data": {"total": 1}},
            {"user_id": ids["R5"], "name": "visit", "created_at": NOW, "data": {}},
            {"user_id": ids["R6"], "name": "purchase", "created_at": datetime(2026, 3, 10, 23, 59, 59, 999999, UTC)},
            {"user_id": ids["R7"], "name": "purchase", "created_at": datetime(2026, 3, 11, tzinfo=UTC)},
        ],
    )
    rolling = {"period": {"type": "rolling", "unit": "day", "value": 7}, "operator": ">=", "count": 1}
    await _check(db, tenant, wrapper("and", event_rule("purchase", frequency=rolling)), {"R1", "R4"})
    zero = {"period": {"type": "rolling", "unit": "week", "value": 1}, "operator": "=", "count": 0}
    await _check(db, tenant, wrapper("and", event_rule("purchase", frequency=zero)), {"R2", "R3", "R5", "R6", "R7"})
    twice = {"period": {"type": "rolling", "unit": "hour", "value": 48}, "operator": ">=", "count": 2}
    await _check(db, tenant, wrapper("and", event_rule("purchase", frequency=twice)), {"R4"})
    # Without frequency: ever did it, with a payload condition.
    await _check(
        db, tenant, wrapper("and", event_rule("purchase", node("number", "data.total", ">", 50, group="event"))), {"R4"}
    )
    await _check(db, tenant, wrapper("and", event_rule("purchase")), {"R1", "R2", "R3", "R4", "R6", "R7"})
    fixed = {
        "period": {"type": "fixed", "start_date": "2026-03-01", "end_date": "2026-03-10"},
        "operator": ">",
        "count": 0,
    }
    await _check(db, tenant, wrapper("and", event_rule("purchase", frequency=fixed)), {"R6"})
    fixed_to_instant = {
        "period": {"type": "fixed", "start_date": "2026-03-01", "end_date": "2026-03-11T00:00:00Z"},
        "operator": ">=",
        "count": 1,
    }
    await _check(db, tenant, wrapper("and", event_rule("purchase", frequency=fixed_to_instant)), {"R6", "R7"})
    # Event name and created_at as conditions; "or" inside the event wrapper.
    await _check(
        db,
        tenant,
        wrapper(
            "and",
            event_rule(
                "purchase",
                node("number", "data.total", "=", 1, group="event"),
                node("date", "created_at", ">", "2026-03-20T11:00:00Z", group="event"),
                operator="or",
            ),
        ),
        {"R3", "R4"},
    )
    await _check(
        db,
        tenant,
        wrapper(
            "and",
            node("string", "data.x", "is not set"),
            event_rule("visit", node("string", "name", "=", "visit", group="event")),
        ),
        {"R5"},
    )


@pytest.mark.parametrize(
    ("rule", "param_part"),
    [
        (wrapper("and", node("string", "data.s", "<", "x")), ".operator"),
        (wrapper("and", node("number", "data.n", "=", None)), ".value"),
        (wrapper("and", node("number", "data.n", "=", "five")), ".value"),
        (wrapper("and", node("string", "data..s", "=", "x")), ".path"),
        (wrapper("and", node("string", "nope", "=", "x")), ".path"),
        (wrapper("and", node("number", "email", "=", 1)), ".type"),
        (wrapper("and", node("date", "data.d", "=", "2026-02-30")), ".value"),
        (wrapper("and", node("shopify_purchase", "", "has_purchased", "x")), ".type"),
        (wrapper("and", node("string", "name", "=", "x", group="event")), ".group"),
        (wrapper("xor"), ".operator"),
        (
            wrapper(
                "and",
                event_rule(
                    "x",
                    frequency={
                        "period": {"type": "rolling", "unit": "fortnight", "value": 1},
                        "operator": ">",
                        "count": 1,
                    },
                ),
            ),
            ".frequency.period.unit",
        ),
    ],
)
async def test_invalid_rules_name_the_node(rule: dict[str, Any], param_part: str) -> None:
    from clarion.api.errors import ApiError
    from clarion.lists.rules import validate_rule

    with pytest.raises(ApiError) as caught:
        validate_rule(rule)
    error = caught.value
    assert error.code == "validation_failed"
    assert error.errors
    assert error.param is not None and error.param.startswith("rule.") and error.param.endswith(param_part)
    uuid = error.param.split(".")[1]
    assert uuid and uuid in str(rule)
