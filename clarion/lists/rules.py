"""The rule tree: validation of the wire shape (§B4 RuleNode) into a small typed tree.

Both the SQL compiler (:mod:`clarion.lists.compiler`) and the in-process evaluator
(:mod:`clarion.lists.evaluator`) work from the tree produced here, so they see exactly the same
paths, operators, coerced values and time windows. ``docs/lists.md`` has the semantics table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal, TypeGuard

from clarion.api.errors import ErrorCode, FieldError, validation_failed

RuleType = Literal["string", "number", "boolean", "date", "array"]

OPERATORS: dict[str, tuple[str, ...]] = {
    "string": (
        "=",
        "!=",
        "contains",
        "not contain",
        "starts with",
        "not start with",
        "ends with",
        "is set",
        "is not set",
        "empty",
    ),
    "number": ("=", "!=", "<", "<=", ">", ">=", "is set", "is not set"),
    "date": ("=", "!=", "<", "<=", ">", ">=", "is same day", "is set", "is not set"),
    "boolean": ("=", "!=", "is set", "is not set"),
    "array": ("any", "none", "empty", "is set", "is not set"),
}
WRAPPER_OPERATORS = ("and", "or")
FREQUENCY_OPERATORS = ("=", "<", "<=", ">", ">=")
ROLLING_UNITS = ("minute", "hour", "day", "week", "month", "year")
# Operators that take no value.
VALUELESS = ("is set", "is not set", "empty")
# Operators that are the exact complement of another one.
NEGATIONS = {
    "!=": "=",
    "not contain": "contains",
    "not start with": "starts with",
    "none": "any",
    "is not set": "is set",
}

# First-class columns a rule may address, and their types.
USER_FIELDS: dict[str, str] = {
    "external_id": "string",
    "anonymous_id": "string",
    "email": "string",
    "phone": "string",
    "timezone": "string",
    "locale": "string",
    "created_at": "date",
    "updated_at": "date",
    "has_push_device": "boolean",
}
EVENT_FIELDS: dict[str, str] = {"name": "string", "created_at": "date"}

# A key inside ``data``: must start with a letter or underscore so it can never be read as an array
# index by PostgreSQL's ``#>`` (SQLite and the evaluator never index arrays either).
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")

# The one grammar of date strings all three implementations accept (see ``parse_instant``).
DATE_PATTERN = (
    r"^([1-9][0-9]{3})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])?)?$"
)
_DATE = re.compile(DATE_PATTERN)
_DATE_ONLY = re.compile(r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}$")


def parse_instant(text: object) -> datetime | None:
    """A date string → an aware UTC datetime, or None when it isn't a valid date in our grammar.

    Grammar: ``YYYY-MM-DD`` optionally followed by ``T`` or a space, ``HH:MM[:SS[.ffffff]]`` and
    an optional ``Z``/``±HH:MM`` offset. Without an offset the time is UTC; a date alone is midnight
    UTC. Impossible dates (``2024-02-30``) are not dates.
    """
    if not isinstance(text, str):
        return None
    m = _DATE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, offset = m.groups()
    tz: timezone = UTC
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    try:
        value = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(6, "0")),
            tzinfo=tz,
        )
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------------------------------
# The validated tree


@dataclass(frozen=True)
class FieldRef:
    """Where a leaf reads its value: a first-class column or a path of keys inside ``data``."""

    column: str | None = None
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Leaf:
    uuid: str
    type: str
    operator: str
    ref: FieldRef
    value: Any = None
    # For date comparisons: the rule value as an instant; for ``is same day`` with a date-only value,
    # the calendar day (compared with the user's local day as is).
    instant: datetime | None = None
    day: date | None = None


@dataclass(frozen=True)
class Window:
    operator: str
    count: float
    start: datetime | None
    end: datetime | None
    end_inclusive: bool


@dataclass(frozen=True)
class EventRule:
    uuid: str
    name: str
    condition: Node | None
    frequency: FrequencySpec | None


@dataclass(frozen=True)
class FrequencySpec:
    operator: str
    count: float
    kind: Literal["rolling", "fixed"]
    unit: str | None = None
    amount: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    end_inclusive: bool = True

    def window(self, now: datetime) -> Window:
        """The concrete window at evaluation time ``now`` (rolling windows end at ``now``)."""
        if self.kind == "fixed":
            return Window(self.operator, self.count, self.start, self.end, self.end_inclusive)
        assert self.unit is not None and self.amount is not None
        return Window(self.operator, self.count, rolling_start(now, self.unit, self.amount), now, True)


@dataclass(frozen=True)
class Group:
    uuid: str
    operator: str  # and | or
    children: tuple[Node, ...] = field(default_factory=tuple)


Node = Leaf | Group | EventRule


def _shift_months(value: datetime, months: int) -> datetime:
    index = value.year * 12 + (value.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    # Clamp the day to the target month's length (31 March minus a month is 28/29 February).
    for day in (value.day, 30, 29, 28):
        try:
            return value.replace(year=year, month=month, day=min(value.day, day))
        except ValueError:
            continue
    raise ValueError("unreachable month shift")


def rolling_start(now: datetime, unit: str, amount: float) -> datetime:
    """Start of a rolling window of ``amount`` ``unit``s ending at ``now`` (inclusive)."""
    if unit == "month":
        return _shift_months(now, int(amount))
    if unit == "year":
        return _shift_months(now, int(amount) * 12)
    seconds = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}[unit]
    return now - timedelta(seconds=seconds * amount)


# --------------------------------------------------------------------------------------------------
# Validation


class _Collector:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, uuid: str, attr: str, message: str) -> None:
        self.errors.append(
            FieldError(
                param=f"rule.{uuid}.{attr}" if uuid else f"rule.{attr}",
                code=ErrorCode.validation_failed,
                message=f"Rule node {uuid!r}: {message}" if uuid else message,
            )
        )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _resolve_path(path: str, fields: dict[str, str]) -> tuple[FieldRef, str | None] | None:
    """A rule path → (reference, first-class type or None for ``data.*``); None when invalid."""
    text = path.strip()
    if text.startswith("$."):
        text = text[2:]
    if text in fields:
        return FieldRef(column=text), fields[text]
    parts = text.split(".")
    if len(parts) >= 2 and parts[0] == "data" and len(parts) <= 9 and all(_KEY.match(p) for p in parts[1:]):
        return FieldRef(keys=tuple(parts[1:])), None
    return None


def _coerce_value(
    c: _Collector, uuid: str, rtype: str, operator: str, raw: dict[str, Any]
) -> tuple[Any, datetime | None, date | None] | None:
    if operator in VALUELESS:
        return None, None, None
    value = raw.get("value")
    if "value" not in raw or (value is None and rtype != "array"):
        c.add(uuid, "value", f"operator {operator!r} needs a value.")
        return None
    if rtype == "string":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            c.add(uuid, "value", "a string rule needs a string value.")
            return None
        return (value if isinstance(value, str) else str(value)), None, None
    if rtype == "number":
        if _is_number(value):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                c.add(uuid, "value", f"{value!r} is not a number.")
                return None
        else:
            c.add(uuid, "value", "a number rule needs a numeric value.")
            return None
        if number != number or abs(number) >= 1e308:
            c.add(uuid, "value", "the number is out of range.")
            return None
        return number, None, None
    if rtype == "boolean":
        if isinstance(value, bool):
            return value, None, None
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true", None, None
        c.add(uuid, "value", "a boolean rule needs true or false.")
        return None
    if rtype == "date":
        instant = parse_instant(value)
        if instant is None:
            c.add(uuid, "value", "a date rule needs an ISO-8601 date such as 2026-04-28 or 2026-04-28T09:30:00Z.")
            return None
        day = instant.date() if isinstance(value, str) and _DATE_ONLY.match(value) else None
        return value, instant, day
    # array: the value is one element (string, number, boolean or null) to look for
    if value is not None and not isinstance(value, str | int | float | bool):
        c.add(uuid, "value", "an array rule looks for one string, number, boolean or null element.")
        return None
    if isinstance(value, float) and (value != value or abs(value) >= 1e308):
        c.add(uuid, "value", "the number is out of range.")
        return None
    return value, None, None


def _frequency(c: _Collector, uuid: str, raw: Any) -> FrequencySpec | None:
    if not isinstance(raw, dict):
        c.add(uuid, "frequency", "frequency must be an object with period, operator and count.")
        return None
    operator, count, period = raw.get("operator"), raw.get("count"), raw.get("period")
    ok = True
    if operator not in FREQUENCY_OPERATORS:
        c.add(uuid, "frequency.operator", f"frequency operator must be one of {', '.join(FREQUENCY_OPERATORS)}.")
        ok = False
    wanted = float(count) if _is_number(count) else -1.0
    if not 0 <= wanted < 1e15:
        c.add(uuid, "frequency.count", "frequency count must be a number ≥ 0.")
        ok = False
    if not isinstance(period, dict):
        c.add(uuid, "frequency.period", "frequency period must be an object.")
        return None
    extra = set(raw) - {"operator", "count", "period"}
    if extra:
        c.add(uuid, "frequency", f"unknown frequency fields: {', '.join(sorted(extra))}.")
        ok = False
    kind = period.get("type")
    if kind == "rolling":
        unit, amount = period.get("unit"), period.get("value")
        if unit not in ROLLING_UNITS:
            c.add(uuid, "frequency.period.unit", f"unit must be one of {', '.join(ROLLING_UNITS)}.")
            return None
        if not _is_number(amount) or amount <= 0 or amount > 100_000:
            c.add(uuid, "frequency.period.value", "value must be a positive number.")
            return None
        if unit in ("month", "year") and float(amount) != int(amount):
            c.add(uuid, "frequency.period.value", "months and years must be whole numbers.")
            return None
        if not ok:
            return None
        return FrequencySpec(str(operator), wanted, "rolling", unit=unit, amount=float(amount))
    if kind == "fixed":
        start = parse_instant(period.get("start_date"))
        if start is None:
            c.add(uuid, "frequency.period.start_date", "start_date must be an ISO-8601 date.")
            return None
        end_raw = period.get("end_date")
        end: datetime | None = None
        inclusive = True
        if end_raw is not None:
            end = parse_instant(end_raw)
            if end is None:
                c.add(uuid, "frequency.period.end_date", "end_date must be an ISO-8601 date.")
                return None
            if isinstance(end_raw, str) and _DATE_ONLY.match(end_raw):
                # A date-only end covers that whole (UTC) day.
                end, inclusive = end + timedelta(days=1), False
            if end < start:
                c.add(uuid, "frequency.period.end_date", "end_date is before start_date.")
                return None
        if not ok:
            return None
        return FrequencySpec(str(operator), wanted, "fixed", start=start, end=end, end_inclusive=inclusive)
    c.add(uuid, "frequency.period.type", "period type must be rolling or fixed.")
    return None


def _uuid_of(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("uuid"), str):
        return str(raw["uuid"])
    return ""


def _node(c: _Collector, raw: Any, *, in_event: bool, depth: int, seen: set[str]) -> Node | None:
    uuid = _uuid_of(raw)
    if not isinstance(raw, dict):
        c.add("", "children", "every rule node must be an object.")
        return None
    if not uuid:
        c.add("", "uuid", "every rule node needs a uuid.")
        return None
    if uuid in seen:
        c.add(uuid, "uuid", "uuids must be unique within the rule.")
    seen.add(uuid)
    if depth > 20:
        c.add(uuid, "children", "rules may nest at most 20 levels.")
        return None
    rtype, group, operator = raw.get("type"), raw.get("group"), raw.get("operator")
    path = raw.get("path") or ""
    if group not in ("user", "event", "parent"):
        c.add(uuid, "group", "group must be user, event or parent.")
        return None
    if rtype == "shopify_purchase":
        c.add(uuid, "type", "shopify_purchase rules are not supported: Clarion has no Shopify integration.")
        return None
    if rtype == "wrapper":
        if operator not in WRAPPER_OPERATORS:
            c.add(uuid, "operator", "a wrapper's operator must be and or or.")
            return None
        children_raw = raw.get("children") or []
        if not isinstance(children_raw, list):
            c.add(uuid, "children", "children must be an array.")
            return None
        if group == "event" and not in_event:
            return _event_rule(c, raw, uuid, str(operator), children_raw, depth, seen)
        if raw.get("frequency") is not None:
            c.add(uuid, "frequency", "frequency applies only to an event wrapper.")
        kids = [_node(c, k, in_event=in_event, depth=depth + 1, seen=seen) for k in children_raw]
        return Group(uuid, str(operator), tuple(k for k in kids if k is not None))
    if rtype not in OPERATORS:
        c.add(uuid, "type", "type must be wrapper, string, number, boolean, date or array.")
        return None
    if operator not in OPERATORS[rtype]:
        c.add(
            uuid,
            "operator",
            f"operator {operator!r} is not valid for {rtype}; use one of: {', '.join(OPERATORS[rtype])}.",
        )
        return None
    if raw.get("frequency") is not None:
        c.add(uuid, "frequency", "frequency applies only to an event wrapper.")
    if raw.get("children"):
        c.add(uuid, "children", "only wrappers have children.")
    if in_event and group != "event":
        c.add(uuid, "group", "conditions inside an event rule must have group event.")
        return None
    if not in_event and group == "event":
        c.add(uuid, "group", "an event condition must be a child of an event wrapper (type wrapper, group event).")
        return None
    if not isinstance(path, str):
        c.add(uuid, "path", "path must be a string.")
        return None
    resolved = _resolve_path(path, EVENT_FIELDS if in_event else USER_FIELDS)
    if resolved is None:
        fields = ", ".join(EVENT_FIELDS if in_event else USER_FIELDS)
        c.add(uuid, "path", f"path {path!r} is not valid; use data.<key>[.<key>…] or one of: {fields}.")
        return None
    ref, column_type = resolved
    if column_type is not None and column_type != rtype:
        c.add(uuid, "type", f"{ref.column} is a {column_type} field; a {rtype} rule cannot read it.")
        return None
    coerced = _coerce_value(c, uuid, rtype, str(operator), raw)
    if coerced is None:
        return None
    value, instant, day = coerced
    return Leaf(uuid, rtype, str(operator), ref, value, instant, day)


def _event_rule(
    c: _Collector, raw: dict[str, Any], uuid: str, operator: str, children_raw: list[Any], depth: int, seen: set[str]
) -> EventRule | None:
    name = raw.get("value")
    if not isinstance(name, str) or not name.strip():
        c.add(uuid, "value", "an event wrapper needs the event name as its value.")
        return None
    kids = [_node(c, k, in_event=True, depth=depth + 1, seen=seen) for k in children_raw]
    condition: Node | None = Group(uuid, operator, tuple(k for k in kids if k is not None)) if children_raw else None
    frequency = _frequency(c, uuid, raw["frequency"]) if raw.get("frequency") is not None else None
    return EventRule(uuid, name, condition, frequency)


@dataclass(frozen=True)
class CompiledRule:
    """A validated rule and what it depends on (for incremental re-evaluation)."""

    root: Node
    event_names: frozenset[str]
    reads_user: bool


def _dependencies(node: Node, names: set[str]) -> bool:
    if isinstance(node, Leaf):
        return True
    if isinstance(node, EventRule):
        names.add(node.name)
        return False
    reads = False
    for child in node.children:
        reads = _dependencies(child, names) or reads
    return reads


def validate_rule(raw: Any) -> CompiledRule:
    """Validate a wire RuleNode; raise ``422 validation_failed`` naming each bad node's uuid."""
    c = _Collector()
    root = _node(c, raw, in_event=False, depth=0, seen=set())
    if c.errors or root is None:
        errors = c.errors or [FieldError(param="rule", code=ErrorCode.validation_failed, message="invalid rule")]
        raise validation_failed(errors)
    names: set[str] = set()
    reads_user = _dependencies(root, names)
    # ``is same day`` reads the user's timezone even from an event condition.
    return CompiledRule(root, frozenset(names), reads_user or _uses_same_day(root))


def _uses_same_day(node: Node) -> bool:
    if isinstance(node, Leaf):
        return node.operator == "is same day"
    if isinstance(node, EventRule):
        return node.condition is not None and _uses_same_day(node.condition)
    return any(_uses_same_day(k) for k in node.children)


def normalise_rule(raw: dict[str, Any], root_uuid: str | None = None, parent_uuid: str | None = None) -> dict[str, Any]:
    """The rule as stored and returned: ``root_uuid``/``parent_uuid`` filled in on every node."""
    root = root_uuid or str(raw.get("uuid"))
    out = dict(raw)
    out["root_uuid"] = None if parent_uuid is None else root
    out["parent_uuid"] = parent_uuid
    if isinstance(raw.get("children"), list):
        out["children"] = [normalise_rule(k, root, str(raw.get("uuid"))) for k in raw["children"]]
    return out
