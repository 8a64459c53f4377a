"""Liquid (python-liquid 2): the two environments, template compilation and the render scope (§E2).

HTML fields compile in an auto-escaping environment (interpolated values are HTML-escaped, values
already marked safe are not); text fields (subject, SMS, push, webhook) in a plain one. Undefined
variables render as the empty string (python-liquid's default ``Undefined``).

One message renders several templates over the same variables (an email: subject, preheader,
HTML, text part), and they repeat the same few ``{{ user.x }}`` outputs many times. A template
whose top level is text, output statements and blocks that cannot change the render context
(``if``, ``unless``, ``case``, comments — and only those, at any depth) therefore also gets a
*flat plan*: its text chunks and its top-level outputs and blocks. :class:`MessageRender`
renders such templates for one message by evaluating every output expression with
python-liquid's own expression evaluation in a python-liquid ``RenderContext`` and stringifying
it with python-liquid's own ``to_liquid_string`` (which escapes in the auto-escaping
environment), exactly as ``OutputNode`` does, and by rendering each block with the block node's
own ``render`` — but a plain variable path (``user.first_name``, no filters) is looked up once
per message and shared by every template of the message, and each output's string is computed
once per (expression, escaping). Templates with any other tag (``assign``, ``capture``, ``for``,
``increment``, ``cycle``, ``include``…), and any render that raises, go through the library's
normal ``render`` instead, so errors and those tags' semantics are the library's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from liquid import BlockNode, BoundTemplate, ConditionalBlockNode, Environment, Expression, Node, RenderContext
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions import FilteredExpression, Path
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.case_tag import CaseNode, MultiExpressionBlockNode
from liquid.builtin.tags.comment_tag import CommentNode
from liquid.builtin.tags.if_tag import IfNode
from liquid.builtin.tags.inline_comment_tag import InlineCommentNode
from liquid.builtin.tags.unless_tag import UnlessNode
from liquid.exceptions import LiquidError
from liquid.stringify import to_liquid_string

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
    # The two environments differ only in auto-escaping: MessageRender shares plain-path lookups
    # between them.
    return Environment(autoescape=autoescape)


HTML_ENV = _make_env(True)
TEXT_ENV = _make_env(False)


# Variables a caller adds for one render only (the email's preheader and pixel blocks): a path
# starting with one of these is never shared between renders with and without them.
RENDER_ONLY_ROOTS: frozenset[str] = frozenset({"__clarion_preheader", "__clarion_pixel"})
# python-liquid's built-in dynamic roots: evaluated at each output, as the library does.
_DYNAMIC_ROOTS = frozenset({"now", "today"})


# Nodes that neither read nor write anything in the context beyond evaluating expressions:
# rendering them with one context per message (instead of one per template) changes nothing.
_BLOCK_ROOTS = frozenset({IfNode, UnlessNode, CaseNode, CommentNode, InlineCommentNode})
_PURE_NODES = _BLOCK_ROOTS | {BlockNode, ConditionalBlockNode, MultiExpressionBlockNode, ContentNode, OutputNode}


@dataclass(frozen=True, slots=True)
class _Slot:
    key: tuple[Any, ...]  # (evaluation key, autoescape): one string per message
    value_key: Any  # shared across templates for plain paths, else this expression/block only
    expression: Expression | None  # an output statement's expression, or
    node: Node | None  # a block rendered by its own node
    scoped: bool  # evaluated in the template's own context (not shareable across envs/extras)


@dataclass(frozen=True, slots=True)
class FlatPlan:
    """``chunks[0] out[0] chunks[1] … out[n-1] chunks[n]``; each ``out`` an output or a block."""

    chunks: tuple[str, ...]
    slots: tuple[_Slot, ...]


class _Same:
    """A cache key for one object by identity that keeps the object alive, so its id cannot be
    reused by another object while the key is in a cache."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _shared_key(expression: Expression) -> tuple[Any, ...] | None:
    """A key for a plain variable path (no filters, literal segments), else ``None``."""
    if type(expression) is not FilteredExpression or expression.filters:
        return None
    left = expression.left
    if type(left) is not Path:
        return None
    segments = left.path
    if not segments or not all(type(s) is str or type(s) is int for s in segments):
        return None
    if segments[0] in RENDER_ONLY_ROOTS or segments[0] in _DYNAMIC_ROOTS:
        return None
    return ("path", *((type(s).__name__, s) for s in segments))


def flat_plan(template: BoundTemplate) -> FlatPlan | None:
    """The plan of a template made of text, ``{{ … }}`` outputs and context-free blocks, else ``None``."""
    env = template.env
    if (
        type(template) is not BoundTemplate
        or template.matter
        or template.globals
        or env.output_stream_limit is not None
        or env.undefined is not HTML_ENV.undefined
    ):
        return None
    static_context = RenderContext(template)
    chunks: list[str] = []
    slots: list[_Slot] = []
    text: list[str] = []
    for node in template.nodes:
        if type(node) is ContentNode:
            text.append(node.text)
            continue
        if type(node) is OutputNode:
            expression = node.expression
            shared = _shared_key(expression)
            value_key: Any = shared if shared is not None else ("expr", _Same(expression))
            slot = _Slot((value_key, env.autoescape), value_key, expression, None, shared is None)
        elif type(node) in _BLOCK_ROOTS and _pure(node, static_context):
            value_key = ("node", _Same(node))
            slot = _Slot((value_key, env.autoescape), value_key, None, node, True)
        else:
            return None
        chunks.append("".join(text))
        text = []
        slots.append(slot)
    chunks.append("".join(text))
    return FlatPlan(tuple(chunks), tuple(slots))


def _pure(node: Node, static_context: RenderContext) -> bool:
    return type(node) in _PURE_NODES and all(_pure(child, static_context) for child in node.children(static_context))


@dataclass(frozen=True, slots=True)
class LiquidTemplate:
    """A parsed template and, when it has no context-changing tags, its flat plan."""

    bound: BoundTemplate
    plan: FlatPlan | None


def compile_source(field: str, source: str, *, html_field: bool) -> LiquidTemplate:
    """Parse ``source``; raise :class:`TemplateSyntaxError` with line and column on bad syntax."""
    env = HTML_ENV if html_field else TEXT_ENV
    try:
        bound = env.from_string(source)
    except LiquidError as exc:
        where = exc.context()
        line, column = (where[0], where[1] + 1) if where else (1, 1)
        raise TemplateSyntaxError(field, str(exc.message), line, column) from exc
    return LiquidTemplate(bound, flat_plan(bound))


class MessageRender:
    """Renders the templates of one message over one set of variables (see the module docstring).

    ``extras`` are variables only renders with ``extras=True`` see (the email HTML's preheader
    and pixel). The result of every render equals ``template.bound.render(**variables)`` (plus
    ``extras`` when asked).
    """

    __slots__ = ("_contexts", "_strings", "_values", "extras", "variables")

    def __init__(self, variables: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> None:
        self.variables = variables
        self.extras = extras or {}
        self._values: dict[Any, object] = {}
        # Output strings, for renders without and with the extras.
        self._strings: tuple[dict[tuple[Any, ...], str], dict[tuple[Any, ...], str]] = ({}, {})
        self._contexts: dict[tuple[int, bool], RenderContext] = {}

    def set_extras(self, extras: Mapping[str, Any]) -> None:
        """Replace the render-only extras (forgets whatever was rendered with the old ones)."""
        self.extras = extras
        self._strings[True].clear()
        for key in [k for k in self._contexts if k[1]]:
            del self._contexts[key]

    def _scope(self, with_extras: bool) -> dict[str, Any]:
        return {**self.variables, **self.extras} if with_extras else dict(self.variables)

    def _context(self, template: BoundTemplate, with_extras: bool) -> RenderContext:
        key = (id(template.env), with_extras)
        context = self._contexts.get(key)
        if context is None:
            # What ``BoundTemplate.render`` builds, with the namespace ``render_with_context`` pushes.
            scope = self._scope(with_extras)
            scope.update(template.make_partial_namespace(False, {}))
            context = self._contexts[key] = RenderContext(template, globals=template.make_globals(scope))
        return context

    def render(self, template: LiquidTemplate, *, extras: bool = False) -> str:
        plan = template.plan
        if plan is None:
            return template.bound.render(**self._scope(extras))
        try:
            return self._render_plan(template.bound, plan, extras)
        except Exception:  # the library's own render below raises (or not) exactly as it would
            return template.bound.render(**self._scope(extras))

    def _render_plan(self, bound: BoundTemplate, plan: FlatPlan, with_extras: bool) -> str:
        slots = plan.slots
        if not slots:
            return plan.chunks[0]
        strings = self._strings[with_extras]
        outs: list[str] = []
        for slot in slots:
            text = strings.get(slot.key)
            if text is None:
                text = strings[slot.key] = self._stringify(bound, slot, with_extras)
            outs.append(text)
        pieces: list[str] = [""] * (2 * len(slots) + 1)
        pieces[::2] = plan.chunks
        pieces[1::2] = outs
        return "".join(pieces)

    def _stringify(self, bound: BoundTemplate, slot: _Slot, with_extras: bool) -> str:
        if slot.node is not None:
            buffer = StringIO()
            slot.node.render(self._context(bound, with_extras), buffer)
            return buffer.getvalue()
        assert slot.expression is not None
        if slot.scoped:
            # Filters may depend on the environment and the scope: this template's context only.
            value = slot.expression.evaluate(self._context(bound, with_extras))
            return to_liquid_string(value, bound.env.autoescape)
        values = self._values
        if slot.value_key in values:
            value = values[slot.value_key]
        else:
            # A plain path resolves the same in both environments (they differ only in escaping)
            # and with or without the render-only extras (it does not start with one of them).
            value = values[slot.value_key] = slot.expression.evaluate(self._context(bound, with_extras))
        return to_liquid_string(value, bound.env.autoescape)


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
