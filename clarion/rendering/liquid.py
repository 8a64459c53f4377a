"""Liquid (python-liquid 2): the two environments, template compilation and the render scope (§E2).

HTML fields compile in an auto-escaping environment (interpolated values are HTML-escaped, values
already marked safe are not); text fields (subject, SMS, push, webhook) in a plain one. Undefined
variables render as the empty string (python-liquid's default ``Undefined``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

USER_FIELDS = ("id", "external_id", "anonymous_id", "email", "phone", "timezone", "locale", "created_at")


class TemplateSyntaxError(ValueError):
    """Liquid source that does not parse; ``line``/``column`` are 1-based."""

    def __init__(self, field: str, message: str, line: int, column: int) -> None:
        super().__init__(f"{field}: {message} (line {line}, column {column})")
        self.field = field
        self.reason = message
        self.line = line
        self.column = column


def _make_env(autoescape: bool) -> Environment:
    return Environment(autoescape=autoescape)


HTML_ENV = _make_env(True)
TEXT_ENV = _make_env(False)


def compile_source(field: str, source: str, *, html_field: bool) -> BoundTemplate:
    """Parse ``source``; raise :class:`TemplateSyntaxError` with line and column on bad syntax."""
    env = HTML_ENV if html_field else TEXT_ENV
    try:
        return env.from_string(source)
    except LiquidError as exc:
        where = exc.context()
        line, column = (where[0], where[1] + 1) if where else (1, 1)
        raise TemplateSyntaxError(field, str(exc.message), line, column) from exc


def _strip_path(data: dict[str, Any], parts: list[str]) -> None:
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def visible_attributes(data: Mapping[str, Any] | None, classified: Iterable[str]) -> dict[str, Any]:
    """A copy of a user's custom attributes without any ``classified`` path (``$.a.b`` form)."""
    attrs = dict(data or {})
    paths = [p[2:].split(".") if p.startswith("$.") else p.split(".") for p in classified]
    if not paths:
        return attrs
    attrs = copy.deepcopy(attrs)
    for parts in paths:
        if parts and all(parts):
            _strip_path(attrs, parts)
    return attrs


def user_root(user: Mapping[str, Any], classified: Iterable[str] = ()) -> dict[str, Any]:
    """``user``: every custom attribute as ``user.x`` and ``user.data.x``; first-class fields win."""
    attrs = visible_attributes(user.get("data"), classified)
    root: dict[str, Any] = dict(attrs)
    for name in USER_FIELDS:
        if name in user:
            root[name] = user[name]
    root["data"] = attrs
    return root


@dataclass(frozen=True)
class Scope:
    """The variables one render sees."""

    user: dict[str, Any]
    event: dict[str, Any]
    project: dict[str, Any]
    context: dict[str, Any]

    def as_globals(self) -> dict[str, Any]:
        return {"user": self.user, "event": self.event, "project": self.project, "context": self.context}
