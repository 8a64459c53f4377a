"""`GET /campaigns/{id}/preview`: the campaign's primary template rendered for a stand-in user.

The primary template is the one a user without a locale would get (the project's default
locale, then its language level: :func:`clarion.templates.locale_pick.pick_template`), of the
campaign's channel. It is rendered by the same code as every send, for a representative user:
every first-class field filled with a placeholder value, no custom attributes, no event — so
anything the template takes from ``user.data`` or ``event`` renders blank, as it would for a
user who lacks it. Nothing is stored and no tracking is recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign
from clarion.campaigns.service import campaign_templates
from clarion.rendering.render import Recipient, RenderError, RenderSettings, render_message
from clarion.templates.locale_pick import TemplateMissing, pick_template
from clarion.templates.service import classified_user_paths, project_info

PREVIEW_MESSAGE_ID = "msg_preview"


def representative_user(timezone: str) -> dict[str, Any]:
    """A stand-in recipient with an address on every channel and no locale (so the default)."""
    return {
        "id": 0,
        "external_id": "preview-user",
        "anonymous_id": None,
        "email": "preview@example.com",
        "phone": "+15555550100",
        "device_token": "preview-device-token",
        "timezone": timezone,
        "locale": None,
        "data": {},
    }


async def preview_campaign(session: AsyncSession, campaign: Campaign, settings: RenderSettings) -> dict[str, Any]:
    """The rendered fields of the primary template plus ``template_id`` and ``locale`` (which
    variant was used). Raises :class:`clarion.rendering.render.RenderError` (``template_missing``
    when no template serves the default locale)."""
    templates = await campaign_templates(session, campaign, channel=campaign.channel)
    project = await project_info(session, campaign.project_id)
    try:
        template = pick_template(templates, None, project.locale)
    except TemplateMissing as exc:
        raise RenderError(TemplateMissing.reason, str(exc)) from exc
    message = render_message(
        [template],
        project=project,
        settings=settings,
        recipient=Recipient(PREVIEW_MESSAGE_ID, representative_user(project.timezone)),
        classified=await classified_user_paths(session),
        subscription_id=campaign.subscription_id,
    )
    return {**message.content, "template_id": template.id, "locale": template.locale}
