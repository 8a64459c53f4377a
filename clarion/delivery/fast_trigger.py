"""One-user triggers on PostgreSQL in two statements (the hot path of transactional sending).

`{"user": {"external_id": …}, "event": …}` for a known user, with a secret key: the request's
whole database work is two autocommit statements on one pooled connection.

1. **Look** — resolves the bearer key (by its SHA-256, revoked keys never match, exactly as
   :func:`clarion.api.auth.resolve_principal`), claims the `Idempotency-Key` for that key as the
   idempotency middleware would (``INSERT … ON CONFLICT DO NOTHING``, state ``in_progress``), and
   reads the campaign's state, the user, the user's eligibility on the campaign's channel
   (:func:`clarion.subscriptions.eligibility.ineligibility_reason`, the expression every sender
   uses) and whether a webhook endpoint listens for the message's first event.
2. **Write** — one data-modifying statement inserts the trigger, the message and its message
   event, appends the campaign's counter delta (:mod:`clarion.campaigns.counters`: no lock on
   the campaign row, so concurrent triggers do not queue) and stores the response as the
   claimed key's completion. One statement, so it is atomic.

Anything else — another key kind or role, a key claimed by an earlier request, an unknown
campaign or user, a state that refuses triggers, a subscribed webhook endpoint, a trigger already
recorded under this key — answers :class:`Handover` and the request continues down the general
path (the idempotency middleware and the route), which produces the errors, the fan-out and the
replays. Both statements are built with SQLAlchemy once per process, compiled for asyncpg, and
run on the pool's driver connection: the per-request cost is the driver's alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import (
    LargeBinary,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import array

from clarion.api.fast_path import Compiled, KeyRow, key_cte
from clarion.api.idempotency import RECORDS, IdempotencyStore, plain_body
from clarion.campaigns.models import CHANNELS, Campaign
from clarion.campaigns.service import UNTRIGGERABLE_STATES
from clarion.core.clock import utcnow
from clarion.core.db import Database, JSONDoc, UTCDateTime, json_dumps
from clarion.core.ids import prefixed_ulid
from clarion.delivery.trigger_schemas import CampaignTrigger
from clarion.subscriptions.eligibility import ineligibility_reason
from clarion.users.models import User
from clarion.webhooks.queries import ENDPOINTS

CAMPAIGNS: Table = Campaign.__table__  # type: ignore[assignment]
USERS: Table = User.__table__  # type: ignore[assignment]
FAST_WEBHOOK_TYPES = ("message.queued", "message.skipped")
TRIGGER_ROLES = ("editor", "publisher", "admin")  # the route's minimum role, and above
SCOPE_PREFIX = "client:project:"  # the idempotency middleware's record scope for a project key


@dataclass(frozen=True)
class Handover:
    """The general path must answer. ``key`` is what the look statement found (so the caller
    need not resolve it again); ``claimed`` tells whether this request now holds the
    idempotency claim."""

    key: KeyRow | None
    claimed: bool


# The look statement's inputs, in positional order, with their SQL types. Everything else in it
# (channel names, reasons, states) is a constant rendered into the SQL once.
LOOK_INPUTS: dict[str, tuple[str, Any]] = {
    "digest": ("varchar", String),
    "campaign_id": ("bigint", postgresql.BIGINT),
    "external_id": ("varchar", String),
    "idempotency_key": ("varchar", String),
    "fingerprint": ("varchar", String),
    "locked_until": ("timestamptz", UTCDateTime),
    "now": ("timestamptz", UTCDateTime),
    "expires_at": ("timestamptz", UTCDateTime),
}


def _input(name: str) -> Any:
    """The placeholder of one look input (``$n::type``)."""
    position = list(LOOK_INPUTS).index(name) + 1
    sql_type, type_ = LOOK_INPUTS[name]
    return literal_column(f"${position}::{sql_type}", type_=type_)


def _look() -> Any:
    key = key_cte(_input("digest"))
    idempotency_key = _input("idempotency_key")
    claim = (
        postgresql.insert(RECORDS)
        .from_select(
            ["scope", "key", "fingerprint", "state", "locked_until", "created_at", "expires_at"],
            select(
                literal(SCOPE_PREFIX) + cast(key.c.id, String),
                idempotency_key,
                _input("fingerprint"),
                literal("in_progress"),
                _input("locked_until"),
                _input("now"),
                _input("expires_at"),
            ).where(
                key.c.scope == "secret",
                key.c.role == any_(array(list(TRIGGER_ROLES))),
                idempotency_key.is_not(None),
            ),
        )
        .on_conflict_do_nothing()
        .returning(RECORDS.c.scope)
        .cte("claim")
    )
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
    return select(
        key.c.id,
        key.c.project_id,
        key.c.organization_id,
        key.c.scope,
        key.c.role,
        select(func.count()).select_from(claim).scalar_subquery().label("claimed"),
        CAMPAIGNS.c.state,
        CAMPAIGNS.c.archived_at,
        CAMPAIGNS.c.channel,
        USERS.c.id.label("user_id"),
        reason.label("reason"),
        hooked.label("hooked"),
    ).select_from(
        key.outerjoin(
            CAMPAIGNS, and_(CAMPAIGNS.c.id == _input("campaign_id"), CAMPAIGNS.c.project_id == key.c.project_id)
        ).outerjoin(USERS, and_(USERS.c.project_id == key.c.project_id, USERS.c.external_id == _input("external_id")))
    )


def _write() -> Any:
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
            INSERT INTO campaign_counter_deltas (campaign_id, total, skipped)
            SELECT :campaign_id, 1, :skipped FROM m
        ), i AS (
            UPDATE idempotency_keys
            SET state = 'completed', status_code = 200, content_type = 'application/json',
                body = :stored_body, request_id = :request_id
            WHERE scope = :idempotency_scope AND key = :idempotency_key AND state = 'in_progress'
              AND EXISTS (SELECT FROM m)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM e) AS events
        """
    ).bindparams(
        bindparam("project_id", type_=postgresql.BIGINT),
        bindparam("campaign_id", type_=postgresql.BIGINT),
        bindparam("user_id", type_=postgresql.BIGINT),
        bindparam("skipped", type_=postgresql.INTEGER),
        bindparam("event", type_=JSONDoc),
        bindparam("context", type_=JSONDoc),
        bindparam("event_data", type_=JSONDoc),
        bindparam("now", type_=UTCDateTime),
        bindparam("stored_body", type_=LargeBinary),
        bindparam("idempotency_key", type_=String),
        bindparam("idempotency_scope", type_=String),
        bindparam("request_id", type_=String),
        bindparam("skip_reason", type_=String),
        bindparam("trigger_public_id", type_=String),
        bindparam("message_public_id", type_=String),
        bindparam("event_public_id", type_=String),
        bindparam("channel", type_=String),
        bindparam("state", type_=String),
    )


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


_STATEMENTS: dict[str, Compiled] = {}


def _statement(name: str) -> Compiled:
    if not _STATEMENTS:
        _STATEMENTS["look"] = Compiled(_look(), list(LOOK_INPUTS))
        _STATEMENTS["write"] = Compiled(_write())
    return _STATEMENTS[name]


@dataclass(frozen=True)
class Claim:
    """The idempotency claim this request asks for: record scope is derived from the key."""

    key: str
    fingerprint: str
    request_id: str | None
    lock_seconds: float
    ttl_seconds: float


async def fire_one_user(
    db: Database,
    *,
    digest: str,
    campaign_id: int,
    external_id: str,
    event: dict[str, Any],
    claim: Claim | None,
    store: IdempotencyStore,
) -> bytes | Handover:
    """The response body of a one-user trigger done here, or :class:`Handover`. ``store``
    releases the claim if the write fails (the client may then retry at once)."""
    now = utcnow()
    look = _statement("look")
    write = _statement("write")
    async with db.driver_connection() as connection:
        row = await connection.fetchrow(
            look.sql,
            *look.args(
                {
                    "digest": digest,
                    "campaign_id": campaign_id,
                    "external_id": external_id,
                    "idempotency_key": claim.key if claim else None,
                    "fingerprint": claim.fingerprint if claim else None,
                    "locked_until": now + timedelta(seconds=claim.lock_seconds) if claim else now,
                    "now": now,
                    "expires_at": now + timedelta(seconds=claim.ttl_seconds) if claim else now,
                }
            ),
        )
        if row is None:
            return Handover(None, False)
        key = KeyRow(row["id"], row["project_id"], row["organization_id"], row["scope"], row["role"])
        claimed = bool(row["claimed"])
        if claim is not None and not claimed:
            return Handover(key, False)
        state, user_id, reason = row["state"], row["user_id"], row["reason"]
        if (
            key.scope != "secret"
            or key.role not in TRIGGER_ROLES
            or state is None
            or state in UNTRIGGERABLE_STATES
            or row["archived_at"] is not None
            or user_id is None
            or row["hooked"]
        ):
            return Handover(key, claimed)
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
        try:
            events = await connection.fetchval(
                write.sql,
                *write.args(
                    {
                        "trigger_public_id": trigger_public_id,
                        "message_public_id": message_public_id,
                        "event_public_id": prefixed_ulid("evt"),
                        "project_id": key.project_id,
                        "campaign_id": campaign_id,
                        "user_id": user_id,
                        "channel": row["channel"],
                        "state": message_state,
                        "skip_reason": reason,
                        "skipped": 1 if reason else 0,
                        "event": json_dumps(event),
                        "context": json_dumps({"attributes": {}, "event": event}),
                        "event_data": json_dumps({"reason": reason}) if reason else None,
                        "now": now,
                        "idempotency_key": claim.key if claim else None,
                        "idempotency_scope": claim_scope(key) if claim else None,
                        "stored_body": plain_body(response),
                        "request_id": claim.request_id if claim else None,
                    }
                ),
            )
        except BaseException:
            if claimed and claim is not None:
                await store.release(claim_scope(key), claim.key)
            raise
    if events != 1:
        return Handover(key, claimed)  # a trigger already exists under this key: the route describes it
    return response


def claim_scope(key: KeyRow) -> str:
    """The idempotency record scope of a project key (the middleware's ``client:project:<id>``)."""
    return f"{SCOPE_PREFIX}{key.id}"
