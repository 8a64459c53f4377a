"""`Idempotency-Key` for every POST and PATCH (contract §A4).

A record per (API key, Idempotency-Key) is created *before* the operation runs, in its own
transaction, under the table's primary key: of 50 concurrent identical requests exactly one
inserts it and executes; the rest see it in progress (409 + Retry-After) or, once it has
completed, replay the stored status, body and request id with ``Idempotent-Replayed: true``.
The fingerprint binds method, path, query and the exact body bytes. 2xx and 4xx responses are
kept for the TTL (24 h); 5xx and 429 are not, so the client may retry. A record whose executor
died stays locked for ``idempotency_lock_seconds`` and may then be taken over.

On PostgreSQL the claim is first tried as one autocommit ``INSERT … ON CONFLICT DO NOTHING``
(the common case, a fresh key, costs a single round trip). An earlier layer may instead insert
the key's record already completed inside its own write (the one-user trigger fast path,
:mod:`clarion.delivery.fast_trigger`; a plain INSERT, so it fails if anyone holds the key).
Bodies such a layer stores hold nothing secret and are kept unencrypted, marked by a leading NUL
byte (a Fernet token never starts with one).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects import postgresql
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.api.auth import principal_for_request
from clarion.api.errors import ErrorCode, problem_response
from clarion.core.clock import utcnow
from clarion.core.crypto import decrypt_bytes, encrypt_bytes
from clarion.core.db import Database
from clarion.core.queue_models import IdempotencyRecord
from clarion.core.settings import Settings
from clarion.core.sql import execute_count, insert_for

MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 4 * 1024 * 1024
PLAIN_MARK = b"\x00"  # stored body kept in clear: it holds nothing secret
RECORDS: Table = IdempotencyRecord.__table__  # type: ignore[assignment]


@dataclass
class Claim:
    outcome: Literal["execute", "replay", "mismatch", "in_progress"]
    record: IdempotencyRecord | None = None
    retry_after: int = 1


class IdempotencyStore:
    """Stored responses are encrypted at rest: a replayed create returns the key or secret it
    showed once, so the cache must protect it like the secret stores do."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.secret_key = settings.resolved_secret_key()
        self.ttl = timedelta(seconds=settings.idempotency_ttl_seconds)
        self.lock = timedelta(seconds=settings.idempotency_lock_seconds)

    def _fresh(self, scope: str, key: str, fingerprint: str, now: datetime) -> dict[str, Any]:
        """The row of a key claimed now, before its route has run."""
        return {
            "scope": scope,
            "key": key,
            "fingerprint": fingerprint,
            "state": "in_progress",
            "locked_until": now + self.lock,
            "created_at": now,
            "expires_at": now + self.ttl,
        }

    async def claim(self, scope: str, key: str, fingerprint: str) -> Claim:
        if self.db.is_postgres:
            now = utcnow()
            async with self.db.lookup() as connection:  # autocommit: no BEGIN/COMMIT round trips
                result = await connection.execute(
                    postgresql.insert(RECORDS)
                    .values(self._fresh(scope, key, fingerprint, now))
                    .on_conflict_do_nothing()
                )
                if result.rowcount == 1:
                    return Claim("execute")
        for _ in range(5):
            now = utcnow()
            async with self.db.transaction() as session:
                stmt = (
                    insert_for(session, IdempotencyRecord)
                    .values(self._fresh(scope, key, fingerprint, now))
                    .on_conflict_do_nothing()
                )
                inserted = await execute_count(session, stmt)
                if inserted == 1:
                    return Claim("execute")
                record = (
                    await session.execute(
                        select(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                    )
                ).scalar_one_or_none()
                if record is None:
                    continue
                if record.expires_at <= now:
                    await session.execute(
                        delete(IdempotencyRecord).where(
                            IdempotencyRecord.scope == scope,
                            IdempotencyRecord.key == key,
                            IdempotencyRecord.expires_at <= now,
                        )
                    )
                    continue
                if record.fingerprint != fingerprint:
                    return Claim("mismatch", record)
                if record.state == "completed":
                    return Claim("replay", record)
                if record.locked_until > now:
                    wait = math.ceil((record.locked_until - now).total_seconds())
                    return Claim("in_progress", record, retry_after=max(1, min(wait, 5)))
                # The executor died without finishing: take the record over.
                taken = await execute_count(
                    session,
                    update(IdempotencyRecord)
                    .where(
                        IdempotencyRecord.scope == scope,
                        IdempotencyRecord.key == key,
                        IdempotencyRecord.locked_until == record.locked_until,
                    )
                    .values(locked_until=now + self.lock),
                )
                if taken == 1:
                    return Claim("execute")
                return Claim("in_progress", record)
        return Claim("in_progress")

    async def complete(
        self, scope: str, key: str, status: int, content_type: str | None, body: bytes, rid: str | None
    ) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                .values(
                    state="completed",
                    status_code=status,
                    content_type=content_type,
                    body=encrypt_bytes(self.secret_key, body),
                    request_id=rid,
                )
            )

    async def release(self, scope: str, key: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.state == "in_progress",
                )
            )

    def open_body(self, record: IdempotencyRecord) -> bytes:
        if not record.body:
            return b""
        if record.body.startswith(PLAIN_MARK):
            return record.body[len(PLAIN_MARK) :]
        return decrypt_bytes(self.secret_key, record.body)

    async def purge_expired(self) -> int:
        async with self.db.transaction() as session:
            return await execute_count(
                session, delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow())
            )


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, store: IdempotencyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PATCH") or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        key = request.headers.get("idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        rid = scope.get("state", {}).get("request_id")
        if not (1 <= len(key) <= MAX_KEY_LENGTH) or not key.strip():
            response = problem_response(
                ErrorCode.idempotency_key_invalid,
                f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} characters.",
                request_id=rid,
                param="Idempotency-Key",
            )
            await response(scope, receive, send)
            return
        principal = await principal_for_request(request)
        if principal is None:
            # Unauthenticated calls get their 401 from the route; there is nothing to scope by.
            await self.app(scope, receive, send)
            return
        body = await request.body()
        surface = "admin" if scope["path"].startswith("/api/admin/") else "client"
        record_scope = f"{surface}:{principal.rate_key}"
        digest = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body)
        claim = await self.store.claim(record_scope, key, digest)

        if claim.outcome == "mismatch":
            response = problem_response(
                ErrorCode.idempotency_key_mismatch,
                "This Idempotency-Key was used with a different request.",
                request_id=rid,
                param="Idempotency-Key",
            )
            await response(scope, receive, send)
            return
        if claim.outcome == "in_progress":
            response = problem_response(
                ErrorCode.idempotency_in_progress,
                "A request with this Idempotency-Key is still being processed.",
                request_id=rid,
                param="Idempotency-Key",
                headers={"Retry-After": str(claim.retry_after)},
            )
            await response(scope, receive, send)
            return
        if claim.outcome == "replay" and claim.record is not None:
            await self._replay(claim.record, self.store.open_body(claim.record), send)
            return

        await self._execute(scope, body, send, record_scope, key, rid)

    async def _replay(self, record: IdempotencyRecord, body: bytes, send: Send) -> None:
        headers = [
            (b"content-type", (record.content_type or "application/json").encode()),
            (b"idempotent-replayed", b"true"),
        ]
        if record.request_id:
            headers.append((b"x-request-id", record.request_id.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": record.status_code or 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _execute(
        self, scope: Scope, body: bytes, send: Send, record_scope: str, key: str, rid: str | None
    ) -> None:
        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        status = 500
        content_type: str | None = None
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, content_type, size
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= MAX_STORED_BODY:
                    chunks.append(chunk)
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await self.store.release(record_scope, key)
            raise
        if status >= 500 or status == 429 or size > MAX_STORED_BODY:
            await self.store.release(record_scope, key)
        else:
            await self.store.complete(record_scope, key, status, content_type, b"".join(chunks), rid)
