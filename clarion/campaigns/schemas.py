"""Wire models for campaigns (contract §B3) and the trigger flow (§E1)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from clarion.api.schemas import RequestModel, ResponseModel

CampaignType = Literal["blast", "trigger"]
CampaignChannel = Literal["email", "text", "push", "webhook", "in_app"]
CampaignState = Literal["draft", "scheduled", "loading", "running", "finished", "aborting", "aborted"]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Name = Annotated[str, Field(max_length=255)]
TagNames = list[Annotated[str, Field(min_length=1, max_length=100)]]


class CampaignDelivery(ResponseModel):
    sent: int
    total: int
    opens: int
    clicks: int
    bounced: int
    delivered: int
    failed: int
    skipped: int


class SubscriptionOut(ResponseModel):
    id: int
    project_id: int
    name: str
    channel: CampaignChannel
    is_public: bool
    created_at: datetime
    updated_at: datetime


class ProviderOut(ResponseModel):
    """A provider as hydrated on a campaign (§B13): credentials never included."""

    id: int
    project_id: int
    type: str
    name: str
    group: str
    is_default: bool
    rate_limit: int
    rate_interval: Literal["second", "minute", "hour", "day"]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


class CampaignOut(ResponseModel):
    id: int
    project_id: int
    type: CampaignType
    name: str
    list_ids: list[int] | None = None
    exclusion_list_ids: list[int] | None = None
    channel: CampaignChannel
    subscription_id: int
    subscription: SubscriptionOut | None = None
    provider_id: int
    provider: ProviderOut | None = None
    state: CampaignState
    delivery: CampaignDelivery
    tags: list[str] | None = None
    send_in_user_timezone: bool | None = None
    send_at: datetime | None = None
    custom_domain_id: int | None = None
    created_by: int | None = None
    description: str | None = None
    created_at: datetime
    updated_at: datetime


class CampaignCreate(RequestModel):
    type: CampaignType
    name: Name = ""
    channel: CampaignChannel | None = None
    subscription_id: Id
    provider_id: Id
    list_ids: list[Id] | None = None
    exclusion_list_ids: list[Id] | None = None
    send_in_user_timezone: bool | None = None
    send_at: datetime | None = None
    tags: TagNames | None = None
    custom_domain_id: Id | None = None
    description: str | None = None


class CampaignUpdate(RequestModel):
    name: Name | None = None
    subscription_id: Id | None = None
    provider_id: Id | None = None
    state: CampaignState | None = None
    list_ids: list[Id] | None = None
    exclusion_list_ids: list[Id] | None = None
    send_in_user_timezone: bool | None = None
    send_at: datetime | None = None
    tags: TagNames | None = None
    custom_domain_id: Id | None = None
    description: str | None = None


def campaign_out(
    campaign: Any,
    tags: list[str] | None,
    subscription: Any = None,
    provider: Any = None,
    pending: tuple[int, int] | None = None,
) -> CampaignOut:
    """``pending``: (total, skipped) appended as counter deltas and not yet folded into the row."""
    pending_total, pending_skipped = pending or (0, 0)
    return CampaignOut(
        id=campaign.id,
        project_id=campaign.project_id,
        type=campaign.type,
        name=campaign.name,
        list_ids=campaign.list_ids,
        exclusion_list_ids=campaign.exclusion_list_ids,
        channel=campaign.channel,
        subscription_id=campaign.subscription_id,
        subscription=SubscriptionOut.model_validate(subscription) if subscription is not None else None,
        provider_id=campaign.provider_id,
        provider=ProviderOut.model_validate(provider) if provider is not None else None,
        state=campaign.state,
        delivery=CampaignDelivery(
            sent=campaign.sent,
            total=campaign.total + pending_total,
            opens=campaign.opens,
            clicks=campaign.clicks,
            bounced=campaign.bounced,
            delivered=campaign.delivered,
            failed=campaign.failed,
            skipped=campaign.skipped + pending_skipped,
        ),
        tags=tags,
        send_in_user_timezone=campaign.send_in_user_timezone,
        send_at=campaign.send_at,
        custom_domain_id=campaign.custom_domain_id,
        created_by=campaign.created_by,
        description=campaign.description,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
    )
