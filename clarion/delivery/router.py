"""Following what happened: `GET /campaigns/{id}/triggers/{trigger_id}` and `GET /messages/{message_id}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Path
from sqlalchemy import func, select

from clarion.api.context import ProjectContext, project_ctx
from clarion.api.errors import not_found
from clarion.campaigns.service import get_campaign
from clarion.delivery.models import Message, MessageEvent, Trigger
from clarion.delivery.schemas import MessageEventOut, MessageTimeline, TriggerProgress
from clarion.delivery.sender import MESSAGES_TOPIC
from clarion.delivery.trigger import create_trigger
from clarion.delivery.trigger_schemas import CampaignTrigger, TriggerResponse

router = APIRouter(tags=["delivery"])


@router.post("/campaigns/{campaignId}/trigger", response_model=TriggerResponse, operation_id="triggerCampaign")
async def trigger_campaign(
    body: CampaignTrigger | None = Body(default=None),
    campaign_id: int = Path(alias="campaignId", ge=1, le=2**63 - 1),
    ctx: ProjectContext = project_ctx("editor"),
) -> Any:
    """Fire the campaign: at its own audience (empty body or only `event`), at per-call `users`,
    or at one `user` (§E1). Returns the trigger id and, for per-call/one-user, the message ids."""
    key = ctx.request.headers.get("idempotency-key")
    async with ctx.write() as session:
        campaign = await get_campaign(session, campaign_id)
        response = await create_trigger(session, campaign, body or CampaignTrigger(), idempotency_key=key)
    await ctx.request.app.state.waker.notify(MESSAGES_TOPIC)
    await ctx.request.app.state.waker.notify("jobs")
    return response


@router.get(
    "/campaigns/{campaignId}/triggers/{triggerId}", response_model=TriggerProgress, operation_id="getCampaignTrigger"
)
async def get_trigger(
    campaign_id: int = Path(alias="campaignId", ge=1, le=2**63 - 1),
    trigger_id: str = Path(alias="triggerId", max_length=40),
    ctx: ProjectContext = project_ctx(),
) -> Any:
    async with ctx.read() as session:
        trigger = (
            await session.execute(
                select(Trigger).where(Trigger.public_id == trigger_id, Trigger.campaign_id == campaign_id)
            )
        ).scalar_one_or_none()
        if trigger is None:
            raise not_found("trigger", "triggerId")
        # Uses ix_messages_trigger (trigger_id, state).
        counts = dict(
            (
                await session.execute(
                    select(Message.state, func.count()).where(Message.trigger_id == trigger.id).group_by(Message.state)
                )
            ).all()
        )
    return TriggerProgress(
        trigger_id=trigger.public_id,
        campaign_id=trigger.campaign_id,
        kind=trigger.kind,
        state=trigger.state,
        recipients=trigger.recipients,
        messages={str(k): int(v) for k, v in counts.items()},
        created_at=trigger.created_at,
        materialised_at=trigger.materialised_at,
    )


@router.get("/messages/{messageId}", response_model=MessageTimeline, operation_id="getMessage")
async def get_message(
    message_id: str = Path(alias="messageId", max_length=40), ctx: ProjectContext = project_ctx()
) -> Any:
    async with ctx.read() as session:
        row = (
            await session.execute(
                select(Message, Trigger.public_id)
                .join(Trigger, Trigger.id == Message.trigger_id)
                .where(Message.public_id == message_id)
            )
        ).first()
        if row is None:
            raise not_found("message", "messageId")
        message, trigger_public_id = row
        events = (
            await session.execute(
                select(MessageEvent)
                .where(MessageEvent.message_id == message.id)
                .order_by(MessageEvent.created_at, MessageEvent.id)
            )
        ).scalars()
        timeline = [MessageEventOut(id=e.public_id, type=e.type, data=e.data, created_at=e.created_at) for e in events]
    return MessageTimeline(
        message_id=message.public_id,
        campaign_id=message.campaign_id,
        trigger_id=trigger_public_id,
        user_id=message.user_id,
        channel=message.channel,
        state=message.state,
        attempts=message.attempts,
        skip_reason=message.skip_reason,
        last_error=message.last_error,
        provider_id=message.provider_id,
        provider_message_id=message.provider_message_id,
        sent_at=message.sent_at,
        created_at=message.created_at,
        updated_at=message.updated_at,
        events=timeline,
    )
