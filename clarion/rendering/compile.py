"""Compiling a template row once per (template, locale): Liquid parse, MJML, HTML instrumentation.

A :class:`CompiledTemplate` holds parsed Liquid for every field of the channel. Compiled templates
are kept in a bounded LRU keyed by template id + ``updated_at`` (+ the tracking switches), so a
batch — or many batches — of users reuse one compilation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import html2text

from clarion.rendering.liquid import LiquidTemplate, MessageRender, TemplateSyntaxError, compile_source
from clarion.tracking.links import instrument_html

# Fields interpolated with HTML escaping, per channel; every other string field is plain text.
HTML_FIELDS = {"email": {"html"}, "in_app": {"html"}}
# Keys that are configuration, never rendered.
STATIC_KEYS = {
    "email": {"editor", "emailEditorJson", "emailDesign", "mjml"},
    "text": set(),
    "push": set(),
    "webhook": {"method"},
    "in_app": {"type", "read_on_view"},
}


class TemplateRow(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def locale(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def campaign_id(self) -> int: ...


@dataclass(frozen=True)
class TrackingSwitches:
    link_wrap: bool = False
    open_pixel: bool = False
    wrapped_prefix: str | tuple[str, ...] | None = None


# A compiled field: a Liquid template for strings, nested structures for objects and lists.
Compiled = LiquidTemplate | dict[str, Any] | list[Any] | str | int | float | bool | None


def compile_value(path: str, value: Any, *, html_field: bool = False) -> Compiled:
    if isinstance(value, str):
        return compile_source(path, value, html_field=html_field) if ("{" in value) else value
    if isinstance(value, dict):
        return {k: compile_value(f"{path}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return value  # type: ignore[no-any-return]


def render_value(compiled: Compiled, message: MessageRender) -> Any:
    if isinstance(compiled, LiquidTemplate):
        return message.render(compiled)
    if isinstance(compiled, dict):
        return {k: render_value(v, message) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(v, message) for v in compiled]
    return compiled


def html_to_text_source(html_source: str) -> str:
    """A text alternative from HTML; works on Liquid source (tags and outputs pass through)."""
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    return str(converter.handle(html_source)).strip() + "\n"


def check_template_data(channel: str, data: dict[str, Any]) -> None:
    """Parse every rendered field; raise :class:`TemplateSyntaxError` on the first bad one."""
    static = STATIC_KEYS.get(channel, set())
    html_fields = HTML_FIELDS.get(channel, set())
    for key, value in data.items():
        if key not in static and value is not None:
            compile_value(f"data.{key}", value, html_field=key in html_fields)


@dataclass
class CompiledTemplate:
    template_id: int
    campaign_id: int
    channel: str
    locale: str
    data: dict[str, Any]
    fields: dict[str, Compiled] = field(default_factory=dict)
    # email only
    editor: str = "code"
    html: LiquidTemplate | None = None
    text: LiquidTemplate | None = None
    links: int = 0
    wrapped_prefix: str | tuple[str, ...] | None = None
    open_pixel: bool = False


def compile_template(row: TemplateRow, switches: TrackingSwitches) -> CompiledTemplate:
    data = dict(row.data or {})
    out = CompiledTemplate(row.id, row.campaign_id, row.type, row.locale, data)
    static = STATIC_KEYS.get(row.type, set())
    html_fields = HTML_FIELDS.get(row.type, set())
    for key, value in data.items():
        if key in static or (row.type == "email" and key in ("html", "text")):
            continue
        out.fields[key] = compile_value(f"data.{key}", value, html_field=key in html_fields)
    if row.type != "email":
        return out
    out.editor = str(data.get("editor") or "code")
    html_source = data.get("html") if out.editor != "plain" else None
    text_source = data.get("text")
    if html_source:
        instrumented = instrument_html(
            html_source,
            wrap_links=switches.link_wrap,
            wrapped_prefix=switches.wrapped_prefix,
            preheader=True,
            pixel=switches.open_pixel,
        )
        out.links = instrumented.links
        out.wrapped_prefix = switches.wrapped_prefix
        out.open_pixel = switches.open_pixel
        out.html = compile_source("data.html", instrumented.source, html_field=True)
        if not text_source:
            text_source = html_to_text_source(html_source)
    if text_source:
        out.text = compile_source("data.text", text_source, html_field=False)
    return out


class CompiledCache:
    """A bounded LRU of compiled templates (thread-safe; compilation happens outside the lock)."""

    def __init__(self, maxsize: int = 512) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[Any, ...], CompiledTemplate] = OrderedDict()
        self._lock = threading.Lock()
        self.compilations = 0

    def get(self, row: TemplateRow, switches: TrackingSwitches) -> CompiledTemplate:
        key = (row.id, row.updated_at, switches)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        compiled = compile_template(row, switches)
        with self._lock:
            self.compilations += 1
            self._items[key] = compiled
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return compiled


COMPILED = CompiledCache()

__all__ = ["COMPILED", "CompiledCache", "CompiledTemplate", "TemplateSyntaxError", "TrackingSwitches"]
