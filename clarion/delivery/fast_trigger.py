"""One-user triggers on PostgreSQL in one statement (the hot path of transactional sending).

`{"user": {"external_id": …}, "event": …}` for a known user, with a secret key: the request's
whole database work is one autocommit statement on one pooled connection, so it is atomic.

- **Look** — resolves the bearer key (by its SHA-256, revoked keys never match, exactly as
  :func:`clarion.api.auth.resolve_principal`) and reads the campaign's state, the user, the
  user's eligibility on the campaign's channel
  (:func:`clarion.subscriptions.eligibility.ineligibility_reason`, the expression every sender
  uses) and whether a webhook endpoint listens for the message's first event.
- **Write**, only if the look allows it — inserts the trigger, the message and its message
  event, appends the campaign's counter delta (:mod:`clarion.campaigns.counters`: no lock on
  the campaign row, so concurrent triggers do not queue), builds the response and stores it as
  the `Idempotency-Key`'s completed record (a plain ``INSERT``: if any other request holds the
  key, the whole statement fails and nothing of it remains).

Anything else — another key kind or role, an unknown campaign or user, a state that refuses
triggers, a subscribed webhook endpoint, a key another request holds, a trigger already recorded
under this key — answers :class:`Handover` having written nothing, and the request continues
down the general path (the idempotency middleware and the route), which produces the errors,
the fan-out and the replays. The statement is built with SQLAlchemy once per process, compiled
for asyncpg, and run on the pool's driver connection: the per-request cost is the driver's alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asyncpg.exceptions import UniqueViolationError
from sqlalchemy import (
    String,
    Table,
    and_,
    case,
    exists,
    false,
    func,
    literal_column,
    null,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import array

from clarion.api.fast_path import Compiled, KeyRow, key_cte
from clarion.api.idempotency import PLAIN_MARK
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
    """The general path must answer; nothing was written. ``key`` is what the statement found
    for the bearer value (``None``: no such key), so the caller need not resolve it again;
    ``resolved`` is false when the statement did not finish and found nothing."""

    key: KeyRow | None
    resolved: bool = True


# The statement's inputs, in positional order, with their SQL types. Everything else in it
# (channel names, reasons, states, roles) is a constant rendered into the SQL once.
INPUTS: dict[str, tuple[str, Any]] = {
    "digest": ("varchar", String),
    "campaign_id": ("bigint", postgresql.BIGINT),
    "external_id": ("varchar", String),
    "idempotency_key": ("varchar", String),
    "fingerprint": ("varchar", String),
    "request_id": ("varchar", String),
    "now": ("timestamptz", UTCDateTime),
    "expires_at": ("timestamptz", UTCDateTime),
    "trigger_public_id": ("varchar", String),
    "message_public_id": ("varchar", String),
    "event_public_id": ("varchar", String),
    "event": ("jsonb", JSONDoc),
    "context": ("jsonb", JSONDoc),
}


def _input(name: str) -> str:
    """The placeholder of one input (``$n::type``)."""
    return f"${list(INPUTS).index(name) + 1}::{INPUTS[name][0]}"


def _input_column(name: str) -> Any:
    return literal_column(_input(name), type_=INPUTS[name][1])


def _look() -> Any:
    """Key, campaign, user, the user's eligibility, and whether this request may be answered
    here (``ok``): a secret key that may trigger, a campaign in a state that takes triggers,
    a known user, and no webhook endpoint listening for the message's first event."""
    key = key_cte(_input_column("digest"))
    reason = case(
        *[
            (
                CAMPAIGNS.c.channel == channel,
                ineligibility_reason(USERS, channel=channel, subscription_id=CAMPAIGNS.c.subscription_id),
            )
            for channel in CHANNELS
        ],
        else_=null(),
    ).label("reason")
    hooked = exists().where(
        ENDPOINTS.c.project_id == CAMPAIGNS.c.project_id,
        ENDPOINTS.c.status == "active",
        ENDPOINTS.c.event_types.op("?|")(array(list(FAST_WEBHOOK_TYPES))),
    )
    ok = and_(
        key.c.scope == "secret",
        key.c.role.in_(TRIGGER_ROLES),
        CAMPAIGNS.c.state.not_in(sorted(UNTRIGGERABLE_STATES)),
        CAMPAIGNS.c.archived_at.is_(None),
        USERS.c.id.is_not(None),
        ~hooked,
    )
    return select(
        key.c.id,
        key.c.project_id,
        key.c.organization_id,
        key.c.scope,
        key.c.role,
        CAMPAIGNS.c.channel,
        USERS.c.id.label("user_id"),
        reason,
        func.coalesce(ok, false()).label("ok"),
    ).select_from(
        key.outerjoin(
            CAMPAIGNS, and_(CAMPAIGNS.c.id == _input_column("campaign_id"), CAMPAIGNS.c.project_id == key.c.project_id)
        ).outerjoin(
            USERS, and_(USERS.c.project_id == key.c.project_id, USERS.c.external_id == _input_column("external_id"))
        )
    )


# Everything the request writes, each step fed by the one before, so a refused look writes
# nothing and a trigger already recorded under this key (its idempotency record expired)
# stops at the first step. The idempotency record is inserted completed, with the response
# built here; a plain INSERT, so a key another request holds fails the whole statement.
_WRITE = """
WITH look AS ({look}),
t AS (
    INSERT INTO triggers (public_id, project_id, campaign_id, kind, state, event, idempotency_key,
                          recipients, skipped, materialised_at, created_at, updated_at)
    SELECT {trigger_public_id}, look.project_id, {campaign_id}, 'user', 'ready', {event}, {idempotency_key},
           1, (look.reason IS NOT NULL)::int, {now}, {now}, {now}
    FROM look WHERE look.ok
    ON CONFLICT (campaign_id, idempotency_key) DO NOTHING
    RETURNING id
), m AS (
    INSERT INTO messages (public_id, project_id, campaign_id, trigger_id, user_id, channel, state,
                          skip_reason, due_at, attempts, context, created_at, updated_at)
    SELECT {message_public_id}, look.project_id, {campaign_id}, t.id, look.user_id, look.channel,
           {message_state}, look.reason, {now}, 0, {context}, {now}, {now}
    FROM t, look
    RETURNING id
), e AS (
    INSERT INTO message_events (public_id, project_id, message_id, campaign_id, type, data, created_at)
    SELECT {event_public_id}, look.project_id, m.id, {campaign_id}, {message_state},
           CASE WHEN look.reason IS NOT NULL THEN jsonb_build_object('reason', look.reason) END, {now}
    FROM m, look
), c AS (
    INSERT INTO campaign_counter_deltas (campaign_id, total, skipped)
    SELECT {campaign_id}, 1, (look.reason IS NOT NULL)::int FROM m, look
), answer AS (
    SELECT json_build_object(
        'success', true, 'trigger_id', {trigger_public_id}, 'campaign_id', {campaign_id}, 'recipients', 1,
        'messages', json_build_array(json_build_object(
            'message_id', {message_public_id}, 'user_id', look.user_id, 'external_id', {external_id},
            'state', {message_state}, 'skip_reason', look.reason
        ))
    )::text AS body
    FROM m, look
), i AS (
    INSERT INTO idempotency_keys (scope, key, fingerprint, state, status_code, content_type, body,
                                  request_id, locked_until, created_at, expires_at)
    SELECT '{scope_prefix}' || look.id, {idempotency_key}, {fingerprint}, 'completed', 200,
           'application/json', {plain_mark} || convert_to(answer.body, 'UTF8'), {request_id},
           {now}, {now}, {expires_at}
    FROM answer, look
    WHERE {idempotency_key} IS NOT NULL
)
SELECT look.id, look.project_id, look.organization_id, look.scope, look.role, (SELECT body FROM answer) AS body
FROM look
"""


def _statement_sql() -> str:
    return _WRITE.format(
        look=Compiled.of(_look(), list(INPUTS)).sql,
        scope_prefix=SCOPE_PREFIX,
        plain_mark=f"'\\x{PLAIN_MARK.hex()}'::bytea",
        message_state="(CASE WHEN look.reason IS NULL THEN 'queued' ELSE 'skipped' END)",
        **{name: _input(name) for name in INPUTS},
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


@functools.cache
def _statement() -> Compiled:
    """Built once per process, on first use (the models must be loaded)."""
    return Compiled(_statement_sql(), list(INPUTS))


@dataclass(frozen=True)
class Claim:
    """The request's `Idempotency-Key` and what the record of it holds."""

    key: str
    fingerprint: str
    request_id: str | None
    ttl_seconds: float


async def fire_one_user(
    db: Database,
    *,
    digest: str,
    campaign_id: int,
    external_id: str,
    event: dict[str, Any],
    claim: Claim | None,
) -> bytes | Handover:
    """The response body of a one-user trigger done here, or :class:`Handover` having written
    nothing."""
    now = utcnow()
    statement = _statement()
    values = {
        "digest": digest,
        "campaign_id": campaign_id,
        "external_id": external_id,
        "idempotency_key": claim.key if claim else None,
        "fingerprint": claim.fingerprint if claim else None,
        "request_id": claim.request_id if claim else None,
        "now": now,
        "expires_at": now + timedelta(seconds=claim.ttl_seconds) if claim else now,
        "trigger_public_id": prefixed_ulid("trg"),
        "message_public_id": prefixed_ulid("msg"),
        "event_public_id": prefixed_ulid("evt"),
        "event": json_dumps(event),
        "context": json_dumps({"attributes": {}, "event": event}),
    }
    async with db.driver_connection() as connection:
        try:
            row = await connection.fetchrow(statement.sql, *statement.args(values))
        except UniqueViolationError:
            # The Idempotency-Key is held by another request (or by an expired record): the
            # idempotency middleware sorts out which, and nothing here was written.
            return Handover(None, resolved=False)
    if row is None:
        return Handover(None)
    key = KeyRow(row["id"], row["project_id"], row["organization_id"], row["scope"], row["role"])
    body: str | None = row["body"]
    if body is None:
        return Handover(key)
    return body.encode()
