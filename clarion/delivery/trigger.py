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
from clarion.api.idempotency import Ticket, plain_body
from clarion.campaigns.models import Campaign
from clarion.campaigns.service import UNTRIGGERABLE_STATES
from clarion.core.clock import utcnow
from clarion.core.db import Database
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


# --- One-user fast path (PostgreSQL) -------------------------------------------------------------
#
# `{"user": {"external_id": …}, "event": …}` for a known user is the hot path of transactional
# sending. On PostgreSQL it takes two autocommit statements on one pooled connection, no explicit
# transaction: (A) one read for the campaign's state, the user, the user's eligibility on the
# campaign's channel and whether a webhook endpoint listens for the message's first event; (B)
# one data-modifying CTE that inserts the trigger, the message and its message event, bumps the
# campaign counters and stores the response as the idempotency completion. B is one statement, so
# it is atomic; the campaign row is locked only while it runs. Anything else (unknown campaign or
# user, a state that refuses triggers, profile fields or attributes to upsert, a subscribed
# webhook endpoint, a trigger already recorded under this key) returns ``None`` and the caller
# takes the general path above, which produces the errors and the fan-out.

CAMPAIGNS: Table = Campaign.__table__  # type: ignore[assignment]
FAST_WEBHOOK_TYPES = ("message.queued", "message.skipped")


def _fast_read() -> Any:
    from sqlalchemy import and_, bindparam, case, exists, null
    from sqlalchemy.dialects.postgresql import array

    from clarion.campaigns.models import CHANNELS
    from clarion.webhooks.queries import ENDPOINTS

    reason = case(
        *[
            (
                CAMPAIGNS.c.channel == channel,
                ineligibility_reason(USERS, channel=channel, subscription_id=CAMPAIGNS.c.subscription_id),
            )
            for channel in CHANNELS
        ],
        else_=null(),
    )
    hooked = exists().where(
        ENDPOINTS.c.project_id == CAMPAIGNS.c.project_id,
        ENDPOINTS.c.status == "active",
        ENDPOINTS.c.event_types.op("?|")(array(list(FAST_WEBHOOK_TYPES))),
    )
    return (
        select(
            CAMPAIGNS.c.state,
            CAMPAIGNS.c.archived_at,
            CAMPAIGNS.c.channel,
            USERS.c.id,
            reason,
            hooked,
        )
        .select_from(
            CAMPAIGNS.outerjoin(
                USERS,
                and_(USERS.c.project_id == CAMPAIGNS.c.project_id, USERS.c.external_id == bindparam("external_id")),
            )
        )
        .where(CAMPAIGNS.c.id == bindparam("campaign_id"), CAMPAIGNS.c.project_id == bindparam("project_id"))
    )


def _fast_write() -> Any:
    from sqlalchemy import LargeBinary, String, bindparam, text

    from clarion.core.db import JSONDoc, UTCDateTime

    return text(
        """
        WITH t AS (
            INSERT INTO triggers (public_id, project_id, campaign_id, kind, state, event, idempotency_key,
                                  recipients, skipped, materialised_at, created_at, updated_at)
            VALUES (:trigger_public_id, :project_id, :campaign_id, 'user', 'ready', :event, :idempotency_key,
                    1, :skipped, :now, :now, :now)
            ON CONFLICT (campaign_id, idempotency_key) DO NOTHING
            RETURNING id
        ), m AS (
            INSERT INTO messages (public_id, project_id, campaign_id, trigger_id, user_id, channel, state,
                                  skip_reason, due_at, attempts, context, created_at, updated_at)
            SELECT :message_public_id, :project_id, :campaign_id, t.id, :user_id, :channel, :state,
                   :skip_reason, :now, 0, :context, :now, :now
            FROM t
            RETURNING id
        ), e AS (
            INSERT INTO message_events (public_id, project_id, message_id, campaign_id, type, data, created_at)
            SELECT :event_public_id, :project_id, m.id, :campaign_id, :state, :event_data, :now
            FROM m
            RETURNING id
        ), c AS (
            UPDATE campaigns SET total = total + 1, skipped = skipped + :skipped, updated_at = :now
            WHERE id = :campaign_id AND EXISTS (SELECT FROM m)
            RETURNING id
        ), i AS (
            UPDATE idempotency_keys
            SET state = 'completed', status_code = 200, content_type = 'application/json',
                body = :stored_body, request_id = :request_id
            WHERE scope = :idempotency_scope AND key = :idempotency_key AND state = 'in_progress'
              AND EXISTS (SELECT FROM m)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM e) AS events, (SELECT count(*) FROM c) AS campaigns,
               (SELECT count(*) FROM i) AS completions
        """
    ).bindparams(
        bindparam("event", type_=JSONDoc),
        bindparam("context", type_=JSONDoc),
        bindparam("event_data", type_=JSONDoc),
        bindparam("now", type_=UTCDateTime),
        bindparam("stored_body", type_=LargeBinary),
        bindparam("idempotency_key", type_=String),
        bindparam("idempotency_scope", type_=String),
        bindparam("request_id", type_=String),
        bindparam("skip_reason", type_=String),
    )


_FAST: dict[str, Any] = {}


def _fast_statement(name: str) -> Any:
    """The two statements, built once per process (their compiled form is cached by SQLAlchemy)."""
    if name not in _FAST:
        _FAST["read"] = _fast_read()
        _FAST["write"] = _fast_write()
    return _FAST[name]


def fast_path_applies(body: CampaignTrigger) -> bool:
    """A one-user trigger carrying only the user's ``external_id`` (already in the normal form the
    upsert would match it by): no profile to upsert."""
    user = body.user
    return (
        body.users is None
        and user is not None
        and user.model_fields_set == {"external_id"}
        and not user.model_extra
        and user.external_id == user.external_id.strip()
    )


async def trigger_one_user_fast(
    db: Database,
    *,
    project_id: int,
    campaign_id: int,
    body: CampaignTrigger,
    idempotency_key: str | None,
    ticket: Ticket | None,
) -> bytes | None:
    """The response body of a one-user trigger done on the fast path, or ``None`` when the
    general path must run (see above). ``ticket``: the idempotency middleware's claim, completed
    here in the same statement when given."""
    import orjson

    assert body.user is not None
    external_id = body.user.external_id
    async with db.lookup() as connection:
        row = (
            await connection.execute(
                _fast_statement("read"),
                {"external_id": external_id, "campaign_id": campaign_id, "project_id": project_id},
            )
        ).first()
        if row is None:
            return None
        state, archived_at, channel, user_id, reason, hooked = row
        if archived_at is not None or state in UNTRIGGERABLE_STATES or user_id is None or hooked:
            return None
        event = body.event or {}
        trigger_public_id = prefixed_ulid("trg")
        message_public_id = prefixed_ulid("msg")
        message_state = "skipped" if reason else "queued"
        response = orjson.dumps(
            {
                "success": True,
                "trigger_id": trigger_public_id,
                "campaign_id": campaign_id,
                "recipients": 1,
                "messages": [
                    {
                        "message_id": message_public_id,
                        "user_id": user_id,
                        "external_id": external_id,
                        "state": message_state,
                        "skip_reason": reason,
                    }
                ],
            }
        )
        done = (
            await connection.execute(
                _fast_statement("write"),
                {
                    "trigger_public_id": trigger_public_id,
                    "message_public_id": message_public_id,
                    "event_public_id": prefixed_ulid("evt"),
                    "project_id": project_id,
                    "campaign_id": campaign_id,
                    "user_id": user_id,
                    "channel": channel,
                    "state": message_state,
                    "skip_reason": reason,
                    "skipped": 1 if reason else 0,
                    "event": event,
                    "context": {"attributes": {}, "event": event},
                    "event_data": {"reason": reason} if reason else None,
                    "now": utcnow(),
                    "idempotency_key": idempotency_key,
                    "idempotency_scope": ticket.scope if ticket is not None else None,
                    "stored_body": plain_body(response),
                    "request_id": ticket.request_id if ticket is not None else None,
                },
            )
        ).one()
    if done.events != 1:
        return None  # a trigger already exists under this key: the general path describes it
    if ticket is not None and done.completions == 1:
        ticket.completed = True
    return response
