"""Where a batch of events for known users enters on PostgreSQL: an ASGI middleware beside the
one-user trigger's (inside the conventions and rate-limit middlewares, in front of the
idempotency middleware and the routes).

It takes ``POST /api/client/events`` with a secret or publishable key, a JSON body and no
``Idempotency-Key``, and answers ``204`` through :func:`clarion.events.fast_ingest.ingest_known`
when that applies. Everything else, and every batch that function hands over, continues down the
stack with its body replayed and the key it resolved left on the request.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.api.auth import bearer_token
from clarion.api.fast_path import BufferedBody, leave_principal, read_head
from clarion.core.db import Database
from clarion.core.ids import hash_key
from clarion.events.fast_ingest import Handover, ingest_known, parse_known

PATH = "/api/client/events"
MAX_BODY = 1024 * 1024  # 100 events with payloads; larger bodies take the general path


class FastEventsMiddleware:
    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db
        self.enabled = db.is_postgres

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        head = read_head(scope)
        token = bearer_token(None, head.authorization)
        if token is None or token[:3] not in ("sk_", "pk_") or not head.is_json or head.idempotency_key is not None:
            await self.app(scope, receive, send)
            return
        buffered = BufferedBody(receive)
        body = await buffered.read(MAX_BODY)
        if body is None:
            await self.app(scope, buffered.replay, send)
            return
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:
            await self.app(scope, buffered.replay, send)
            return
        parsed = parse_known(items)
        if parsed is None:
            await self.app(scope, buffered.replay, send)
            return
        rows, externals = parsed
        scope_of_key = "secret" if token.startswith("sk_") else "public"
        outcome = await ingest_known(
            self.db, digest=hash_key(token), scope=scope_of_key, rows=rows, externals=externals
        )
        if isinstance(outcome, Handover):
            leave_principal(scope.setdefault("state", {}), outcome.key, token)
            await self.app(scope, buffered.replay, send)
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
