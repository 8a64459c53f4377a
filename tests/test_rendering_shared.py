"""One message's renders sharing output evaluations (``MessageRender``) equal python-liquid's own.

The property: whatever mix of templates (HTML/auto-escaping and text environments, with and
without the render-only extras, with and without tags) one message renders, each result — or
the error raised — is what ``BoundTemplate.render`` gives for the same variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from liquid import Markup

from clarion.rendering.compile import CompiledCache, CompiledTemplate, TemplateRow, TrackingSwitches
from clarion.rendering.liquid import LiquidTemplate, MessageRender, compile_source, flat_plan
from clarion.rendering.render import ProjectInfo, Recipient, Renderer, RenderSettings

VARIABLES: dict[str, Any] = {
    "user": {
        "id": 11,
        "first_name": "Ann <b> & \"co\" 'x'",
        "bio": "line one\nline <two>",
        "tags": ["a<b", "c&d"],
        "n": 7,
        "flag": True,
        "none": None,
        "nested": {"deep": {"x": "é<"}},
        "size": "own size key",
        "data": {"first_name": "Ann <b>"},
    },
    "event": {"items": [{"name": "pen"}, {"name": "ink"}]},
    "project": {"id": 1, "name": "Shop & Co"},
    "context": {"message_id": "msg_1", "unsubscribe_url": "https://c.example/u/x?a=1&b=2"},
}
EXTRAS = {
    "__clarion_preheader": Markup('<div style="display:none">pre &amp; header</div>'),
    "__clarion_pixel": Markup('<img src="https://c.example/t/o/tok" alt="">'),
}

PIECES = [
    "Hi ",
    "<p>",
    " & ",
    "Ünïcode\n",
    "{{ user.first_name }}",
    "{{ user.data.first_name }}",
    "{{ user['first_name'] }}",
    "{{ user.nested.deep.x }}",
    "{{ user.tags }}",
    "{{ user.tags[1] }}",
    "{{ user.tags.first }}",
    "{{ user.tags.size }}",
    "{{ user.size }}",
    "{{ user.n }}",
    "{{ user.flag }}",
    "{{ user.none }}",
    "{{ user.missing.x }}",
    "{{ nope }}",
    "{{ first_name }}",
    "{{ partial }}",
    "{{ event.items[0].name }}",
    "{{ event.items }}",
    "{{ project.name }}",
    "{{ context.unsubscribe_url }}",
    "{{ 'lit<' }}",
    "{{ 42 }}",
    "{{- user.first_name -}}",
    "{{ user.first_name | upcase }}",
    "{{ user.first_name | append: '<i>' }}",
    "{{ user.bio | newline_to_br }}",
    "{{ user.bio | escape }}",
    "{{ user.tags | join: ' <> ' }}",
    "{{ user.n | plus: 1 }}",
    "{{ user.missing | default: 'there<' }}",
    "{{ user[user.flag] }}",
    "{{ __clarion_preheader }}",
    "{{ __clarion_pixel }}",
    "{{ __clarion_pixel | size }}",
    "{{ user.n | divided_by: 0 }}",  # raises
    "{% if user.flag %}yes {{ user.first_name }}{% endif %}",
    "{% assign first_name = 'Zed' %}",
    "{% capture user %}shadowed{% endcapture %}",
    "{% for item in event.items %}{{ item.name }}{% endfor %}",
    "{% raw %}{{ user.first_name }}{% endraw %}",
    "{% comment %}no{% endcomment %}",
    "{# inline #}",
    "{% unless user.flag %}u{% else %}{{ user.tags }}{% endunless %}",
    "{% case user.n %}{% when 7 %}seven {{ user.first_name | upcase }}{% else %}other{% endcase %}",
    "{% case user.first_name %}{% when 'x' %}x{% endcase %}",
    "{% if user.flag %}{% assign first_name = 'Inner' %}{% endif %}",
    "{% if __clarion_pixel %}px {{ __clarion_pixel }}{% elsif user.flag %}flag{% endif %}",
    "{% if user.flag %}   {% endif %}",
    "{% if user.n > 3 %}{{ user.n | divided_by: 0 }}{% endif %}",
    "{% if partial %}p{% else %}{{ partial }}{% endif %}",
    "{% increment counter %}",
    "{% cycle 'a', 'b' %}",
]

templates = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
renders = st.lists(st.tuples(templates, st.booleans(), st.booleans()), min_size=1, max_size=5)


def _expected(template: LiquidTemplate, extras: bool) -> tuple[str, Any]:
    variables = {**VARIABLES, **EXTRAS} if extras else VARIABLES
    try:
        return "ok", template.bound.render(**variables)
    except Exception as exc:  # compared with what MessageRender raises
        return "error", type(exc)


@settings(max_examples=400, deadline=None)
@given(renders)
def test_shared_renders_equal_the_library(sequence: list[tuple[str, bool, bool]]) -> None:
    message = MessageRender(VARIABLES, EXTRAS)
    for source, html_field, extras in sequence:
        template = compile_source("f", source, html_field=html_field)
        for with_extras in (extras, not extras, extras):  # the same template again, the other scope
            try:
                got: tuple[str, Any] = ("ok", message.render(template, extras=with_extras))
            except Exception as exc:
                got = ("error", type(exc))
            assert got == _expected(template, with_extras), (source, html_field, with_extras)


def test_flat_plan_only_for_tag_free_templates() -> None:
    plan = flat_plan(compile_source("f", "a {{ x }} b {{ y | upcase }} c", html_field=True).bound)
    assert plan is not None and plan.chunks == ("a ", " b ", " c") and len(plan.slots) == 2
    assert flat_plan(compile_source("f", "no outputs", html_field=False).bound) == plan.__class__(("no outputs",), ())
    for source in (
        "{% assign a = 1 %}{{ a }}",
        "{% for i in (1..2) %}{{ i }}{% endfor %}",
        "{% if x %}{% assign a = 1 %}{% endif %}",  # at any depth
        "{% unless x %}{% capture a %}b{% endcapture %}{% endunless %}",
        "{% case x %}{% when 1 %}{% increment n %}{% endcase %}",
        "{% cycle 'a', 'b' %}",
    ):
        assert compile_source("f", source, html_field=True).plan is None, source
    # Blocks that only evaluate expressions are rendered by their own node, in the plan.
    blocks = flat_plan(
        compile_source(
            "f", "a{% if x %}{{ y }}{% else %}z{% endif %}b{% comment %}c{% endcomment %}", html_field=True
        ).bound
    )
    assert blocks is not None and blocks.chunks == ("a", "b", "")
    assert [slot.node is not None for slot in blocks.slots] == [True, True]
    raw = compile_source("f", "{% raw %}{{ x }}{% endraw %}", html_field=True).plan  # raw text is content
    assert raw is not None and raw.chunks == ("{{ x }}",) and not raw.slots


def test_plain_paths_are_looked_up_once_per_message() -> None:
    class Counting(dict[str, Any]):
        lookups = 0

        def __getitem__(self, key: str) -> Any:
            Counting.lookups += 1
            return super().__getitem__(key)

    variables = {"user": Counting(first_name="Ann <b>")}
    message = MessageRender(variables)
    html = compile_source("h", "<p>{{ user.first_name }} {{ user.first_name }}</p>", html_field=True)
    text = compile_source("t", "{{ user.first_name }}/{{ user.first_name }}", html_field=False)
    assert message.render(html) == "<p>Ann &lt;b&gt; Ann &lt;b&gt;</p>"
    assert message.render(text) == "Ann <b>/Ann <b>"
    assert Counting.lookups == 1
    with_filter = compile_source("t", "{{ user.first_name | upcase }}", html_field=False)
    assert message.render(with_filter) == "ANN <B>" and Counting.lookups == 2


def test_extras_are_seen_only_by_renders_that_ask() -> None:
    message = MessageRender(VARIABLES)
    message.set_extras(EXTRAS)
    source = "[{{ __clarion_pixel }}]"
    assert message.render(compile_source("t", source, html_field=False)) == "[]"
    assert message.render(compile_source("h", source, html_field=True), extras=True) == f"[{EXTRAS['__clarion_pixel']}]"
    message.set_extras({"__clarion_pixel": "<new>"})
    assert message.render(compile_source("h", source, html_field=True), extras=True) == "[&lt;new&gt;]"


# --- the whole email: the shared path gives the same bytes as the library rendering each template


@dataclass
class Row:
    id: int
    type: str
    locale: str
    data: dict[str, Any]
    updated_at: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    campaign_id: int = 3


def _without_plans(value: Any) -> Any:
    if isinstance(value, LiquidTemplate):
        return LiquidTemplate(value.bound, None)
    if isinstance(value, dict):
        return {k: _without_plans(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_plans(v) for v in value]
    return value


class LibraryOnlyCache(CompiledCache):
    """Compiles as usual, then drops every flat plan: every template renders through the library."""

    def get(self, row: TemplateRow, switches: TrackingSwitches) -> CompiledTemplate:
        compiled = super().get(row, switches)
        return replace(
            compiled,
            fields=_without_plans(compiled.fields),
            html=_without_plans(compiled.html),
            text=_without_plans(compiled.text),
        )


HTML = (
    "<html><head><title>{{ project.name }}</title></head><body>\n"
    "<h1>Hi {{ user.first_name }} &amp; {{ user.data.first_name | upcase }}</h1>\n"
    '<a href="https://shop.example/p?u={{ user.external_id }}&amp;t={{ user.tier }}">see {{ user.tier }}</a>\n'
    '<a href="{{ context.preferences_url }}">prefs</a> <a href="mailto:x@y.example">mail</a>\n'
    '<a href="{{ context.unsubscribe_url }}">unsubscribe</a> {{ __clarion_pixel }}\n'
    "</body></html>"
)


@pytest.mark.parametrize(
    "data",
    [
        {
            "subject": "Hi {{ user.first_name }} — {{ user.tier }}",
            "preheader": "For {{ user.first_name }}",
            "html": HTML,
        },
        {"subject": "Hi", "html": HTML, "text": "Text {{ user.first_name }} {{ user.tier | upcase }}"},
        {
            "subject": "{% if user.tier %}VIP {% endif %}{{ user.first_name }}",
            "html": HTML.replace("<h1>", "{% if 1 %}<h1>{% endif %}"),
        },
    ],
)
def test_email_bytes_equal_the_library_only_render(data: dict[str, Any]) -> None:
    row = Row(41, "email", "en", {"from": {"name": "{{ project.name }}", "address": "news@shop.example"}, **data})
    project = ProjectInfo(7, "Shop <&>", "en")
    settings_ = RenderSettings("https://clarion.example", "unit-secret")
    user = {
        "id": 5,
        "external_id": "u&5",
        "email": "ann@example.com",
        "locale": "en",
        "data": {"first_name": "Ännie <b>", "tier": "gold & co"},
    }
    recipient = Recipient("msg_01SHARED", user)
    shared = Renderer([row], project=project, settings=settings_, cache=CompiledCache()).render(recipient, date="D")
    library = Renderer([row], project=project, settings=settings_, cache=LibraryOnlyCache()).render(recipient, date="D")
    assert shared.mime == library.mime and shared.content == library.content
    assert "Ännie &lt;b&gt;" in shared.content["html"] and "/t/c/" in shared.content["html"]


def test_cached_outputs_never_leak_between_templates_that_reuse_an_id() -> None:
    """Templates compiled and dropped during one message must not see each other's outputs,
    even when Python reuses a freed object's id for a new one."""
    import gc

    from clarion.rendering.liquid import MessageRender, compile_source

    render = MessageRender({"user": {"name": "Ada"}})
    for i in range(60):
        template = compile_source("data.text", "{{ 'lit" + str(i) + "' }}{{ user.name | upcase }}", html_field=False)
        assert render.render(template) == f"lit{i}ADA"
        del template
        gc.collect()
