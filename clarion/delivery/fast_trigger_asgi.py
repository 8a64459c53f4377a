"""Where a one-user trigger enters on PostgreSQL: an ASGI middleware in front of the idempotency
middleware and the routes (inside the conventions and rate-limit middlewares, so request ids,
version checks and rate limits apply as to every request).

It recognises ``POST /api/client/campaigns/{id}/trigger`` with a secret key, a JSON body that
validates as :class:`~clarion.delivery.trigger_schemas.CampaignTrigger` and carries only
``user.external_id`` and ``event``, and answers it through
:func:`clarion.delivery.fast_trigger.fire_one_user` without routing, dependency solving or an
ORM session. Every other request, and every one-user trigger the fast path hands over, continues
down the stack unchanged: the body it read is replayed, the key it resolved is left on the
request (as :func:`clarion.api.auth.principal_for_request` would have cached it), and the
idempotency middleware claims the request's key as for any other request.
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.api.auth import bearer_token
from clarion.api.fast_path import BufferedBody, leave_principal, read_head
from clarion.api.idempotency import MAX_KEY_LENGTH, fingerprint
from clarion.core.db import Database
from clarion.core.ids import hash_key
from clarion.core.settings import Settings
from clarion.core.wakeup import Waker
from clarion.delivery.fast_trigger import Claim, Handover, fast_path_applies, fire_one_user
from clarion.delivery.sender import MESSAGES_TOPIC
from clarion.delivery.trigger_schemas import CampaignTrigger

PATH = re.compile(r"/api/client/campaigns/([1-9][0-9]{0,18})/trigger")
MAX_BODY = 64 * 1024  # larger bodies are not one-user triggers worth a fast path
MAX_ID = 2**63 - 1


class FastTriggerMiddleware:
    def __init__(self, app: ASGIApp, db: Database, waker: Waker, settings: Settings) -> None:
        self.app = app
        self.db = db
        self.waker = waker
        self.enabled = db.is_postgres
        self.ttl_seconds = float(settings.idempotency_ttl_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = PATH.fullmatch(scope["path"])
        if match is None or int(match[1]) > MAX_ID:
            await self.app(scope, receive, send)
            return
        head = read_head(scope)
        token = bearer_token(None, head.authorization)
        idempotency_key = head.idempotency_key
        if (
            token is None
            or not token.startswith("sk_")
            or not head.is_json
            or (idempotency_key is not None and not (1 <= len(idempotency_key) <= MAX_KEY_LENGTH))
            or (idempotency_key is not None and not idempotency_key.strip())
        ):
            await self.app(scope, receive, send)
            return
        buffered = BufferedBody(receive)
        body = await buffered.read(MAX_BODY)
        replay = buffered.replay
        if body is None:
            await self.app(scope, replay, send)
            return
        try:
            trigger = CampaignTrigger.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replay, send)
            return
        if not fast_path_applies(trigger):
            await self.app(scope, replay, send)
            return
        assert trigger.user is not None
        state = scope.setdefault("state", {})
        claim = None
        if idempotency_key is not None:
            claim = Claim(
                key=idempotency_key,
                fingerprint=fingerprint("POST", scope["path"], scope.get("query_string", b""), body),
                request_id=state.get("request_id"),
                ttl_seconds=self.ttl_seconds,
            )
        outcome = await fire_one_user(
            self.db,
            digest=hash_key(token),
            campaign_id=int(match[1]),
            external_id=trigger.user.external_id,
            event=trigger.event or {},
            claim=claim,
        )
        if isinstance(outcome, Handover):
            if outcome.resolved:
                leave_principal(state, outcome.key, token)
            await self.app(scope, replay, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(outcome)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": outcome})
        await self.waker.notify(MESSAGES_TOPIC)
