"""A fast RFC 5322 / MIME builder for rendered email.

The standard library's ``EmailMessage`` builds a tree of objects and runs its generic folding
policy for every message, which costs far more than the rendering. This builder writes the same
structure directly — ``multipart/alternative`` (text + HTML) or a single ``text/plain`` part,
UTF-8 — while every encoding step is the standard ``email`` package's own: bodies go 7bit/8bit
when their lines fit (as the standard content manager does with ``cte_type="8bit"``) and through
``email.base64mime`` otherwise; non-ASCII or long unstructured headers become RFC 2047 encoded
words from ``email.base64mime.header_encode``; addresses go through ``email.utils.formataddr``.
Senders therefore need SMTP ``8BITMIME`` (universal today) for non-ASCII bodies.

Header values never carry a line break of their own: CR, LF, other control characters and
Unicode line separators are replaced by spaces before encoding, so a rendered value cannot
inject a header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import base64mime
from email.utils import formataddr, formatdate, getaddresses
from functools import lru_cache

CRLF = "\r\n"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MAX_PLAIN_HEADER = 78


class AddressError(ValueError):
    """An address that cannot be written into a header."""


def clean_header_value(value: str) -> str:
    """One physical line: control characters (CR and LF included) become single spaces."""
    return _CONTROL.sub(" ", value).strip()


def unstructured_header(name: str, value: str) -> str:
    """``Name: value`` for a free-text header (e.g. Subject), RFC 2047-encoded when needed."""
    value = clean_header_value(value)
    if value.isascii() and len(name) + 2 + len(value) <= _MAX_PLAIN_HEADER:
        return f"{name}: {value}"
    return f"{name}: " + (CRLF + " ").join(_encoded_words(value))


_WORD_BYTES = 45  # base64 of 45 octets = 60 chars; with "=?utf-8?b?" and "?=" a word is 72 chars


def _encoded_words(value: str) -> list[str]:
    """RFC 2047 encoded words (``email.base64mime.header_encode``), split between characters:
    each word holds as many whole characters as fit in ``_WORD_BYTES`` octets of UTF-8."""
    raw = value.encode("utf-8")
    words: list[str] = []
    start, end = 0, len(raw)
    while start < end:
        cut = min(start + _WORD_BYTES, end)
        while cut < end and (raw[cut] & 0xC0) == 0x80:  # never split inside a character
            cut -= 1
        words.append(base64mime.header_encode(raw[start:cut], charset="utf-8"))
        start = cut
    return words


@lru_cache(maxsize=4096)
def format_address(name: str | None, address: str) -> str:
    """One mailbox, display name RFC 2047-encoded if it is not ASCII."""
    address = address.strip()
    if not address or "@" not in address or _CONTROL.search(address) or any(c in address for c in ' <>,;"()'):
        raise AddressError(f"not a valid email address: {address!r}")
    if not address.isascii():
        raise AddressError(f"non-ASCII email addresses are not supported: {address!r}")
    display = clean_header_value(name or "")[:200]
    return formataddr((display, address), charset="utf-8")


def parse_address_list(value: str | None) -> list[tuple[str, str]]:
    """``"A <a@x>, b@y"`` → ``[("A", "a@x"), ("", "b@y")]``; blank → ``[]``."""
    if not value or not value.strip():
        return []
    return [(n, a) for n, a in getaddresses([clean_header_value(value)]) if a]


def address_header(name: str, mailboxes: Sequence[tuple[str, str]]) -> str:
    return f"{name}: " + ("," + CRLF + " ").join(format_address(n, a) for n, a in mailboxes)


@dataclass
class EmailParts:
    """Everything one email needs, already rendered."""

    message_id: str  # the msg_ id; Message-ID is derived from it
    from_name: str | None
    from_address: str
    to_address: str
    subject: str
    text: str
    html: str | None = None  # None: a single text/plain part
    to_name: str | None = None
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    list_unsubscribe: str | None = None
    date: str | None = None


_MAX_LINE = 998


_B_CRLF = b"\r\n"


def _fits_lines(raw: bytes) -> bool:
    """Every line (between LFs) at most ``_MAX_LINE`` octets."""
    return len(raw) <= _MAX_LINE or max(map(len, raw.split(b"\n"))) <= _MAX_LINE


def _part(subtype: str, text: str, boundary: str | None = None) -> bytes:
    """Part headers + body. Like the standard library's content manager with ``cte_type="8bit"``:
    ``7bit``/``8bit`` when every line fits in 998 octets (line ends normalised to CRLF), else
    base64 (``email.base64mime``). Bare CR, NUL, overlong lines or the boundary go base64."""
    head = f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: '
    raw = text.encode("utf-8")
    if (
        b"\r" not in raw
        and b"\x00" not in raw
        and (boundary is None or boundary.encode("utf-8") not in raw)
        and _fits_lines(raw)
    ):
        cte = "7bit" if raw.isascii() else "8bit"
        return b"".join(((head + cte + CRLF + CRLF).encode("ascii"), raw.replace(b"\n", _B_CRLF), _B_CRLF))
    return (f"{head}base64{CRLF}{CRLF}" + (base64mime.body_encode(raw, maxlinelen=76, eol=CRLF) or CRLF)).encode(
        "ascii"
    )


def build_mime(parts: EmailParts, id_domain: str) -> bytes:
    """The full message as bytes with CRLF line endings. Bcc is never written (envelope only)."""
    lines = [
        address_header("From", [(parts.from_name or "", parts.from_address)]),
        address_header("To", [(parts.to_name or "", parts.to_address)]),
        unstructured_header("Subject", parts.subject),
        "Date: " + (parts.date or formatdate(usegmt=True)),
        f"Message-ID: <{clean_header_value(parts.message_id)}@{id_domain}>",
    ]
    if parts.reply_to:
        lines.append(address_header("Reply-To", parts.reply_to))
    if parts.cc:
        lines.append(address_header("Cc", parts.cc))
    if parts.list_unsubscribe:
        lines.append(f"List-Unsubscribe: <{clean_header_value(parts.list_unsubscribe)}>")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    lines.append("MIME-Version: 1.0")
    if parts.html is None:
        lines.append("")
        return (CRLF.join(lines)).encode("utf-8") + _part("plain", parts.text)
    boundary = "=_" + "".join(filter(str.isalnum, parts.message_id))
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    lines.append("")
    lines.append("")
    delimiter = f"--{boundary}{CRLF}".encode()
    return b"".join(
        (
            CRLF.join(lines).encode("utf-8"),
            delimiter,
            _part("plain", parts.text, boundary),
            delimiter,
            _part("html", parts.html, boundary),
            f"--{boundary}--{CRLF}".encode(),
        )
    )
