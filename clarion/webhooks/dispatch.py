"""Webhook dispatch: the worker's ``WorkSource`` for the delivery outbox.

A batch is claimed with ``claim_due`` (so any number of workers share the table), posted
concurrently through one pooled ``httpx.AsyncClient`` (bounded by ``webhook_concurrency``), and
every outcome — attempt log, delivery state, endpoint health — is written in one transaction.

Guarantees: at-least-once (a worker that dies mid-batch leaves its rows ``running`` under a lease;
they are claimed again when it expires, with the same ``webhook-id``); retries with exponential
backoff and full jitter until ``webhook_retry_window_seconds`` after publication; ``Retry-After``
honoured on 429/503; ``410 Gone`` disables the endpoint at once; an endpoint whose attempts have
all failed for ``webhook_disable_after_seconds`` is disabled. Deliveries of a non-active endpoint
are ``held`` and re-queued when it is re-enabled, if still inside their window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from clarion import __version__
from clarion.core.clock import utcnow
from clarion.core.crypto import InvalidToken, decrypt_text
from clarion.core.db import Database
from clarion.core.queue import backoff_delay
from clarion.core.settings import Settings
from clarion.webhooks import queries
from clarion.webhooks.outbox import WEBHOOKS_TOPIC
from clarion.webhooks.signing import signature_headers
from clarion.webhooks.targets import TargetChecker, TargetRefused

log = logging.getLogger("clarion.webhooks")

SNIPPET_BYTES = 1024
USER_AGENT = f"Clarion-Webhooks/{__version__}"


@dataclass
class PostResult:
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    snippet: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


class WebhookClient:
    """Posts signed webhooks: target rules, pooled keep-alive connections, bounded reads.

    httpx's connection pool gets slower as it grows (every request scans the pool), so instead of
    one client with ``concurrency`` connections we keep ``concurrency / CONNECTIONS_PER_SHARD``
    small clients (one shared TLS context) and hand out request slots from a queue: the same
    concurrency, pools that stay small.
    """

    CONNECTIONS_PER_SHARD = 4

    def __init__(self, settings: Settings, *, concurrency: int | None = None) -> None:
        self.settings = settings
        limit = max(1, concurrency or settings.webhook_concurrency)
        self.checker = TargetChecker(allow_private=settings.webhook_allow_private)
        per_shard = min(limit, self.CONNECTIONS_PER_SHARD)
        shard_count = -(-limit // per_shard)
        tls = httpx.create_ssl_context()
        self._shards = [
            httpx.AsyncClient(
                verify=tls,
                timeout=httpx.Timeout(settings.webhook_timeout_seconds),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
            for _ in range(shard_count)
        ]
        self._slots: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for i in range(limit):
            self._slots.put_nowait(self._shards[i % shard_count])

    async def post(self, url: str, body: bytes, sign: Callable[[], dict[str, str]]) -> PostResult:
        """POST ``body``; ``sign()`` builds the signature headers once a connection slot is free,
        so the signed timestamp is the moment of sending. Latency is measured from then too."""
        try:
            await self.checker.check(url)
        except TargetRefused as exc:
            return PostResult(utcnow(), 0, error=f"target refused: {exc}")
        http = await self._slots.get()
        try:
            return await self._send(http, url, body, sign())
        finally:
            self._slots.put_nowait(http)

    async def _send(self, http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        started_at = utcnow()
        clock = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - clock) * 1000)

        request = http.build_request("POST", url, content=body, headers={"Content-Type": "application/json", **headers})
        try:
            response = await http.send(request, stream=True)
            try:
                snippet = bytearray()
                async for chunk in response.aiter_raw():
                    snippet += chunk
                    if len(snippet) >= SNIPPET_BYTES:
                        break
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            return PostResult(started_at, elapsed(), error=f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return PostResult(started_at, elapsed(), error=f"{type(exc).__name__}: {exc}"[:1000])
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
        return PostResult(
            started_at,
            elapsed(),
            status_code=response.status_code,
            snippet=bytes(snippet[:SNIPPET_BYTES]).decode("utf-8", "replace"),
            retry_after=retry_after,
        )

    async def aclose(self) -> None:
        await asyncio.gather(*(shard.aclose() for shard in self._shards))


def signing_secrets(settings: Settings, endpoint: Any, now: datetime) -> list[str]:
    """The current secret, then the previous one while its rotation grace period lasts."""
    out = [decrypt_text(settings, endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        out.append(decrypt_text(settings, endpoint.previous_secret_encrypted))
    return out


class WebhookSource:
    """Claims due webhook deliveries in batches and dispatches them."""

    topic = WEBHOOKS_TOPIC

    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self.settings = settings or db.settings
        self.batch_size = self.settings.webhook_batch_size
        self.lease = timedelta(seconds=self.settings.webhook_lease_seconds)
        self.window = timedelta(seconds=self.settings.webhook_retry_window_seconds)
        self._client: WebhookClient | None = None

    @property
    def client(self) -> WebhookClient:
        if self._client is None:
            self._client = WebhookClient(self.settings)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_once(self) -> int:
        now = utcnow()
        async with self.db.transaction() as session:
            rows = await queries.claim_due_deliveries(session, now=now, limit=self.batch_size, lease=self.lease)
            if not rows:
                return 0
            bodies = await queries.event_bodies(session, (r.event_id for r in rows))
            endpoints = await queries.endpoints_by_id(session, (r.endpoint_id for r in rows))
        client = self.client
        secrets_by_endpoint: dict[int, list[str] | str] = {}
        for endpoint_id, endpoint in endpoints.items():
            try:
                secrets_by_endpoint[endpoint_id] = signing_secrets(self.settings, endpoint, now)
            except InvalidToken:
                secrets_by_endpoint[endpoint_id] = "signing secret cannot be decrypted with this server's secret key"

        async def deliver(row: Any) -> PostResult:
            endpoint = endpoints.get(row.endpoint_id)
            body = bodies.get(row.event_id)
            secrets_ = secrets_by_endpoint.get(row.endpoint_id)
            if endpoint is None or body is None:
                return PostResult(utcnow(), 0, error="endpoint or event no longer exists")
            if isinstance(secrets_, str) or not secrets_:
                return PostResult(utcnow(), 0, error=str(secrets_))
            raw = body.encode()
            signing = secrets_
            return await client.post(
                endpoint.url, raw, lambda: signature_headers(row.id, int(time.time()), raw, signing)
            )

        results = await asyncio.gather(*(deliver(r) for r in rows))
        # Requests already went out: record them even if the worker is being stopped, so a
        # graceful shutdown does not resend the batch after the lease expires.
        await asyncio.shield(self._record_batch(rows, results))
        return len(rows)

    async def _record_batch(self, rows: list[Any], results: list[PostResult]) -> None:
        async with self.db.transaction() as session:
            await self._record(session, rows, results)

    async def _record(self, session: AsyncSession, rows: list[Any], results: list[PostResult]) -> None:
        now = utcnow()
        settings = self.settings
        existing = await queries.existing_deliveries(session, (r.id for r in rows))
        if len(existing) < len(rows):  # endpoints deleted while their deliveries were in flight
            kept = [(r, res) for r, res in zip(rows, results, strict=True) if r.id in existing]
            rows, results = [r for r, _ in kept], [res for _, res in kept]
            if not rows:
                return
        ok_endpoints = sorted({r.endpoint_id for r, res in zip(rows, results, strict=True) if res.succeeded})
        failed_endpoints = sorted(
            {r.endpoint_id for r, res in zip(rows, results, strict=True) if not res.succeeded} - set(ok_endpoints)
        )
        gone = sorted({r.endpoint_id for r, res in zip(rows, results, strict=True) if res.status_code == 410})

        await queries.clear_failing(session, ok_endpoints)
        await queries.mark_failing(session, failed_endpoints, now)
        await queries.disable_endpoints(
            session, gone, reason="the endpoint answered 410 Gone", now=now, failing_before=None
        )
        await queries.disable_endpoints(
            session,
            failed_endpoints,
            reason=f"every delivery failed for {settings.webhook_disable_after_seconds // 3600} h",
            now=now,
            failing_before=now - timedelta(seconds=settings.webhook_disable_after_seconds),
        )
        statuses = await queries.endpoint_statuses(session, (r.endpoint_id for r in rows))

        attempts: list[dict[str, Any]] = []
        outcomes: list[dict[str, Any]] = []
        for row, res in zip(rows, results, strict=True):
            attempts.append(
                {
                    "project_id": row.project_id,
                    "delivery_id": row.id,
                    "started_at": res.started_at,
                    "succeeded": res.succeeded,
                    "status_code": res.status_code,
                    "latency_ms": res.latency_ms,
                    "response_snippet": res.snippet,
                    "error": res.error if res.error else (None if res.succeeded else f"HTTP {res.status_code}"),
                }
            )
            outcome: dict[str, Any] = {
                "b_id": row.id,
                "b_status_code": res.status_code,
                "b_error": None,
                "b_due_at": row.due_at,
                "b_completed_at": None,
                "b_now": now,
            }
            if res.succeeded:
                outcome.update(b_state="succeeded", b_completed_at=now)
            else:
                outcome["b_error"] = attempts[-1]["error"]
                deadline = row.window_start + self.window
                if res.retry_after is not None:
                    delay = res.retry_after
                else:
                    delay = backoff_delay(
                        row.attempts, base=settings.webhook_retry_base_seconds, cap=settings.webhook_retry_cap_seconds
                    )
                next_at = now + timedelta(seconds=max(0.0, delay if math.isfinite(delay) else 0.0))
                if next_at >= deadline:
                    outcome.update(b_state="failed", b_completed_at=now)
                elif statuses.get(row.endpoint_id) != "active":
                    outcome.update(b_state="held", b_due_at=next_at)
                else:
                    outcome.update(b_state="queued", b_due_at=next_at)
            outcomes.append(outcome)
        await queries.insert_attempts(session, attempts)
        await queries.record_delivery_outcomes(session, outcomes)


async def purge_webhook_history(db: Database, *, batch: int = 5000) -> int:
    """Scheduler duty: keep ``webhook_log_retention_days`` of delivery history, in bounded batches."""
    before = utcnow() - timedelta(days=db.settings.webhook_log_retention_days)
    total = 0
    while True:
        async with db.transaction() as session:
            removed = await queries.purge_finished(session, before=before, limit=batch)
        total += removed
        if removed < batch:
            return total
