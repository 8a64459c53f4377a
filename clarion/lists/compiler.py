"""Compile a validated rule tree into one SQL boolean expression over ``users AS u``.

Per dialect:

* PostgreSQL reads ``data`` (``jsonb``) with ``#>`` / ``#>>`` and checks ``jsonb_typeof`` before any
  cast (inside ``CASE``, which guarantees the order), so a value of the wrong type is "no match",
  never an error. Dates go through ``clarion_ts(text)`` and ``clarion_local_day(ts, tz)``
  (created by migration 0005): both return NULL instead of raising.
* SQLite reads ``data`` with ``json_type`` / ``json_extract`` / ``json_each``; ``clarion_ts`` and
  ``clarion_local_day`` are Python functions registered on each connection
  (:mod:`clarion.lists.sqlite_functions`) and share the evaluator's parser.

Event rules become correlated ``EXISTS`` (no frequency) or ``(SELECT COUNT(*) …) <op> n`` over
``events AS e``; both rely on ``ix_events_project_user_name_created``
(project_id, user_id, name, created_at). Every positive predicate is wrapped in
``COALESCE(…, FALSE)`` so that negations are exact complements (SQL NULL never leaks out).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, Float, String, TextClause, bindparam, text
from sqlalchemy.sql.elements import BindParameter

from clarion.core.db import UTCDateTime
from clarion.lists.rules import NEGATIONS, EventRule, Group, Leaf, Node

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def epoch_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch: how SQLite's ``clarion_ts`` represents an instant."""
    return (value.astimezone(UTC) - _EPOCH) // _MICRO


class RuleCompiler:
    """Builds SQL text and its bind parameters; one instance per statement."""

    def __init__(
        self, dialect: str, now: datetime, *, project_id: int | None = None, id_range: tuple[int, int] | None = None
    ) -> None:
        self.pg = dialect == "postgresql"
        self.now = now
        self.binds: list[BindParameter[Any]] = []
        # With an id range, event rules compile to an uncorrelated semi-join restricted to that range
        # (one hashed sub-plan per statement) instead of a correlated sub-query per user.
        self.bulk = (project_id, id_range) if project_id is not None and id_range is not None else None

    # -- parameters ------------------------------------------------------------------------------
    def bind(self, value: Any, type_: Any = None) -> str:
        name = f"r{len(self.binds)}"
        self.binds.append(bindparam(name, value, type_=type_))
        return f":{name}"

    def bind_instant(self, value: datetime) -> str:
        """A date-rule comparand in the representation ``clarion_ts`` returns on this dialect."""
        if self.pg:
            return f"CAST({self.bind(value, UTCDateTime())} AS timestamptz)"
        return self.bind(epoch_micros(value), BigInteger())

    def bind_time(self, value: datetime) -> str:
        """A bound timestamp compared with a timestamp column (``events.created_at``)."""
        return self.bind(value, UTCDateTime())

    # -- JSON access -----------------------------------------------------------------------------
    def _pg_path(self, keys: tuple[str, ...]) -> str:
        # Keys are restricted to [A-Za-z_][A-Za-z0-9_-]* by the validator: safe inside '{…}'.
        return "'{" + ",".join(keys) + "}'"

    def _sqlite_path(self, keys: tuple[str, ...]) -> str:
        return "'$" + "".join(f'."{k}"' for k in keys) + "'"

    def _json(self, alias: str, keys: tuple[str, ...]) -> tuple[str, str, str]:
        """(typeof expression, raw value expression, text value expression)."""
        if self.pg:
            path = self._pg_path(keys)
            raw = f"({alias}.data #> {path})"
            return f"jsonb_typeof{raw}", raw, f"({alias}.data #>> {path})"
        path = self._sqlite_path(keys)
        return f"json_type({alias}.data, {path})", f"json_extract({alias}.data, {path})", ""

    # -- leaves ----------------------------------------------------------------------------------
    def _present(self, alias: str, leaf: Leaf) -> str:
        if leaf.ref.column:
            return f"({alias}.{leaf.ref.column} IS NOT NULL)"
        typeof, _, _ = self._json(alias, leaf.ref.keys)
        return f"COALESCE({typeof} <> 'null', FALSE)"

    def _string(self, alias: str, leaf: Leaf) -> str:
        if leaf.ref.column:
            return f"{alias}.{leaf.ref.column}"
        typeof, raw, as_text = self._json(alias, leaf.ref.keys)
        if self.pg:
            return f"(CASE WHEN {typeof} = 'string' THEN {as_text} END)"
        return f"(CASE WHEN {typeof} = 'text' THEN {raw} END)"

    def _number(self, alias: str, leaf: Leaf) -> str:
        typeof, raw, _ = self._json(alias, leaf.ref.keys)
        if self.pg:
            return (
                f"(CASE WHEN {typeof} = 'number' THEN CASE WHEN abs(CAST({raw} AS numeric)) < 1e308 "
                f"THEN CAST({raw} AS double precision) END END)"
            )
        return f"(CASE WHEN {typeof} IN ('integer', 'real') AND abs({raw}) < 1e308 THEN {raw} END)"

    def _instant(self, alias: str, leaf: Leaf) -> str:
        if leaf.ref.column:
            column = f"{alias}.{leaf.ref.column}"
            return column if self.pg else f"clarion_ts({column})"
        return f"clarion_ts({self._string(alias, leaf)})"

    def _positive(self, alias: str, leaf: Leaf, op: str) -> str:
        if op == "is set":
            return self._present(alias, leaf)
        t = leaf.type
        if t == "string":
            s = self._string(alias, leaf)
            if op == "empty":
                return f"(NOT {self._present(alias, leaf)} OR COALESCE({s} = '', FALSE))"
            wanted = str(leaf.value)
            v = self.bind(wanted, String())
            n = len(wanted)
            if op == "=":
                expr = f"{s} = {v}"
            elif op == "contains":
                expr = f"strpos({s}, {v}) > 0" if self.pg else f"instr({s}, {v}) > 0"
            elif op == "starts with":
                expr = f"substr({s}, 1, {n}) = {v}"
            else:  # ends with
                expr = f"(length({s}) >= {n} AND substr({s}, length({s}) - {n} + 1) = {v})"
            return f"COALESCE({expr}, FALSE)"
        if t == "number":
            symbol = {"=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[op]
            value = self.bind(float(leaf.value), Float())
            return f"COALESCE({self._number(alias, leaf)} {symbol} CAST({value} AS double precision), FALSE)"
        if t == "boolean":
            wanted_bool = bool(leaf.value)
            if leaf.ref.column:
                literal = ("TRUE" if wanted_bool else "FALSE") if self.pg else ("1" if wanted_bool else "0")
                return f"COALESCE({alias}.{leaf.ref.column} = {literal}, FALSE)"
            typeof, raw, _ = self._json(alias, leaf.ref.keys)
            word = "true" if wanted_bool else "false"
            if self.pg:
                return f"COALESCE({raw} = CAST('{word}' AS jsonb), FALSE)"
            return f"COALESCE({typeof} = '{word}', FALSE)"
        if t == "date":
            instant = self._instant(alias, leaf)
            assert leaf.instant is not None
            if op == "is same day":
                if leaf.day is not None:
                    target = (
                        f"CAST({self.bind(leaf.day, Date())} AS date)"
                        if self.pg
                        else self.bind(leaf.day.isoformat(), String())
                    )
                else:
                    target = f"clarion_local_day({self.bind_instant(leaf.instant)}, u.timezone)"
                return f"COALESCE(clarion_local_day({instant}, u.timezone) = {target}, FALSE)"
            symbol = {"=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[op]
            return f"COALESCE({instant} {symbol} {self.bind_instant(leaf.instant)}, FALSE)"
        # array
        typeof, raw, _ = self._json(alias, leaf.ref.keys)
        if op == "empty":
            if self.pg:
                length = f"jsonb_array_length(CASE WHEN {typeof} = 'array' THEN {raw} END)"
                return f"(NOT {self._present(alias, leaf)} OR COALESCE({length} = 0, FALSE))"
            length = f"json_array_length({alias}.data, {self._sqlite_path(leaf.ref.keys)})"
            return f"(NOT {self._present(alias, leaf)} OR COALESCE({typeof} = 'array' AND {length} = 0, FALSE))"
        wanted = leaf.value
        if self.pg:
            element = self.bind(json.dumps(wanted), String())
            source = f"jsonb_array_elements(CASE WHEN {typeof} = 'array' THEN {raw} ELSE CAST('[]' AS jsonb) END)"
            return f"EXISTS (SELECT 1 FROM {source} AS x(v) WHERE x.v = CAST({element} AS jsonb))"  # noqa: S608
        if wanted is None:
            match = "x.type = 'null'"
        elif isinstance(wanted, bool):
            match = f"x.type = '{'true' if wanted else 'false'}'"
        elif isinstance(wanted, str):
            match = f"x.type = 'text' AND x.value = {self.bind(wanted, String())}"
        else:
            match = f"x.type IN ('integer', 'real') AND x.value = {self.bind(float(wanted), Float())}"
        source = f"json_each(CASE WHEN {typeof} = 'array' THEN {raw} ELSE '[]' END)"
        return f"EXISTS (SELECT 1 FROM {source} AS x WHERE {match})"  # noqa: S608

    def leaf(self, alias: str, leaf: Leaf) -> str:
        if leaf.operator in NEGATIONS:
            return f"(NOT {self._positive(alias, leaf, NEGATIONS[leaf.operator])})"
        return self._positive(alias, leaf, leaf.operator)

    # -- structure -------------------------------------------------------------------------------
    def _group(self, node: Group, alias: str) -> str:
        parts = [self.node(k, alias) for k in node.children]
        if not parts:
            return "TRUE" if node.operator == "and" else "FALSE"
        return "(" + f" {node.operator.upper()} ".join(parts) + ")"

    def _event(self, node: EventRule) -> str:
        where = [f"e.name = {self.bind(node.name, String())}"]
        window = node.frequency.window(self.now) if node.frequency else None
        if window is not None:
            if window.start is not None:
                where.append(f"e.created_at >= {self.bind_time(window.start)}")
            if window.end is not None:
                where.append(f"e.created_at {'<=' if window.end_inclusive else '<'} {self.bind_time(window.end)}")
        if node.condition is not None:
            where.append(self.node(node.condition, "e"))
        # ``is same day`` inside an event condition reads the user's timezone: keep it correlated.
        if self.bulk is not None and not (node.condition is not None and _reads_user(node.condition)):
            project_id, (lo, hi) = self.bulk
            scope = [
                f"e.project_id = {self.bind(project_id, BigInteger())}",
                f"e.user_id BETWEEN {self.bind(lo, BigInteger())} AND {self.bind(hi, BigInteger())}",
            ]
            sub = "SELECT e.user_id FROM events AS e WHERE " + " AND ".join(scope + where)  # noqa: S608
            if window is None:
                return f"(u.id IN ({sub}))"
            count = f"CAST({self.bind(window.count, Float())} AS double precision)"
            if compare_count(0, window.operator, window.count):
                # Users without events match, so select the users whose count fails instead.
                return f"(NOT (u.id IN ({sub} GROUP BY e.user_id HAVING NOT (COUNT(*) {window.operator} {count}))))"
            return f"(u.id IN ({sub} GROUP BY e.user_id HAVING COUNT(*) {window.operator} {count}))"
        body = "FROM events AS e WHERE e.project_id = u.project_id AND e.user_id = u.id AND " + " AND ".join(where)
        if window is None:
            return f"EXISTS (SELECT 1 {body})"
        symbol = window.operator
        return f"((SELECT COUNT(*) {body}) {symbol} CAST({self.bind(window.count, Float())} AS double precision))"

    def node(self, node: Node, alias: str = "u") -> str:
        if isinstance(node, Leaf):
            return self.leaf(alias, node)
        if isinstance(node, Group):
            return self._group(node, alias)
        return self._event(node)


def compile_condition(
    root: Node, dialect: str, now: datetime, *, project_id: int | None = None, id_range: tuple[int, int] | None = None
) -> tuple[str, list[BindParameter[Any]]]:
    """The rule as a SQL condition over ``users AS u`` and its bind parameters.

    Pass ``project_id`` and ``id_range`` when the statement covers a range of user ids (full
    materialisation): event rules then become one semi-join over that range. Without them event
    rules are correlated sub-queries, best for a handful of users (incremental maintenance).
    """
    compiler = RuleCompiler(dialect, now, project_id=project_id, id_range=id_range)
    return compiler.node(root), compiler.binds


def compare_count(count: float, operator: str, wanted: float) -> bool:
    return {
        "=": count == wanted,
        "<": count < wanted,
        "<=": count <= wanted,
        ">": count > wanted,
        ">=": count >= wanted,
    }[operator]


def _reads_user(node: Node) -> bool:
    if isinstance(node, Leaf):
        return node.operator == "is same day"
    if isinstance(node, Group):
        return any(_reads_user(k) for k in node.children)
    return False


def statement(sql: str, binds: list[BindParameter[Any]], **extra: Any) -> TextClause:
    """A ``text()`` statement with the rule's binds plus ``extra`` (name → bindparam or value)."""
    params: list[BindParameter[Any]] = list(binds)
    for name, value in extra.items():
        params.append(value if isinstance(value, BindParameter) else bindparam(name, value))
    return text(sql).bindparams(*params)
