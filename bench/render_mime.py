"""Render + full MIME build per message vs rendering the same HTML with python-liquid alone.

Template: ~10 KB of HTML (multi-line, as editors and MJML produce it) with 10 links, a subject,
a text part generated from the HTML, link wrapping and the open pixel on, List-Unsubscribe
headers. One core, one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from liquid import Environment

from clarion.rendering.render import ProjectInfo, Recipient, RenderSettings, render_batch


@dataclass
class Row:
    id: int
    type: str
    locale: str
    data: dict[str, Any]
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    campaign_id: int = 1


def build_html() -> str:
    block = (
        '<tr>\n  <td style="padding:12px;font-family:Arial,sans-serif;font-size:14px;color:#333">\n'
        "    <h2>Item {n} for {{{{ user.first_name }}}}</h2>\n"
        "    <p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
        "labore et dolore magna aliqua.\n    Ut enim ad minim veniam, quis "
        "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Your tier: "
        "{{{{ user.tier }}}}.</p>\n"
        '    <a href="https://shop.example/items/{n}?utm_source=email&amp;u={{{{ user.external_id }}}}">'
        "View item {n}</a>\n"
        "  </td>\n</tr>\n"
    )
    body = "".join(block.format(n=n) for n in range(10))
    html = f"<html><head><title>News</title></head><body><table>{body}</table></body></html>"
    while len(html) < 10_000:
        html = html.replace("</table>", "<tr><td>" + "Filler text for the layout. " * 10 + "</td></tr>\n</table>", 1)
    return html


def main(n: int = 3000, rounds: int = 5) -> None:
    html = build_html()
    row = Row(
        1,
        "email",
        "en",
        {
            "from": {"name": "Shop News", "address": "news@shop.example"},
            "subject": "Hello {{ user.first_name }}, your weekly picks",
            "preheader": "Ten things for {{ user.first_name }}",
            "html": html,
        },
    )
    project = ProjectInfo(1, "Shop", "en", link_wrap_email=True, track_opens_email=True)
    settings = RenderSettings("https://clarion.example", "bench-secret")
    recipients = [
        Recipient(
            f"msg_{i:026d}",
            {
                "id": i,
                "external_id": f"u{i}",
                "email": f"user{i}@example.com",
                "locale": "en",
                "data": {"first_name": f"Ünïcode{i}", "tier": "gold"},
            },
        )
        for i in range(n)
    ]
    render_batch([row], project=project, settings=settings, recipients=recipients[:50])  # warm the cache

    template = Environment(autoescape=True).from_string(html)
    ours = baseline = 0.0
    size = 0
    for _ in range(rounds):  # alternate the two and keep each one's best round (a shared machine is noisy)
        start = time.perf_counter()
        out = render_batch([row], project=project, settings=settings, recipients=recipients)
        ours = max(ours, n / (time.perf_counter() - start))
        size = len(out[0].mime or b"")  # type: ignore[union-attr]
        start = time.perf_counter()
        for r in recipients:
            template.render(user={**r.user["data"], **r.user})
        baseline = max(baseline, n / (time.perf_counter() - start))

    print(f"HTML template: {len(html)} bytes, 10 links; MIME message: {size} bytes")
    print(f"render + MIME (tracking, text part, headers): {ours:,.0f} messages/s")
    print(f"python-liquid render of the HTML alone:        {baseline:,.0f} renders/s")
    print(f"ratio (full pipeline / liquid alone): {ours / baseline:.2f}")


if __name__ == "__main__":
    main()
