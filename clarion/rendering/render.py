"""The rendering entry points the send pipeline calls: template rows + one user → ``OutgoingMessage``.

:func:`render_message` renders one recipient; :func:`render_batch` renders many, picking each
user's locale variant and compiling every variant at most once (the compiled-template LRU also
carries compilations across batches). See ``docs/templates.md``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from liquid import Markup

from clarion.providers.base import OutgoingMessage
from clarion.rendering.compile import (
    COMPILED,
    CompiledCache,
    CompiledTemplate,
    TemplateRow,
    TrackingSwitches,
    render_value,
)
from clarion.rendering.liquid import MessageRender, Scope, user_root
from clarion.rendering.mime import AddressError, EmailParts, build_mime, parse_address_list
from clarion.templates.locale_pick import TemplateMissing, pick_template
from clarion.tracking.links import PIXEL_VAR, PREHEADER_VAR, wrap_marked_links
from clarion.tracking.tokens import TokenSigner
from clarion.tracking.urls import CLICK_PATH, OPEN_PATH, PREFERENCES_PATH, UNSUBSCRIBE_PATH, TrackingUrls


class RenderError(ValueError):
    """A message that cannot be rendered; ``reason`` is the failure reason recorded on it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ProjectInfo:
    """What rendering needs from the project: the ``project`` root, default locale, switches."""

    id: int
    name: str
    locale: str
    timezone: str = "UTC"
    link_wrap_email: bool = True
    track_opens_email: bool = True
    link_wrap_push: bool = False

    def root(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "locale": self.locale, "timezone": self.timezone}


@dataclass(frozen=True)
class RenderSettings:
    """Process-level inputs: the public base URL and the secret that signs tracking tokens."""

    base_url: str
    secret_key: str

    def urls(self, project_id: int) -> TrackingUrls:
        return TrackingUrls(self.base_url, _signer(self.secret_key), project_id)

    @property
    def id_domain(self) -> str:
        return urlsplit(self.base_url).hostname or "clarion.invalid"


_SIGNERS: dict[str, TokenSigner] = {}


def _signer(secret_key: str) -> TokenSigner:
    signer = _SIGNERS.get(secret_key)
    if signer is None:
        signer = _SIGNERS[secret_key] = TokenSigner(secret_key)
    return signer


@dataclass
class Recipient:
    """One message to render: its ``msg_`` id, the user (first-class fields + ``data``), the event."""

    message_id: str
    user: Mapping[str, Any]
    event: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RenderFailure:
    message_id: str
    reason: str  # template_missing | invalid_address | render_error
    detail: str


def _switches(channel: str, project: ProjectInfo, settings: RenderSettings) -> TrackingSwitches:
    if channel != "email":
        return TrackingSwitches()
    return TrackingSwitches(
        link_wrap=project.link_wrap_email,
        open_pixel=project.track_opens_email,
        # Our own click, open, unsubscribe and preference URLs are never wrapped.
        wrapped_prefix=tuple(
            settings.base_url.rstrip("/") + path for path in (CLICK_PATH, OPEN_PATH, UNSUBSCRIBE_PATH, PREFERENCES_PATH)
        ),
    )


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _render_email(
    compiled: CompiledTemplate,
    variables: dict[str, Any],
    recipient: Recipient,
    urls: TrackingUrls,
    unsubscribe_url: str,
    date: str | None,
    id_domain: str,
) -> OutgoingMessage:
    fields = compiled.fields
    message = MessageRender(variables)
    rendered: dict[str, Any] = {k: render_value(v, message) for k, v in fields.items()}
    sender = rendered.get("from") or {}
    from_address = _str(sender.get("address")).strip() if isinstance(sender, dict) else ""
    from_name = _str(sender.get("name")) if isinstance(sender, dict) else ""
    subject = _str(rendered.get("subject"))
    preheader = _str(rendered.get("preheader"))
    to_address = _str(recipient.user.get("email")).strip()
    html_body: str | None = None
    if compiled.html is not None:
        extra: dict[str, Any] = {}
        extra[PREHEADER_VAR] = (
            Markup(
                '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
                + html.escape(preheader)
                + "</div>"
            )
            if preheader
            else ""
        )
        extra[PIXEL_VAR] = (
            Markup(
                '<img src="' + html.escape(urls.open_pixel(recipient.message_id)) + '" width="1" height="1" alt="" '
                'style="display:block;width:1px;height:1px;border:0">'
            )
            if compiled.open_pixel
            else ""
        )
        message.set_extras(extra)
        html_body = message.render(compiled.html, extras=True)
        if compiled.links:
            message_id = recipient.message_id
            html_body = wrap_marked_links(html_body, lambda url: urls.click(message_id, url), compiled.wrapped_prefix)
    text = message.render(compiled.text) if compiled.text is not None else ""
    try:
        parts = EmailParts(
            message_id=recipient.message_id,
            from_name=from_name,
            from_address=from_address,
            to_address=to_address,
            to_name=None,
            subject=subject,
            text=text,
            html=html_body,
            reply_to=parse_address_list(rendered.get("reply_to")),
            cc=parse_address_list(rendered.get("cc")),
            list_unsubscribe=unsubscribe_url,
            date=date,
        )
        mime = build_mime(parts, id_domain)
    except AddressError as exc:
        raise RenderError("invalid_address", str(exc)) from exc
    content = {
        "from": {"name": from_name or None, "address": from_address},
        "to": to_address,
        "subject": subject,
        "preheader": preheader or None,
        "html": html_body,
        "text": text,
        "reply_to": rendered.get("reply_to") or None,
        "cc": rendered.get("cc") or None,
        "bcc": rendered.get("bcc") or None,
        "list_unsubscribe": unsubscribe_url,
    }
    return OutgoingMessage(recipient.message_id, "email", to_address, content, mime=mime, envelope_from=from_address)


_ADDRESS_FIELD = {"text": "phone", "push": "device_token"}


def _render_other(compiled: CompiledTemplate, variables: dict[str, Any], recipient: Recipient) -> OutgoingMessage:
    message = MessageRender(variables)
    content: dict[str, Any] = {k: render_value(v, message) for k, v in compiled.fields.items()}
    channel = compiled.channel
    if channel == "webhook":
        content["method"] = _str(compiled.data.get("method") or "POST").upper()
        if content["method"] in ("GET", "DELETE"):
            content["body"] = None
        to = _str(content.get("endpoint"))
    elif channel == "in_app":
        content["type"] = compiled.data.get("type")
        content["read_on_view"] = compiled.data.get("read_on_view")
        to = _str(recipient.user.get("external_id") or recipient.user.get("id"))
    else:
        to = _str(recipient.user.get(_ADDRESS_FIELD[channel]))
    return OutgoingMessage(recipient.message_id, channel, to, content)


class Renderer:
    """Renders messages of one campaign (its template rows) for one project."""

    def __init__(
        self,
        templates: Sequence[TemplateRow],
        *,
        project: ProjectInfo,
        settings: RenderSettings,
        classified: Iterable[str] = (),
        subscription_id: int | None = None,
        cache: CompiledCache = COMPILED,
    ) -> None:
        self.templates = list(templates)
        self.project = project
        self.settings = settings
        self.classified = tuple(classified)
        self.subscription_id = subscription_id
        self.cache = cache
        self.urls = settings.urls(project.id)
        self.id_domain = settings.id_domain
        self._compiled: dict[int, CompiledTemplate] = {}
        self._project_root = project.root()

    def compiled_for(self, user_locale: str | None) -> CompiledTemplate:
        row = pick_template(self.templates, user_locale, self.project.locale)
        hit = self._compiled.get(row.id)
        if hit is None:
            hit = self._compiled[row.id] = self.cache.get(row, _switches(row.type, self.project, self.settings))
        return hit

    def render(self, recipient: Recipient, *, date: str | None = None) -> OutgoingMessage:
        try:
            compiled = self.compiled_for(recipient.user.get("locale"))
        except TemplateMissing as exc:
            raise RenderError(TemplateMissing.reason, str(exc)) from exc
        user_id = recipient.user.get("id")
        unsubscribe_url = self.urls.unsubscribe(recipient.message_id, user_id, self.subscription_id)
        context = dict(recipient.context)
        context.update(
            {
                "campaign_id": context.get("campaign_id", compiled.campaign_id),
                "template_id": compiled.template_id,
                "message_id": recipient.message_id,
                "unsubscribe_url": unsubscribe_url,
                "preferences_url": self.urls.preferences(user_id),
            }
        )
        scope = Scope(user_root(recipient.user, self.classified), dict(recipient.event), self._project_root, context)
        variables = scope.as_globals()
        if compiled.channel == "email":
            return _render_email(compiled, variables, recipient, self.urls, unsubscribe_url, date, self.id_domain)
        return _render_other(compiled, variables, recipient)


def render_message(
    templates: Sequence[TemplateRow],
    *,
    project: ProjectInfo,
    settings: RenderSettings,
    recipient: Recipient,
    classified: Iterable[str] = (),
    subscription_id: int | None = None,
) -> OutgoingMessage:
    """One message. Raises :class:`RenderError` (``reason`` ``template_missing``, ``invalid_address``)."""
    renderer = Renderer(
        templates, project=project, settings=settings, classified=classified, subscription_id=subscription_id
    )
    return renderer.render(recipient)


def render_batch(
    templates: Sequence[TemplateRow],
    *,
    project: ProjectInfo,
    settings: RenderSettings,
    recipients: Iterable[Recipient],
    classified: Iterable[str] = (),
    subscription_id: int | None = None,
) -> list[OutgoingMessage | RenderFailure]:
    """Many messages, in order; each variant is compiled once. Failures are returned, not raised."""
    renderer = Renderer(
        templates, project=project, settings=settings, classified=classified, subscription_id=subscription_id
    )
    date = formatdate(usegmt=True)
    out: list[OutgoingMessage | RenderFailure] = []
    for recipient in recipients:
        try:
            out.append(renderer.render(recipient, date=date))
        except RenderError as exc:
            out.append(RenderFailure(recipient.message_id, exc.reason, exc.detail))
    return out
