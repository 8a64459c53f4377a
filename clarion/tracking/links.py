"""Preparing an HTML template for per-recipient click tracking, with an HTML tokenizer.

At compile time :func:`instrument_html` walks the HTML template source with the standard
library's ``html.parser`` and, for every ``href`` of an ``<a>`` or ``<area>`` whose value is an
absolute ``http(s)`` URL (or starts with a Liquid expression), brackets the value between two
markers that carry a per-process random nonce. After Liquid has rendered the HTML,
:func:`wrap_marked_links` replaces every bracketed (rendered, HTML-encoded) URL with its signed
click URL — a plain string scan, so rendering many users pays nothing extra per link beyond
signing. Rendered values cannot forge a marker: they do not know the nonce. Everything else —
``mailto:``, ``tel:``, ``#anchors``, relative links, links already on the click endpoint and any
attribute other than ``href`` — is left byte-for-byte as written.

The same walk records where ``<body>`` opens and closes so the preheader and the open pixel can
be placed without another parse.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser, attrfind_tolerant, tagfind_tolerant  # type: ignore[attr-defined]

LINK_TAGS = frozenset({"a", "area"})
_NONCE = secrets.token_hex(8)
LINK_OPEN = f"\x00{_NONCE}<"
LINK_CLOSE = f">{_NONCE}\x00"
PREHEADER_VAR = "__clarion_preheader"
PIXEL_VAR = "__clarion_pixel"


def is_trackable(url: str, wrapped_prefix: str | tuple[str, ...] | None = None) -> bool:
    """An absolute ``http(s)://`` URL that is not already a click-tracking URL."""
    url = url.strip()
    if not url[:8].lower().startswith(("http://", "https://")):
        return False
    return not (wrapped_prefix and url.startswith(wrapped_prefix))


def _should_instrument(raw_value: str, wrapped_prefix: str | tuple[str, ...] | None) -> bool:
    value = raw_value.strip()
    if value.startswith("{{") or value.startswith("{%"):
        return True  # decided at render time, once the URL is known
    return is_trackable(html.unescape(value), wrapped_prefix)


@dataclass
class _Edit:
    start: int
    end: int
    text: str


class _Scanner(HTMLParser):
    def __init__(self, source: str, wrapped_prefix: str | tuple[str, ...] | None, wrap_links: bool) -> None:
        super().__init__(convert_charrefs=False)
        self.source = source
        self.wrapped_prefix = wrapped_prefix
        self.wrap_links = wrap_links
        self.line_starts = [0]
        for i, ch in enumerate(source):
            if ch == "\n":
                self.line_starts.append(i + 1)
        self.edits: list[_Edit] = []
        self.body_open_end: int | None = None
        self.body_close_start: int | None = None
        self.links = 0

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body" and self.body_close_start is None:
            self.body_close_start = self._offset()

    def _start(self, tag: str) -> None:
        raw = self.get_starttag_text() or ""
        begin = self._offset()
        if tag == "body" and self.body_open_end is None:
            self.body_open_end = begin + len(raw)
        if not self.wrap_links or tag not in LINK_TAGS:
            return
        # Walk the attributes with html.parser's own tokenizer patterns to get their spans.
        match = tagfind_tolerant.match(raw, 1)
        pos = match.end() if match else len(raw)
        while pos < len(raw):
            attr = attrfind_tolerant.match(raw, pos)
            if not attr:
                break
            name, value = attr.group(1), attr.group(3)
            if name.lower() == "href" and value is not None:
                quoted = value[:1] in ("'", '"')
                inner = value[1:-1] if quoted else value
                if _should_instrument(inner, self.wrapped_prefix):
                    start = begin + attr.start(3)
                    replacement = '"' + LINK_OPEN + inner + LINK_CLOSE + '"'
                    self.edits.append(_Edit(start, start + len(value), replacement))
                    self.links += 1
            pos = attr.end()


@dataclass(frozen=True)
class InstrumentedHtml:
    source: str
    links: int


def instrument_html(
    source: str,
    *,
    wrap_links: bool,
    wrapped_prefix: str | tuple[str, ...] | None,
    preheader: bool,
    pixel: bool,
) -> InstrumentedHtml:
    """Return the template source with link, preheader and pixel hooks inserted."""
    scanner = _Scanner(source, wrapped_prefix, wrap_links)
    scanner.feed(source)
    scanner.close()
    edits = list(scanner.edits)
    if preheader:
        at = scanner.body_open_end if scanner.body_open_end is not None else 0
        edits.append(_Edit(at, at, "{{ " + PREHEADER_VAR + " }}"))
    if pixel:
        at = scanner.body_close_start if scanner.body_close_start is not None else len(source)
        edits.append(_Edit(at, at, "{{ " + PIXEL_VAR + " }}"))
    out: list[str] = []
    last = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        out.append(source[last : edit.start])
        out.append(edit.text)
        last = edit.end
    out.append(source[last:])
    return InstrumentedHtml("".join(out), scanner.links)


def wrap_marked_links(
    rendered: str, wrap: Callable[[str], str] | None, wrapped_prefix: str | tuple[str, ...] | None
) -> str:
    """Replace each marked href in rendered HTML by ``wrap(url)`` (HTML-encoded), or by itself."""
    if LINK_OPEN not in rendered:
        return rendered
    out: list[str] = []
    pos = 0
    while True:
        start = rendered.find(LINK_OPEN, pos)
        if start < 0:
            break
        end = rendered.find(LINK_CLOSE, start)
        if end < 0:
            break
        out.append(rendered[pos:start])
        encoded = rendered[start + len(LINK_OPEN) : end]
        url = (html.unescape(encoded) if "&" in encoded else encoded).strip()
        if wrap is not None and is_trackable(url, wrapped_prefix):
            out.append(html.escape(wrap(url), quote=True))
        else:
            out.append(encoded)
        pos = end + len(LINK_CLOSE)
    out.append(rendered[pos:])
    return "".join(out)
