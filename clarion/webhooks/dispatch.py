"""Webhook dispatch: the worker's ``WorkSource`` for the delivery outbox.

Batches are claimed with ``claim_due`` (so any number of workers share the table) and posted
concurrently through one pooled aiohttp session (bounded by ``webhook_concurrency``). The work is
pipelined: while a batch is being posted, the previous batch's outcomes are written (attempt rows
in one multi-row insert, the successes in one UPDATE, endpoint health) and then the next batch is
claimed, so the database and the HTTP side overlap instead of taking turns.

Guarantees: at-least-once (a worker that dies mid-batch leaves its rows ``running`` under a lease;
they are claimed again when it expires, with the same ``webhook-id``); retries with exponential
backoff and full jitter until ``webhook_retry_window_seconds`` after publication; ``Retry-After``
honoured on 429/503; ``410 Gone`` disables the endpoint at once, and the worker's other requests
to it that have not started yet are not sent (their deliveries are held); an endpoint whose
attempts have all failed for ``webhook_disable_after_seconds`` is disabled. Deliveries of a
non-active endpoint are ``held`` and re-queued when it is re-enabled, if still inside their window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
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
from clarion.webhooks.targets import RESOLUTION_TTL_SECONDS, AddressRefused, GuardedResolver, dispatch_refusal

log = logging.getLogger("clarion.webhooks")

SNIPPET_BYTES = 1024
USER_AGENT = f"Clarion-Webhooks/{__version__}"
GONE_NOT_SENT = "not sent: the endpoint answered 410 Gone to another delivery"


@dataclass
class PostResult:
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    snippet: str | None = None
    error: str | None = None
    retry_after: float | None = None
    sent: bool = True  # False: no request was made (the endpoint answered 410 to another delivery)

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
    """Posts signed webhooks through one aiohttp session: target rules, pooled keep-alive
    connections (up to ``concurrency``), a total timeout per request, bounded reads.

    Host names are resolved by :class:`GuardedResolver`, which refuses non-global addresses unless
    ``webhook_allow_private``; the connector connects to exactly the addresses it approved.
    Redirects are not followed and proxy settings from the environment are ignored.
    """

    def __init__(
        self, settings: Settings, *, concurrency: int | None = None, resolver: AbstractResolver | None = None
    ) -> None:
        """``resolver``: the DNS resolver that :class:`GuardedResolver` wraps (aiohttp's default)."""
        self.settings = settings
        self.allow_private = settings.webhook_allow_private
        self.limit = max(1, concurrency or settings.webhook_concurrency)
        self._slots = asyncio.Semaphore(self.limit)
        connector = aiohttp.TCPConnector(
            limit=self.limit,
            limit_per_host=0,
            ssl=ssl.create_default_context(),
            resolver=GuardedResolver(allow_private=self.allow_private, inner=resolver),
            ttl_dns_cache=int(RESOLUTION_TTL_SECONDS),
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
            auto_decompress=False,
        )
        self._refusals: dict[str, str | None] = {}

    def refusal(self, url: str) -> str | None:
        """URL rules and literal-address rule for ``url`` (memoised; no network)."""
        try:
            return self._refusals[url]
        except KeyError:
            if len(self._refusals) > 10_000:
                self._refusals.clear()
            reason = self._refusals[url] = dispatch_refusal(url, allow_private=self.allow_private)
            return reason

    async def post(self, url: str, body: bytes, sign: Callable[[], dict[str, str]]) -> PostResult:
        """POST ``body``; ``sign()`` builds the signature headers once a request slot is free,
        so the signed timestamp is the moment of sending. Latency is measured from then too."""
        reason = self.refusal(url)
        if reason is not None:
            return PostResult(utcnow(), 0, error=f"target refused: {reason}")
        async with self._slots:
            return await self._send(url, body, sign())

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        started_at = utcnow()
        clock = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - clock) * 1000)

        try:
            async with self._http.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                allow_redirects=False,
            ) as response:
                snippet = bytearray()
                while len(snippet) < SNIPPET_BYTES:
                    chunk = await response.content.read(SNIPPET_BYTES - len(snippet))
                    if not chunk:
                        break
                    snippet += chunk
                status = response.status
                retry_after_header = response.headers.get("Retry-After") if status in (429, 503) else None
        except TimeoutError as exc:
            return PostResult(started_at, elapsed(), error=f"timeout: {type(exc).__name__}")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return PostResult(started_at, elapsed(), error=f"target refused: {exc.os_error}")
            return PostResult(started_at, elapsed(), error=f"{type(exc).__name__}: {exc}"[:1000])
        except aiohttp.ClientError as exc:
            return PostResult(started_at, elapsed(), error=f"{type(exc).__name__}: {exc}"[:1000])
        latency = elapsed()
        log.debug("webhook POST %s -> %s in %d ms", url, status, latency)
        return PostResult(
            started_at,
            latency,
            status_code=status,
            snippet=bytes(snippet).decode("utf-8", "replace"),
            retry_after=parse_retry_after(retry_after_header, utcnow()),
        )

    async def aclose(self) -> None:
        await self._http.close()


def signing_secrets(settings: Settings, endpoint: Any, now: datetime) -> list[str]:
    """The current secret, then the previous one while its rotation grace period lasts."""
    out = [decrypt_text(settings, endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        out.append(decrypt_text(settings, endpoint.previous_secret_encrypted))
    return out


@dataclass
class Batch:
    """One claimed batch and what the dispatch needs to post it."""

    rows: list[Any]
    bodies: dict[str, str]
    endpoints: dict[int, Any]
    claimed_at: datetime
    gone: set[int] = field(default_factory=set)  # endpoints that answered 410 during this batch


class WebhookSource:
    """Claims due webhook deliveries in batches and dispatches them, pipelined:

    ``run_once`` posts batch N while, in the background, batch N-1's outcomes are recorded and
    then batch N+1 is claimed (the claim waits for the record, so an endpoint disabled by a 410 in
    N-1 is never claimed again). Outcomes are recorded even if the worker is being stopped, and
    :meth:`aclose` waits for them, releases a batch claimed but not yet posted, and closes the HTTP
    session.
    """

    topic = WEBHOOKS_TOPIC

    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self.settings = settings or db.settings
        self.batch_size = self.settings.webhook_batch_size
        self.lease = timedelta(seconds=self.settings.webhook_lease_seconds)
        self.window = timedelta(seconds=self.settings.webhook_retry_window_seconds)
        self._client: WebhookClient | None = None
        self._prefetch: asyncio.Task[Batch | None] | None = None
        self._recording: asyncio.Task[None] | None = None
        self._previous_gone: set[int] = set()

    @property
    def client(self) -> WebhookClient:
        if self._client is None:
            self._client = WebhookClient(self.settings)
        return self._client

    async def aclose(self) -> None:
        """Finish recording, give back a prefetched batch, close the HTTP session."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            try:
                batch = await prefetch
            except Exception:
                log.exception("claiming a webhook batch failed")
                batch = None
            if batch is not None:
                async with self.db.transaction() as session:
                    await queries.release_claimed(session, [r.id for r in batch.rows], utcnow(), state="queued")
        if self._recording is not None:
            await self._recording
            self._recording = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_once(self) -> int:
        if self._prefetch is not None:
            # shielded: a worker stopping while it waits leaves the claim to aclose()
            prefetch = self._prefetch
            try:
                batch = await asyncio.shield(prefetch)
            finally:
                if prefetch.done():
                    self._prefetch = None
        else:
            batch = await self._claim_after(self._recording)
        if batch is None:
            return 0
        if len(batch.rows) >= self.batch_size:
            self._prefetch = asyncio.create_task(self._claim_after(self._recording))
        results = await self._post(batch)
        # Requests already went out: record them even if the worker is being stopped (a task of its
        # own, awaited by aclose), so a graceful shutdown does not resend the batch.
        self._recording = asyncio.create_task(self._record_after(self._recording, batch, results))
        return len(batch.rows)

    async def _claim_after(self, previous: asyncio.Task[None] | None) -> Batch | None:
        if previous is not None:
            await asyncio.shield(previous)
        now = utcnow()
        async with self.db.transaction() as session:
            rows = await queries.claim_due_deliveries(session, now=now, limit=self.batch_size, lease=self.lease)
            if not rows:
                return None
            bodies = await queries.event_bodies(session, (r.event_id for r in rows))
            endpoints = await queries.endpoints_by_id(session, (r.endpoint_id for r in rows))
        return Batch(rows, bodies, endpoints, now)

    async def _post(self, batch: Batch) -> list[PostResult]:
        client = self.client
        now = batch.claimed_at
        # Endpoints that answered 410 in the previous batch: that batch's record (which disables
        # them) may not have been committed when this one was claimed.
        skip = self._previous_gone
        gone = batch.gone
        secrets_by_endpoint: dict[int, list[str] | str] = {}
        for endpoint_id, endpoint in batch.endpoints.items():
            try:
                secrets_by_endpoint[endpoint_id] = signing_secrets(self.settings, endpoint, now)
            except InvalidToken:
                secrets_by_endpoint[endpoint_id] = "signing secret cannot be decrypted with this server's secret key"

        async def deliver(row: Any) -> PostResult:
            endpoint_id = row.endpoint_id
            endpoint = batch.endpoints.get(endpoint_id)
            body = batch.bodies.get(row.event_id)
            secrets_ = secrets_by_endpoint.get(endpoint_id)
            if endpoint is None or body is None:
                return PostResult(utcnow(), 0, error="endpoint or event no longer exists")
            if isinstance(secrets_, str) or not secrets_:
                return PostResult(utcnow(), 0, error=str(secrets_))
            raw = body.encode()
            signing = secrets_

            def sign() -> dict[str, str]:
                if endpoint_id in gone or endpoint_id in skip:
                    raise _NotSent
                return signature_headers(row.id, int(time.time()), raw, signing)

            try:
                result = await client.post(endpoint.url, raw, sign)
            except _NotSent:
                return PostResult(utcnow(), 0, error=GONE_NOT_SENT, sent=False)
            if result.status_code == 410:
                gone.add(endpoint_id)
            return result

        results = list(await asyncio.gather(*(deliver(r) for r in batch.rows)))
        self._previous_gone = set(gone)
        return results

    async def _record_after(self, previous: asyncio.Task[None] | None, batch: Batch, results: list[PostResult]) -> None:
        if previous is not None:
            await asyncio.shield(previous)
        try:
            async with self.db.transaction() as session:
                await self._record(session, batch.rows, results)
        except Exception:
            # The rows stay leased and are claimed again when the lease expires (at-least-once).
            log.exception("recording a batch of %d webhook deliveries failed", len(batch.rows))

    async def _record(self, session: AsyncSession, rows: list[Any], results: list[PostResult]) -> None:
        now = utcnow()
        settings = self.settings
        existing = await queries.existing_deliveries(session, (r.id for r in rows))
        pairs = [(r, res) for r, res in zip(rows, results, strict=True) if r.id in existing]
        if not pairs:  # endpoints deleted while their deliveries were in flight
            return
        sent = [(r, res) for r, res in pairs if res.sent]
        ok_endpoints = sorted({r.endpoint_id for r, res in sent if res.succeeded})
        failed_endpoints = sorted({r.endpoint_id for r, res in sent if not res.succeeded} - set(ok_endpoints))
        gone = sorted({r.endpoint_id for r, res in sent if res.status_code == 410})

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
        statuses = await queries.endpoint_statuses(
            session, {r.endpoint_id for r, res in pairs if not res.sent or not res.succeeded}
        )

        attempts: list[dict[str, Any]] = []
        succeeded: dict[int, list[str]] = {}
        outcomes: list[dict[str, Any]] = []
        not_sent: dict[str, list[str]] = {"held": [], "queued": []}
        for row, res in pairs:
            if not res.sent:
                not_sent["queued" if statuses.get(row.endpoint_id) == "active" else "held"].append(row.id)
                continue
            error = res.error if res.error else (None if res.succeeded else f"HTTP {res.status_code}")
            attempts.append(
                {
                    "project_id": row.project_id,
                    "delivery_id": row.id,
                    "started_at": res.started_at,
                    "succeeded": res.succeeded,
                    "status_code": res.status_code,
                    "latency_ms": res.latency_ms,
                    "response_snippet": res.snippet,
                    "error": error,
                }
            )
            if res.succeeded:
                assert res.status_code is not None
                succeeded.setdefault(res.status_code, []).append(row.id)
                continue
            outcome: dict[str, Any] = {
                "b_id": row.id,
                "b_status_code": res.status_code,
                "b_error": error,
                "b_due_at": row.due_at,
                "b_completed_at": None,
                "b_now": now,
            }
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
        for status_code, ids in succeeded.items():
            await queries.mark_succeeded(session, ids, status_code=status_code, now=now)
        await queries.record_delivery_outcomes(session, outcomes)
        for state, ids in not_sent.items():
            await queries.release_claimed(session, ids, now, state=state)


class _NotSent(Exception):
    """Raised by a delivery's signer when its endpoint answered 410 in the meantime."""


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
