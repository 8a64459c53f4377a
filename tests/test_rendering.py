"""Rendering, locale pick, link rewriting, tokens and the MIME builder (no database)."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.rendering.compile import CompiledCache, TrackingSwitches
from clarion.rendering.liquid import TemplateSyntaxError, compile_source
from clarion.rendering.mime import EmailParts, build_mime
from clarion.rendering.render import (
    ProjectInfo,
    Recipient,
    RenderError,
    RenderFailure,
    RenderSettings,
    render_batch,
    render_message,
)
from clarion.templates.locale_pick import TemplateMissing, pick_template
from clarion.tracking.links import instrument_html
from clarion.tracking.tokens import TokenSigner

BASE = "https://clarion.example"
SETTINGS = RenderSettings(BASE, "unit-secret")
PROJECT = ProjectInfo(7, "Shop", "en")


@dataclass
class Row:
    id: int
    type: str
    locale: str
    data: dict[str, Any]
    updated_at: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    campaign_id: int = 3


USER = {
    "id": 11,
    "external_id": "u-1",
    "email": "ann@example.com",
    "phone": "+61400000000",
    "locale": "en",
    "device_token": "tok",
    "data": {"first_name": "Ann", "tier": "gold", "secret": {"ssn": "123"}},
}


def one(row: Row, user: dict[str, Any] | None = None, project: ProjectInfo = PROJECT, **kw: Any) -> Any:
    return render_message(
        [row],
        project=project,
        settings=SETTINGS,
        recipient=Recipient("msg_01TEST", user or USER, kw.pop("event", {}), {}),
        **kw,
    )


# --- golden renders per channel -------------------------------------------------------------


def test_golden_text_push_webhook_in_app() -> None:
    text = one(Row(1, "text", "en", {"text": "Hi {{ user.first_name }} <b> {{ user.data.tier }} {{ nope.x }}!"}))
    assert text.content == {"text": "Hi Ann <b> gold !"} and text.to == "+61400000000"
    push = one(
        Row(
            2,
            "push",
            "en",
            {
                "title": "{{ event.item | upcase }}",
                "body": "for {{ user.email }}",
                "url": "app://o/{{ event.id }}",
                "custom": {"k": "{{ project.name }}"},
            },
        ),
        event={"item": "shoes", "id": 9},
    )
    assert push.content == {
        "title": "SHOES",
        "body": "for ann@example.com",
        "url": "app://o/9",
        "custom": {"k": "Shop"},
    }
    hook = one(
        Row(
            3,
            "webhook",
            "en",
            {
                "method": "get",
                "endpoint": "https://h.example/{{ user.external_id }}",
                "headers": {"X-T": "{{ user.tier }}"},
                "body": {"a": "{{ user.id }}"},
            },
        )
    )
    assert hook.content["method"] == "GET" and hook.content["body"] is None
    assert hook.to == "https://h.example/u-1" and hook.content["headers"] == {"X-T": "gold"}
    app = one(
        Row(
            4,
            "in_app",
            "en",
            {
                "type": "banner",
                "title": "T {{ user.first_name }}",
                "body": "b",
                "html": "<p>{{ user.tier }}<script>x</script></p>",
            },
        ),
        user={**USER, "data": {"tier": "<script>alert(1)</script>"}},
    )
    assert app.content["html"] == "<p>&lt;script&gt;alert(1)&lt;/script&gt;<script>x</script></p>"


def test_golden_email() -> None:
    row = Row(
        5,
        "email",
        "en",
        {
            "from": {"name": "Shop {{ project.name }}", "address": "news@shop.example"},
            "subject": "Hello {{ user.first_name }} & <friends>",
            "preheader": "Sale {{ user.tier }}",
            "reply_to": "Help <help@shop.example>",
            "cc": "a@x.example, B <b@x.example>",
            "bcc": "audit@x.example",
            "html": '<html><body><p>Hi {{ user.first_name }}</p><a href="https://shop.example/?a=1&amp;b=2">go</a></body></html>',
        },
    )
    m = one(row)
    c = m.content
    assert c["subject"] == "Hello Ann & <friends>"  # not escaped
    assert c["from"] == {"name": "Shop Shop", "address": "news@shop.example"}
    assert c["html"].startswith('<html><body><div style="display:none')
    assert "Sale gold</div><p>Hi Ann</p>" in c["html"]
    assert f'<img src="{BASE}/t/o/' in c["html"] and c["html"].endswith("></body></html>")
    assert "Hi Ann" in c["text"] and "https://shop.example/?a=1&b=2" in c["text"]
    parsed = email.message_from_bytes(m.mime, policy=email.policy.default)
    assert parsed["Subject"] == "Hello Ann & <friends>"
    assert parsed["Reply-To"] == "Help <help@shop.example>"
    assert parsed["Cc"] == "a@x.example, B <b@x.example>"
    assert parsed["Bcc"] is None and c["bcc"] == "audit@x.example"
    assert parsed["Message-ID"] == "<msg_01TEST@clarion.example>"
    assert parsed.get_content_type() == "multipart/alternative"


def test_plain_editor_has_no_html_and_no_pixel() -> None:
    m = one(
        Row(
            6,
            "email",
            "en",
            {
                "editor": "plain",
                "from": {"address": "a@b.example"},
                "subject": "s",
                "text": "Hi {{ user.first_name }} <b>",
                "html": "<p>ignored</p>",
            },
        )
    )
    assert m.content["html"] is None and m.content["text"] == "Hi Ann <b>"
    parsed = email.message_from_bytes(m.mime, policy=email.policy.default)
    assert parsed.get_content_type() == "text/plain" and "/t/o/" not in m.mime.decode()
    assert parsed.get_content().replace("\r\n", "\n").rstrip("\n") == "Hi Ann <b>"


def test_html_escaping_and_classified_attributes() -> None:
    row = Row(
        7,
        "email",
        "en",
        {
            "from": {"address": "a@b.example"},
            "subject": "{{ user.first_name }}",
            "html": "<p>{{ user.first_name }}|{{ user.secret.ssn }}|{{ user.data.secret.ssn }}</p>",
            "text": "{{ user.secret.ssn }}-{{ user.data.tier }}",
        },
    )
    user = {**USER, "data": {"first_name": "<script>alert(1)</script>", "tier": "t", "secret": {"ssn": "123"}}}
    m = one(row, user=user, classified={"$.secret.ssn"})
    assert "<script>" not in m.content["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;||" in m.content["html"]
    assert m.content["subject"] == "<script>alert(1)</script>"
    assert m.content["text"] == "-t"
    assert "123" not in m.mime.decode()  # base64 bodies: check decoded too
    parsed = email.message_from_bytes(m.mime, policy=email.policy.default)
    assert "123" not in parsed.get_body(("html",)).get_content()
    unclassified = one(row, user=user)
    assert "|123|123" in unclassified.content["html"]


def test_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(TemplateSyntaxError) as err:
        compile_source("data.html", "line one\n  {{ user.name | }", html_field=True)
    assert err.value.line == 2 and err.value.column == 3


def test_compiles_once_per_template_and_updated_at() -> None:
    cache = CompiledCache(maxsize=2)
    row = Row(8, "text", "en", {"text": "{{ user.id }}"})
    cache.get(row, TrackingSwitches())
    cache.get(row, TrackingSwitches())
    assert cache.compilations == 1
    row.updated_at = datetime(2026, 2, 1, tzinfo=UTC)
    cache.get(row, TrackingSwitches())
    assert cache.compilations == 2
    for i in range(3):
        cache.get(Row(100 + i, "text", "en", {"text": "x"}), TrackingSwitches())
    assert len(cache._items) == 2


# --- locale pick (the table in docs/templates.md) --------------------------------------------


@pytest.mark.parametrize(
    ("available", "user_locale", "default", "expected"),
    [
        (["en", "fr"], "fr", "en", "fr"),  # exact
        (["en", "en-AU"], "en-AU", "en", "en-AU"),  # regional beats language when both exist
        (["en", "en-AU"], "en-GB", "en", "en"),  # other region → language level
        (["en"], "en-AU", "fr", "en"),  # only language level exists
        (["en-AU", "de"], "en", "de", "de"),  # language user does not take a regional variant
        (["en", "fr"], "es", "en", "en"),  # project default
        (["en", "fr"], None, "fr", "fr"),  # no user locale → default
        (["en-AU", "fr"], "es", "en-AU", "en-AU"),
        (["de"], "fr", "en", None),  # missing
    ],
)
def test_locale_pick(available: list[str], user_locale: str | None, default: str, expected: str | None) -> None:
    rows = [Row(i, "text", loc, {}) for i, loc in enumerate(available)]
    if expected is None:
        with pytest.raises(TemplateMissing):
            pick_template(rows, user_locale, default)
    else:
        assert pick_template(rows, user_locale, default).locale == expected


def test_missing_locale_fails_with_template_missing() -> None:
    with pytest.raises(RenderError) as err:
        one(Row(9, "text", "de", {"text": "x"}), user={**USER, "locale": "fr"})
    assert err.value.reason == "template_missing"
    out = render_batch(
        [Row(9, "text", "de", {"text": "x"})],
        project=PROJECT,
        settings=SETTINGS,
        recipients=[Recipient("msg_a", {**USER, "locale": "fr"})],
    )
    assert isinstance(out[0], RenderFailure) and out[0].reason == "template_missing"


# --- link rewriting -------------------------------------------------------------------------


def rendered_html(html: str, wrap: bool = True) -> str:
    project = ProjectInfo(7, "Shop", "en", link_wrap_email=wrap, track_opens_email=False)
    return str(
        one(
            Row(20 + len(html) + wrap, "email", "en", {"from": {"address": "a@b.example"}, "html": html}),
            project=project,
        ).content["html"]
    )


def test_link_rewriting_edge_cases() -> None:
    wrapped_already = f"{BASE}/t/c/abc.def"
    html = (
        '<a href="https://x.example/p?a=1&amp;b={{ user.tier }}">1</a>'
        '<a href="mailto:x@y.example">2</a><a href="tel:+61400">3</a><a href="#top">4</a>'
        '<a href="/relative/path">5</a><a href="page.html">6</a>'
        f'<a href="{wrapped_already}">7</a>'
        '<img src="https://img.example/i.png"><link href="https://css.example/s.css">'
        '<a data-href="https://data.example" title="https://title.example" href=\'HTTP://UP.example\'>8</a>'
        '<map><area href="https://area.example" alt="a"></map>'
        '<a href="{{ event.url }}">9</a>'
        '<a href="{{ context.unsubscribe_url }}">unsub</a><a href="{{ context.preferences_url }}">prefs</a>'
    )
    out = rendered_html(html)
    signer = TokenSigner("unit-secret")
    for kept in (
        'href="mailto:x@y.example"',
        'href="tel:+61400"',
        'href="#top"',
        'href="/relative/path"',
        'href="page.html"',
        f'href="{wrapped_already}"',
        'src="https://img.example/i.png"',
        '<link href="https://css.example/s.css">',
        'data-href="https://data.example"',
        'title="https://title.example"',
    ):
        assert kept in out, kept
    tokens = re.findall(re.escape(BASE) + r"/t/c/([A-Za-z0-9_\-.]+)", out)
    targets = [signer.verify("c", t)["u"] for t in tokens if t != "abc.def"]  # type: ignore[index]
    assert targets == ["https://x.example/p?a=1&b=gold", "HTTP://UP.example", "https://area.example"]
    assert "https://x.example/p" not in out and "https://area.example" not in out
    assert f'href="{BASE}/u/' in out and f'href="{BASE}/p/' in out  # own pages are never wrapped


def test_no_wrapping_when_switched_off() -> None:
    out = rendered_html('<a href="https://x.example/">x</a>', wrap=False)
    assert '<a href="https://x.example/">x</a>' in out


def test_instrument_counts_links() -> None:
    result = instrument_html(
        '<a href="https://a">a</a><a href="#b">b</a>',
        wrap_links=True,
        wrapped_prefix=None,
        preheader=False,
        pixel=False,
    )
    assert result.links == 1


# --- tokens ---------------------------------------------------------------------------------


def test_token_tampering() -> None:
    signer = TokenSigner("s1")
    token = signer.sign("c", {"p": 1, "m": "msg_x", "u": "https://a.example"})
    assert signer.verify("c", token) == {"k": "c", "p": 1, "m": "msg_x", "u": "https://a.example"}
    head, sig = token.split(".")
    assert signer.verify("o", token) is None  # wrong kind
    assert TokenSigner("s2").verify("c", token) is None  # other secret
    assert signer.verify("c", head + "." + sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")) is None
    other = signer.sign("c", {"p": 1, "m": "msg_x", "u": "https://evil.example"}).split(".")[0]
    assert signer.verify("c", other + "." + sig) is None
    for junk in ("", ".", "abc", "abc.", ".abc", "!!!.???", head):
        assert signer.verify("c", junk) is None


# --- MIME -----------------------------------------------------------------------------------


def stdlib_reference(p: EmailParts) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = Address(display_name=p.from_name or "", addr_spec=p.from_address)
    msg["To"] = p.to_address
    msg["Subject"] = p.subject
    msg["Message-ID"] = f"<{p.message_id}@clarion.example>"
    if p.list_unsubscribe:
        msg["List-Unsubscribe"] = f"<{p.list_unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(p.text)
    if p.html is not None:
        msg.add_alternative(p.html, subtype="html")
    return msg


CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=header_text, subject=header_text, text=st.text(max_size=300), html=st.text(max_size=300))
def test_mime_matches_stdlib_builder(name: str, subject: str, text: str, html: str) -> None:
    parts = EmailParts(
        message_id="msg_01HYP",
        from_name=name,
        from_address="from@shop.example",
        to_address="to@x.example",
        subject=subject,
        text=text,
        html=html,
        list_unsubscribe=f"{BASE}/u/tok.sig",
    )
    raw = build_mime(parts, "clarion.example")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # only CRLF line endings
    ours = email.message_from_bytes(raw, policy=email.policy.default)
    clean = lambda v: " ".join(CONTROL.sub(" ", v).split())  # noqa: E731
    # No header injection: exactly the headers we wrote, once each.
    assert sorted(ours.keys()) == sorted(
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "MIME-Version",
            "Content-Type",
        ]
    )
    assert " ".join(str(ours["Subject"]).split()) == clean(subject)
    assert ours["From"].addresses[0].addr_spec == "from@shop.example"
    assert " ".join(ours["From"].addresses[0].display_name.split()) == " ".join(
        CONTROL.sub(" ", name).strip()[:200].split()
    )
    assert ours["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    norm = lambda v: v.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")  # noqa: E731
    assert norm(ours.get_body(("plain",)).get_content()) == norm(text)
    assert norm(ours.get_body(("html",)).get_content()) == norm(html)
    reference = email.message_from_bytes(
        stdlib_reference(
            EmailParts(
                **{**parts.__dict__, "subject": clean(subject), "from_name": CONTROL.sub(" ", name).strip()[:200]}
            )
        ).as_bytes(policy=email.policy.SMTP),
        policy=email.policy.default,
    )
    # The stdlib folder may add whitespace at fold points, so compare without whitespace.
    squash = lambda v: "".join(str(v).split())  # noqa: E731
    assert squash(reference["Subject"]) == squash(ours["Subject"])
    assert squash(reference["From"].addresses[0].display_name) == squash(ours["From"].addresses[0].display_name)
    for kind in ("plain", "html"):
        assert norm(reference.get_body((kind,)).get_content()) == norm(ours.get_body((kind,)).get_content())


def test_rfc8058_headers_on_every_email() -> None:
    m = one(
        Row(30, "email", "en", {"from": {"address": "a@b.example"}, "subject": "s", "html": "<p>x</p>"}),
        subscription_id=4,
    )
    parsed = email.message_from_bytes(m.mime, policy=email.policy.default)
    value = str(parsed["List-Unsubscribe"])
    assert value.startswith(f"<{BASE}/u/") and value.endswith(">")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    payload = TokenSigner("unit-secret").verify("u", value[1:-1].rsplit("/", 1)[1])
    assert payload == {"k": "u", "p": 7, "m": "msg_01TEST", "u": 11, "s": 4}


def test_header_injection_impossible() -> None:
    row = Row(
        31,
        "email",
        "en",
        {"from": {"name": "{{ user.n }}", "address": "a@b.example"}, "subject": "{{ user.n }}", "text": "t"},
    )
    m = one(row, user={**USER, "data": {"n": "x\r\nBcc: evil@x.example\r\nX-Evil: 1"}})
    parsed = email.message_from_bytes(m.mime, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert b"\r\nBcc:" not in m.mime and b"\r\nX-Evil" not in m.mime


def test_mime_falls_back_to_base64_when_lines_do_not_fit() -> None:
    long_line = "é" * 600  # 1,200 octets on one line
    parts = EmailParts(
        message_id="msg_01B",
        from_name="",
        from_address="a@b.example",
        to_address="c@d.example",
        subject="s",
        text="see --=_msg01B inside\nok",
        html=f"<p>{long_line}</p>",
    )
    raw = build_mime(parts, "h.example")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain["Content-Transfer-Encoding"] == "base64" and html["Content-Transfer-Encoding"] == "base64"
    assert plain.get_content() == "see --=_msg01B inside\nok" and html.get_content() == f"<p>{long_line}</p>"
    short = build_mime(
        EmailParts(
            message_id="msg_01C",
            from_name="",
            from_address="a@b.example",
            to_address="c@d.example",
            subject="s",
            text="plain ascii\n",
            html="<p>é</p>",
        ),
        "h.example",
    )
    parsed = email.message_from_bytes(short, policy=email.policy.default)
    assert parsed.get_body(("plain",))["Content-Transfer-Encoding"] == "7bit"
    assert parsed.get_body(("html",))["Content-Transfer-Encoding"] == "8bit"
    assert parsed.get_body(("html",)).get_content().rstrip("\r\n") == "<p>é</p>"
