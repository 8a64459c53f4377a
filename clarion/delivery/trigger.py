"""`POST /campaigns/{id}/trigger`: a trigger row and, for per-call and one-user triggers, its
messages — all in the caller's transaction (§E1, architecture §2.1–2.2).

Per-call recipients are resolved through the one user upsert (`clarion.users.upsert`), so
identity rules, normalisation and the data schema behave exactly as in `POST /users/batch`.
Eligibility (subscription state, suppression, channel address) is decided in SQL by
`clarion.subscriptions.eligibility`, the same expression audience materialisation uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.api.errors import ApiError, ErrorCode, FieldError, validation_failed
from clarion.campaigns.models import Campaign
from clarion.campaigns.service import UNTRIGGERABLE_STATES
from clarion.core.clock import utcnow
from clarion.core.ids import prefixed_ulid
from clarion.core.sql import insert_for
from clarion.delivery.models import Message, MessageEvent, Trigger
from clarion.delivery.trigger_schemas import CampaignTrigger, TriggeredMessage, TriggerRecipient, TriggerResponse
from clarion.delivery.webhook_fanout import AppendedEvent, fan_out
from clarion.subscriptions.eligibility import ineligibility_reason
from clarion.users.models import User
from clarion.users.upsert import upsert_users
from clarion.users.validation import ItemInvalid, UserChange, identifier, normalise_email, profile_fields

USERS: Table = User.__table__  # type: ignore[assignment]
STANDARD_KEYS = {"external_id", "anonymous_id", "email", "phone", "timezone", "locale", "device_token"}


def check_triggerable(campaign: Campaign) -> None:
    if campaign.archived_at is not None:
        raise ApiError(ErrorCode.state_conflict, "This campaign is archived and cannot be triggered.")
    if campaign.state in UNTRIGGERABLE_STATES:
        raise ApiError(
            ErrorCode.state_conflict,
            f"A {campaign.state} campaign cannot be triggered; set state to scheduled first."
            if campaign.state == "draft"
            else f"A {campaign.state} campaign cannot be triggered.",
            param="state",
        )


def _recipient_change(
    index: int, entry: TriggerRecipient, known_by_email: dict[str, dict[str, Any]]
) -> tuple[UserChange, dict[str, Any]]:
    """The upsert for one recipient, and the custom attributes it carries for this send."""
    prefix = f"users.{index}."
    try:
        external_id = identifier("external_id", entry.external_id)
        anonymous_id = identifier("anonymous_id", entry.anonymous_id)
        fields = profile_fields(
            entry.model_dump(include={"email", "phone", "timezone", "locale"}, exclude_unset=True), prefix=""
        )
    except ItemInvalid as exc:
        raise validation_failed([FieldError(param=prefix.rstrip("."), code=exc.code, message=exc.message)]) from exc
    if external_id is None and anonymous_id is None:
        email = fields.get("email")
        if email is None:
            raise validation_failed(
                [
                    FieldError(
                        param=f"users.{index}",
                        code=ErrorCode.parameter_missing,
                        message="Each recipient needs external_id, anonymous_id or email.",
                    )
                ]
            )
        known = known_by_email.get(email)
        if known is not None:
            external_id, anonymous_id = known["external_id"], known["anonymous_id"]
        else:
            anonymous_id = prefixed_ulid("anon")
            known_by_email[email] = {"external_id": None, "anonymous_id": anonymous_id}
    attributes = {k: v for k, v in (entry.model_extra or {}).items()}
    return UserChange(external_id, anonymous_id, fields, attributes or None), attributes


async def _users_by_email(session: AsyncSession, project_id: int, emails: list[str]) -> dict[str, dict[str, Any]]:
    """The oldest user per email (uses ix_users_project_email)."""
    if not emails:
        return {}
    rows = (
        await session.execute(
            select(USERS.c.email, USERS.c.external_id, USERS.c.anonymous_id)
            .where(USERS.c.project_id == project_id, USERS.c.email.in_(emails))
            .order_by(USERS.c.id)
        )
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for email, external_id, anonymous_id in rows:
        out.setdefault(email, {"external_id": external_id, "anonymous_id": anonymous_id})
    return out


def _email_only(entry: TriggerRecipient) -> str | None:
    if entry.external_id or entry.anonymous_id or not entry.email:
        return None
    try:
        return normalise_email(entry.email.strip())
    except ItemInvalid:
        return None


async def create_trigger(
    session: AsyncSession,
    campaign: Campaign,
    body: CampaignTrigger,
    *,
    idempotency_key: str | None,
) -> TriggerResponse:
    check_triggerable(campaign)
    if campaign.type == "blast" and body.users is None and body.user is None:
        # A blast's schedule and a trigger at its audience are one send, whichever comes first:
        # serialised with the scheduler's promotion (delivery/schedule.py:_promote) on the
        # campaign row, and once the lock is held the ledger is read again. If the schedule
        # already fired the blast, firing it answers with that send. (A trigger fired after an
        # earlier trigger is a send of its own, as the API promises: use an Idempotency-Key to
        # make a retry safe.)
        await session.execute(select(Campaign.id).where(Campaign.id == campaign.id).with_for_update())
        scheduled_send = (
            await session.execute(
                select(Trigger).where(Trigger.campaign_id == campaign.id, Trigger.kind == "schedule").limit(1)
            )
        ).scalar_one_or_none()
        if scheduled_send is not None:
            return await describe(session, scheduled_send)
    if body.users is not None and body.user is not None:
        raise validation_failed(
            [
                FieldError(
                    param="user",
                    code=ErrorCode.parameter_unknown,
                    message="Send either `users` (per-call recipients) or `user` (one user), not both.",
                )
            ]
        )
    if idempotency_key:
        # Second line of defence behind the idempotency middleware: one trigger per key.
        existing = (
            await session.execute(
                select(Trigger).where(Trigger.campaign_id == campaign.id, Trigger.idempotency_key == idempotency_key)
            )
        ).scalar_one_or_none()
        if existing is not None:
            return await describe(session, existing)
    recipients: list[TriggerRecipient] | None = (
        list(body.users) if body.users is not None else ([body.user] if body.user is not None else None)
    )
    kind = "users" if body.users is not None else ("user" if body.user is not None else "audience")
    trigger = Trigger(
        public_id=prefixed_ulid("trg"),
        campaign_id=campaign.id,
        kind=kind,
        state="pending" if recipients is None else "ready",
        event=body.event or {},
        idempotency_key=idempotency_key,
    )
    session.add(trigger)
    await session.flush()
    if recipients is None:
        from clarion.delivery.audience import enqueue_materialisation

        if campaign.type == "blast" and campaign.state in ("scheduled", "finished"):
            # A blast fired at its audience goes through the lifecycle its schedule would:
            # loading while it materialises, running until drained, then finished.
            campaign.state = "loading"
            campaign.updated_at = utcnow()
        await enqueue_materialisation(session, trigger)
        return await describe(session, trigger)
    await _per_call_messages(session, campaign, trigger, recipients)
    return await describe(session, trigger)


async def _per_call_messages(
    session: AsyncSession, campaign: Campaign, trigger: Trigger, recipients: list[TriggerRecipient]
) -> None:
    project_id = campaign.project_id
    emails = [e for e in (_email_only(r) for r in recipients) if e]
    known = await _users_by_email(session, project_id, emails)
    changes: list[UserChange] = []
    attributes: list[dict[str, Any]] = []
    for index, entry in enumerate(recipients):
        change, attrs = _recipient_change(index, entry, known)
        changes.append(change)
        attributes.append(attrs)
    users = await upsert_users(session, project_id, changes)
    # A user reached twice gets one message; the last entry's attributes win for this send.
    per_user: dict[int, dict[str, Any]] = {}
    for user, attrs in zip(users, attributes, strict=True):
        per_user.setdefault(int(user["id"]), {}).update(attrs)
    reasons = dict(
        (
            await session.execute(
                select(
                    USERS.c.id,
                    ineligibility_reason(USERS, channel=campaign.channel, subscription_id=campaign.subscription_id),
                ).where(USERS.c.id.in_(per_user))
            )
        ).all()
    )
    now = utcnow()
    rows = [
        {
            "public_id": prefixed_ulid("msg"),
            "project_id": project_id,
            "campaign_id": campaign.id,
            "trigger_id": trigger.id,
            "user_id": user_id,
            "channel": campaign.channel,
            "state": "skipped" if reasons.get(user_id) else "queued",
            "skip_reason": reasons.get(user_id),
            "due_at": now,
            "attempts": 0,
            "context": {"attributes": attrs, "event": trigger.event or {}},
            "created_at": now,
            "updated_at": now,
        }
        for user_id, attrs in per_user.items()
    ]
    await session.execute(
        insert_for(session, Message)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["campaign_id", "trigger_id", "user_id"])
    )
    created = (
        await session.execute(
            select(Message.id, Message.state, Message.skip_reason).where(Message.trigger_id == trigger.id)
        )
    ).all()
    event_rows: list[dict[str, Any]] = [
        {
            "public_id": prefixed_ulid("evt"),
            "project_id": project_id,
            "message_id": mid,
            "campaign_id": campaign.id,
            "type": state,
            "data": {"reason": reason} if reason else None,
            "created_at": now,
        }
        for mid, state, reason in created
    ]
    await session.execute(insert(MessageEvent), event_rows)
    await fan_out(
        session,
        [AppendedEvent(e["public_id"], project_id, e["message_id"], e["type"], e["data"], now) for e in event_rows],
    )
    skipped = sum(1 for _, state, _ in created if state == "skipped")
    trigger.recipients = len(created)
    trigger.skipped = skipped
    trigger.materialised_at = now
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(total=Campaign.total + len(created), skipped=Campaign.skipped + skipped)
        .execution_options(synchronize_session=False)
    )
    await session.flush()


async def describe(session: AsyncSession, trigger: Trigger) -> TriggerResponse:
    """The trigger response: messages listed for per-call and one-user triggers."""
    messages = None
    if trigger.kind in ("users", "user"):
        rows = (
            await session.execute(
                select(Message.public_id, Message.user_id, USERS.c.external_id, Message.state, Message.skip_reason)
                .join(USERS, USERS.c.id == Message.user_id)
                .where(Message.trigger_id == trigger.id)
                .order_by(Message.id)
            )
        ).all()
        messages = [
            TriggeredMessage(message_id=p, user_id=u, external_id=e, state=s, skip_reason=r) for p, u, e, s, r in rows
        ]
    recipients = trigger.recipients
    if recipients is None and trigger.kind == "audience" and trigger.state == "ready":
        recipients = int(
            (await session.execute(select(func.count()).where(Message.trigger_id == trigger.id))).scalar() or 0
        )
    return TriggerResponse(
        success=True,
        trigger_id=trigger.public_id,
        campaign_id=trigger.campaign_id,
        recipients=recipients,
        messages=messages,
    )
