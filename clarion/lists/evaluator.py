"""In-process evaluation of a validated rule for one user: "does this user match?".

The semantics are exactly those of the SQL compiler (a parity test runs both over generated
data): missing keys and JSON nulls are "not set"; typed operators only match values of their
JSON type; negated operators are the exact complement of their positive form; strings compare
case-sensitively; numbers compare as IEEE-754 doubles; dates are instants in UTC, and
``is same day`` compares calendar days in the user's timezone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from clarion.lists.rules import NEGATIONS, EventRule, Group, Leaf, Node, parse_instant

_MISSING = object()


@dataclass
class UserFacts:
    """What the evaluator needs of a user: first-class fields and ``data``."""

    fields: Mapping[str, Any]
    data: Any


@dataclass
class EventFacts:
    name: str
    data: Any
    created_at: datetime


def user_timezone(name: object) -> ZoneInfo | None:
    """The user's zone; None (meaning UTC) when unset or not a zone name we accept.

    The same name check runs in SQL (``clarion_local_day``): letters first, then letters, digits,
    ``_``, ``+``, ``-`` and ``/``.
    """
    if not isinstance(name, str) or not name or not (name[0].isascii() and name[0].isalpha()):
        return None
    if not all(ch.isascii() and (ch.isalnum() or ch in "_+-/") for ch in name):
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def local_day(instant: datetime, tz_name: object) -> date:
    zone = user_timezone(tz_name)
    return instant.astimezone(zone).date() if zone is not None else instant.astimezone(UTC).date()


def _lookup(data: Any, keys: tuple[str, ...]) -> Any:
    current = data
    for key in keys:
        if not isinstance(current, dict) or key not in current:
            return _MISSING
        current = current[key]
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if abs(number) < 1e308 else None


def _json_equal(element: Any, wanted: Any) -> bool:
    if wanted is None:
        return element is None
    if isinstance(wanted, bool):
        return isinstance(element, bool) and element is wanted
    if isinstance(wanted, str):
        return isinstance(element, str) and element == wanted
    number = _number(element)
    return number is not None and number == float(wanted)


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    raise ValueError(op)


def _positive(leaf: Leaf, op: str, value: Any, tz_name: object) -> bool:
    present = value is not _MISSING and value is not None
    if op == "is set":
        return present
    t = leaf.type
    if t == "string":
        if op == "empty":
            return not present or value == ""
        if not isinstance(value, str):
            return False
        wanted = str(leaf.value)
        if op == "=":
            return value == wanted
        if op == "contains":
            return wanted in value
        if op == "starts with":
            return value.startswith(wanted)
        if op == "ends with":
            return value.endswith(wanted)
    elif t == "number":
        number = _number(value)
        return number is not None and _compare(number, op, float(leaf.value))
    elif t == "boolean":
        return isinstance(value, bool) and value is bool(leaf.value)
    elif t == "date":
        instant = value if isinstance(value, datetime) else parse_instant(value)
        if instant is None:
            return False
        instant = instant.astimezone(UTC)
        assert leaf.instant is not None
        if op == "is same day":
            target = leaf.day if leaf.day is not None else local_day(leaf.instant, tz_name)
            return local_day(instant, tz_name) == target
        return _compare(instant, op, leaf.instant)
    elif t == "array":
        if op == "empty":
            return not present or (isinstance(value, list) and len(value) == 0)
        return isinstance(value, list) and any(_json_equal(e, leaf.value) for e in value)
    raise ValueError(f"{t} {op}")


def _leaf(leaf: Leaf, value: Any, tz_name: object) -> bool:
    if leaf.operator in NEGATIONS:
        return not _positive(leaf, NEGATIONS[leaf.operator], value, tz_name)
    return _positive(leaf, leaf.operator, value, tz_name)


def _event_matches(node: Node, event: EventFacts, tz_name: object) -> bool:
    if isinstance(node, Leaf):
        if node.ref.column == "name":
            value: Any = event.name
        elif node.ref.column == "created_at":
            value = event.created_at
        else:
            value = _lookup(event.data, node.ref.keys)
        return _leaf(node, value, tz_name)
    if isinstance(node, Group):
        results = (_event_matches(k, event, tz_name) for k in node.children)
        return all(results) if node.operator == "and" else any(results)
    raise ValueError("event rules do not nest")


def _window_contains(created_at: datetime, start: datetime | None, end: datetime | None, inclusive: bool) -> bool:
    if start is not None and created_at < start:
        return False
    if end is not None:
        return created_at <= end if inclusive else created_at < end
    return True


def evaluate(node: Node, user: UserFacts, events: Iterable[EventFacts], now: datetime) -> bool:
    """Does ``user`` (with ``events``, all of this user's events) match ``node`` at time ``now``?"""
    event_list = list(events)
    return _evaluate(node, user, event_list, now)


def _evaluate(node: Node, user: UserFacts, events: list[EventFacts], now: datetime) -> bool:
    tz_name = user.fields.get("timezone")
    if isinstance(node, Leaf):
        value = user.fields.get(node.ref.column) if node.ref.column else _lookup(user.data, node.ref.keys)
        return _leaf(node, value, tz_name)
    if isinstance(node, Group):
        results = (_evaluate(k, user, events, now) for k in node.children)
        return all(results) if node.operator == "and" else any(results)
    assert isinstance(node, EventRule)
    window = node.frequency.window(now) if node.frequency else None
    count = 0
    for event in events:
        if event.name != node.name:
            continue
        created = event.created_at.astimezone(UTC)
        if window is not None and not _window_contains(created, window.start, window.end, window.end_inclusive):
            continue
        if node.condition is not None and not _event_matches(node.condition, event, tz_name):
            continue
        count += 1
        if window is None:
            return True
    if window is None:
        return False
    return _compare(float(count), window.operator, window.count)
