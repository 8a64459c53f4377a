"""Campaign lifecycle: create, read, edit, state transitions, archive-then-delete, duplicate."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.auth import project_role_at_least
from clarion.api.errors import ApiError, ErrorCode, FieldError, field_error, not_found, validation_failed
from clarion.campaigns.counters import forget_campaign, pending_counts
from clarion.campaigns.models import Campaign
from clarion.campaigns.schemas import CampaignCreate, CampaignOut, campaign_out
from clarion.core.clock import utcnow
from clarion.delivery.abort import abort_messages
from clarion.delivery.models import Trigger
from clarion.orgs.models import Project
from clarion.providers.models import Provider
from clarion.subscriptions.models import Subscription
from clarion.tags.service import set_resource_tags, tags_for
from clarion.templates.locale_pick import TemplateMissing, pick_template
from clarion.templates.models import Template

TAG_RESOURCE = "campaign"

# States a caller may move a campaign to, from each state. loading/running/finished/aborting
# are entered by the system only.
USER_TRANSITIONS: dict[str, set[str]] = {
    "draft": {"scheduled"},
    "scheduled": {"draft", "aborted"},
    "loading": {"aborted"},
    "running": {"aborted"},
    "finished": set(),
    "aborting": set(),
    "aborted": set(),
}
# States whose audience/provider/subscription may still be edited.
EDITABLE_STATES = {"draft", "scheduled"}
# States in which POST /trigger is refused (§E1); archived campaigns are refused too.
UNTRIGGERABLE_STATES = {"draft", "aborting", "aborted"}
# Messages not yet handed to a provider; an abort stops them.
UNSENT_MESSAGE_STATES = ("queued", "throttled")


async def _subscription(session: AsyncSession, subscription_id: int) -> Subscription:
    row = (await session.execute(select(Subscription).where(Subscription.id == subscription_id))).scalar_one_or_none()
    if row is None:
        raise field_error("subscription_id", "No such subscription in this project.")
    return row


async def _provider(session: AsyncSession, provider_id: int) -> Provider:
    row = (
        await session.execute(select(Provider).where(Provider.id == provider_id, Provider.deleted_at.is_(None)))
    ).scalar_one_or_none()
    if row is None:
        raise field_error("provider_id", "No such provider in this project.")
    return row


def _check_channel(channel: str, subscription: Subscription, provider: Provider) -> None:
    errors = []
    if subscription.channel != channel:
        errors.append(
            FieldError(
                param="subscription_id",
                code=ErrorCode.parameter_invalid_format,
                message=f"The subscription is for {subscription.channel}, the campaign is {channel}.",
            )
        )
    if provider.group != channel:
        errors.append(
            FieldError(
                param="provider_id",
                code=ErrorCode.parameter_invalid_format,
                message=f"The provider sends {provider.group}, the campaign is {channel}.",
            )
        )
    if errors:
        raise validation_failed(errors)


async def create_campaign(session: AsyncSession, body: CampaignCreate) -> Campaign:
    subscription = await _subscription(session, body.subscription_id)
    provider = await _provider(session, body.provider_id)
    channel = body.channel or subscription.channel
    _check_channel(channel, subscription, provider)
    campaign = Campaign(
        type=body.type,
        name=body.name,
        channel=channel,
        subscription_id=subscription.id,
        provider_id=provider.id,
        list_ids=_dedupe(body.list_ids),
        exclusion_list_ids=_dedupe(body.exclusion_list_ids),
        state="draft",
        send_in_user_timezone=body.send_in_user_timezone,
        send_at=body.send_at,
        custom_domain_id=body.custom_domain_id,
        description=body.description,
    )
    session.add(campaign)
    await session.flush()
    if body.tags is not None:
        await set_resource_tags(session, TAG_RESOURCE, campaign.id, body.tags)
    return campaign


def _dedupe(ids: list[int] | None) -> list[int] | None:
    return list(dict.fromkeys(ids)) if ids is not None else None


async def get_campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    row = (await session.execute(select(Campaign).where(Campaign.id == campaign_id))).scalar_one_or_none()
    if row is None:
        raise not_found("campaign", "campaignId")
    return row


# Fields frozen once a campaign has started sending; for the first group a null means "leave as
# is", for the second it clears the value.
_AUDIENCE_KEPT_ON_NULL = ("subscription_id", "provider_id", "send_in_user_timezone")
_AUDIENCE_CLEARED_BY_NULL = ("list_ids", "exclusion_list_ids", "send_at")


def _audience_changes(campaign: Campaign, changes: dict[str, Any]) -> set[str]:
    """The audience, provider and timing fields ``changes`` would really change (a null that
    clears a value counts; restating the current value does not)."""
    changed: set[str] = set()
    for field in _AUDIENCE_KEPT_ON_NULL + _AUDIENCE_CLEARED_BY_NULL:
        if field not in changes or (changes[field] is None and field in _AUDIENCE_KEPT_ON_NULL):
            continue
        value = _dedupe(changes[field]) if field in ("list_ids", "exclusion_list_ids") else changes[field]
        if value != getattr(campaign, field):
            changed.add(field)
    return changed


async def update_campaign(session: AsyncSession, campaign: Campaign, changes: dict[str, Any], role: str) -> Campaign:
    if campaign.archived_at is not None:
        raise ApiError(ErrorCode.state_conflict, "This campaign is archived.")
    new_state = changes.pop("state", None)
    if _audience_changes(campaign, changes) and campaign.state not in EDITABLE_STATES:
        raise ApiError(
            ErrorCode.state_conflict, f"A {campaign.state} campaign's audience, provider and timing cannot change."
        )
    if changes.get("subscription_id") is not None or changes.get("provider_id") is not None:
        subscription = await _subscription(session, changes.get("subscription_id") or campaign.subscription_id)
        provider = await _provider(session, changes.get("provider_id") or campaign.provider_id)
        # A subscription on another channel moves the campaign there; its provider must follow (§B3).
        _check_channel(subscription.channel, subscription, provider)
        campaign.subscription_id, campaign.provider_id, campaign.channel = (
            subscription.id,
            provider.id,
            subscription.channel,
        )
    for field in ("name", "send_in_user_timezone", "send_at", "custom_domain_id", "description"):
        if field in changes and (changes[field] is not None or field in {"send_at", "description", "custom_domain_id"}):
            setattr(campaign, field, changes[field])
    for field in ("list_ids", "exclusion_list_ids"):
        if field in changes:
            setattr(campaign, field, _dedupe(changes[field]))
    if changes.get("tags") is not None:
        await set_resource_tags(session, TAG_RESOURCE, campaign.id, changes["tags"])
    if new_state is not None and new_state != campaign.state:
        await transition(session, campaign, new_state, role)
    campaign.updated_at = utcnow()
    await session.flush()
    return campaign


async def transition(session: AsyncSession, campaign: Campaign, new_state: str, role: str) -> None:
    if new_state not in USER_TRANSITIONS[campaign.state]:
        raise ApiError(
            ErrorCode.state_conflict, f"A {campaign.state} campaign cannot be moved to {new_state}.", param="state"
        )
    if new_state in ("scheduled", "aborted") and not project_role_at_least(role, "publisher"):
        raise ApiError(ErrorCode.permission_denied, "Scheduling or aborting a campaign needs the publisher role.")
    if new_state == "scheduled":
        await _check_sendable(session, campaign)
        campaign.state = "scheduled"
    elif new_state == "aborted":
        await abort(session, campaign)
    else:
        campaign.state = new_state


async def _check_sendable(session: AsyncSession, campaign: Campaign) -> None:
    """What a campaign needs before it may send (§E1): subscription, provider, audience, and a
    template in the project's default locale."""
    errors: list[FieldError] = []
    subscription = (
        await session.execute(select(Subscription).where(Subscription.id == campaign.subscription_id))
    ).scalar_one_or_none()
    if subscription is None:
        errors.append(
            FieldError(
                param="subscription_id", code=ErrorCode.parameter_missing, message="The subscription no longer exists."
            )
        )
    provider = (
        await session.execute(
            select(Provider).where(Provider.id == campaign.provider_id, Provider.deleted_at.is_(None))
        )
    ).scalar_one_or_none()
    if provider is None:
        errors.append(
            FieldError(param="provider_id", code=ErrorCode.parameter_missing, message="The provider no longer exists.")
        )
    if campaign.type == "blast" and not campaign.list_ids:
        errors.append(
            FieldError(param="list_ids", code=ErrorCode.parameter_missing, message="A blast needs at least one list.")
        )
    default_locale = await _default_template_missing(session, campaign)
    if default_locale is not None:
        errors.append(
            FieldError(
                param="templates",
                code=ErrorCode.parameter_missing,
                message=f"The campaign needs a {campaign.channel} template in the project's default locale"
                f" ({default_locale}).",
            )
        )
    if errors:
        raise validation_failed(errors, "This campaign cannot send yet.")


async def campaign_templates(
    session: AsyncSession, campaign: Campaign, *, channel: str | None = None
) -> Sequence[Template]:
    """The campaign's templates (of one channel, if given), oldest first."""
    stmt = select(Template).where(Template.campaign_id == campaign.id)
    if channel is not None:
        stmt = stmt.where(Template.type == channel)
    return (await session.execute(stmt.order_by(Template.id))).scalars().all()


async def _default_template_missing(session: AsyncSession, campaign: Campaign) -> str | None:
    """The project's default locale when no template of the campaign's channel would serve a
    user without a locale (the pick every send makes: that locale, then its language level);
    ``None`` when one would."""
    default_locale = (
        await session.execute(select(Project.locale).where(Project.id == campaign.project_id))
    ).scalar_one()
    try:
        pick_template(await campaign_templates(session, campaign, channel=campaign.channel), None, default_locale)
    except TemplateMissing:
        return default_locale
    return None


async def abort(session: AsyncSession, campaign: Campaign) -> int:
    """Stop every message of the campaign not yet handed to a provider; returns how many.

    The campaign is left ``aborting``: messages already in a provider call (``sending`` under a
    live lease) may still complete. The caller settles the abort once they have
    (`clarion.delivery.schedule.settle_abort`), or the scheduler duty does."""
    campaign.state = "aborting"
    await session.flush()
    return await abort_messages(session, campaign_id=campaign.id, states=UNSENT_MESSAGE_STATES, now=utcnow())


async def delete_campaign(session: AsyncSession, campaign: Campaign, role: str) -> None:
    """First call archives; the second removes the campaign and its history. Archiving a live
    campaign aborts it, so it needs the role an abort needs (publisher)."""
    if campaign.archived_at is None:
        if campaign.state in ("loading", "running", "scheduled"):
            if not project_role_at_least(role, "publisher"):
                raise ApiError(
                    ErrorCode.permission_denied, "Deleting a live campaign aborts it, which needs the publisher role."
                )
            await abort(session, campaign)
        campaign.archived_at = utcnow()
        campaign.updated_at = utcnow()
        await session.flush()
        return
    await forget_campaign(session, campaign.id)
    # Triggers carry no foreign key to their campaign (docs/decisions/0006): they are deleted
    # here, and their messages and message events cascade from them.
    await session.execute(
        delete(Trigger).where(Trigger.campaign_id == campaign.id).execution_options(synchronize_session=False)
    )
    await session.execute(delete(Campaign).where(Campaign.id == campaign.id))


async def duplicate_campaign(session: AsyncSession, campaign: Campaign) -> Campaign:
    copy = Campaign(
        type=campaign.type,
        name=f"{campaign.name} (copy)" if campaign.name else "",
        channel=campaign.channel,
        subscription_id=campaign.subscription_id,
        provider_id=campaign.provider_id,
        list_ids=campaign.list_ids,
        exclusion_list_ids=campaign.exclusion_list_ids,
        state="draft",
        send_in_user_timezone=campaign.send_in_user_timezone,
        send_at=campaign.send_at,
        custom_domain_id=campaign.custom_domain_id,
        description=campaign.description,
        settings=campaign.settings,
    )
    session.add(copy)
    await session.flush()
    for template in await campaign_templates(session, campaign):
        session.add(
            Template(
                campaign_id=copy.id,
                name=template.name,
                type=template.type,
                locale=template.locale,
                data=deepcopy(template.data),
            )
        )
    await session.flush()
    tags = (await tags_for(session, TAG_RESOURCE, [campaign.id])).get(campaign.id)
    if tags:
        await set_resource_tags(session, TAG_RESOURCE, copy.id, tags)
    return copy


async def hydrate(session: AsyncSession, campaigns: list[Campaign]) -> list[CampaignOut]:
    """Campaigns with their tags, subscription, (redacted) provider and counts not yet folded
    into their rows (:mod:`clarion.campaigns.counters`), in four queries."""
    if not campaigns:
        return []
    tags = await tags_for(session, TAG_RESOURCE, [c.id for c in campaigns])
    subs = {
        s.id: s
        for s in (
            await session.execute(
                select(Subscription).where(Subscription.id.in_({c.subscription_id for c in campaigns}))
            )
        ).scalars()
    }
    providers = {
        p.id: p
        for p in (
            await session.execute(select(Provider).where(Provider.id.in_({c.provider_id for c in campaigns})))
        ).scalars()
    }
    pending = await pending_counts(session, [c.id for c in campaigns])
    return [
        campaign_out(
            c, tags.get(c.id, []), subs.get(c.subscription_id), providers.get(c.provider_id), pending.get(c.id)
        )
        for c in campaigns
    ]
