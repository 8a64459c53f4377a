"""Single-user triggers (issue #6): `POST /campaigns/{id}/trigger` with one `user` and an
`event`, each with its own `Idempotency-Key`, against a real uvicorn server (2 workers, API only)
on a throw-away PostgreSQL database, with one `clarion worker` process sending the messages
through the project's default `capture` provider.

    python -m bench triggers

Phases, all in one run and through the same server and load generator:

- closed loop: ``BENCH_TRIGGERS_CLIENTS`` clients fire ``BENCH_TRIGGERS_N`` triggers → req/s,
  p50/p99;
- open loop: ``BENCH_TRIGGERS_RATE`` arrivals/s for ``BENCH_TRIGGERS_SECONDS`` s, at most
  ``BENCH_TRIGGERS_INFLIGHT`` requests in flight; latency counts from the scheduled arrival, so a
  server that falls behind shows it (no coordinated omission);
- baselines: the cheapest authenticated GET (`GET /me`) through the same server and clients, and
  a raw asyncpg INSERT of one message-like row per request (same concurrency).

CPU per request of the uvicorn workers and of the PostgreSQL backends is read from /proc (the
figure to trust on a shared machine); the PostgreSQL figure covers every backend of the
database, so it includes the sending worker's queries when the worker runs alongside. Afterwards
every trigger must have exactly one message, and every message must have been sent.

``BENCH_TRIGGERS_WORKER``: ``during`` (default) sends while triggers arrive; ``after`` pauses the
worker (SIGSTOP) during the measured phases and lets it drain afterwards, so the CPU figures are
the API's alone; ``0`` runs no worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench import wrk
from bench.cpu_split import _children, _cpu, _pg_backends
from bench.harness import Env, environment

N = int(os.environ.get("BENCH_TRIGGERS_N", "5000"))
CLIENTS = int(os.environ.get("BENCH_TRIGGERS_CLIENTS", "16"))
RATE = float(os.environ.get("BENCH_TRIGGERS_RATE", "500"))
SECONDS = float(os.environ.get("BENCH_TRIGGERS_SECONDS", "10"))
INFLIGHT = int(os.environ.get("BENCH_TRIGGERS_INFLIGHT", "32"))
USERS = int(os.environ.get("BENCH_TRIGGERS_USERS", "2000"))
WORKER = os.environ.get("BENCH_TRIGGERS_WORKER", "during")
# The closed loop runs under wrk when it is installed (BENCH_TRIGGERS_WRK=0 forces aiohttp).
WRK = os.environ.get("BENCH_TRIGGERS_WRK", "1") != "0" and wrk.available()
WRK_SECONDS = float(os.environ.get("BENCH_TRIGGERS_WRK_SECONDS", "10"))
POOL = int(os.environ.get("BENCH_TRIGGERS_POOL", "4"))  # per uvicorn worker, no overflow
WARM_UP = 640  # at the largest concurrency of any phase, so every pool is at its working size
TARGET_RATE = 1000.0
TARGET_P99_MS = 50.0


class Stats:
    def __init__(self, label: str) -> None:
        self.label = label
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.app_cpu = 0.0
        self.pg_cpu = 0.0
        self.late = 0
        # Filled when an external load generator (wrk) measured the phase: it reports a count
        # and percentiles rather than each latency.
        self.reported_count: int | None = None
        self.reported_ms: dict[float, float] = {}
        self.reported_max_ms = 0.0
        self.timeline: list[tuple[float, float]] = []  # (seconds into the phase, latency)
        self.wal_bytes = 0  # PostgreSQL WAL written during the phase (0: not measured)

    @property
    def count(self) -> int:
        return self.reported_count if self.reported_count is not None else len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if q in self.reported_ms:
            return self.reported_ms[q]
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def slow_seconds(self, threshold_ms: float) -> str:
        """The seconds of an open loop whose slowest request took over ``threshold_ms``."""
        worst: dict[int, float] = {}
        for at, latency in self.timeline:
            worst[int(at)] = max(worst.get(int(at), 0.0), 1000 * latency)
        slow = [f"{second}s: {ms:.0f} ms" for second, ms in sorted(worst.items()) if ms > threshold_ms]
        return ", ".join(slow) or "none"

    def line(self) -> str:
        text = (
            f"  {self.label}: {self.count} in {self.elapsed:.2f}s = {self.rate:,.0f}/s;"
            f" latency p50 {self.pct(0.50):.1f} ms, p99 {self.pct(0.99):.1f} ms,"
            f" max {max(self.reported_max_ms, 1000 * max(self.latencies, default=0)):.1f} ms"
        )
        if self.app_cpu or self.pg_cpu:
            text += (
                f"; CPU/request: app {1000 * self.app_cpu / self.count:.2f} ms,"
                f" postgres {1000 * self.pg_cpu / self.count:.2f} ms"
            )
        if self.wal_bytes:
            text += f"; WAL/request {self.wal_bytes / self.count:,.0f} bytes"
        if self.late:
            text += f"; {self.late} arrivals waited for an in-flight slot"
        return text


Send = Callable[[int], Awaitable[None]]


class CpuMeter:
    """CPU seconds used by the uvicorn workers and the PostgreSQL backends of this database
    between ``start()`` and ``stop()``. Pooled connections come and go (overflow connections
    close), so /proc is sampled every 0.2 s and a backend's last reading counts even after it
    exited; a process first seen after ``start()`` counts from zero."""

    def __init__(self, env: Env | None) -> None:
        self.env = env
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.task: asyncio.Task[None] | None = None

    def _sample(self, initial: bool) -> None:
        assert self.env is not None
        app = [self.env.server_pid, *_children(self.env.server_pid)]
        for side, pids in (("app", app), ("pg", _pg_backends(self.env.db_name))):
            for pid in pids:
                value = _cpu(pid)
                if value <= 0:
                    continue
                self.first.setdefault((side, pid), value if initial else 0.0)
                self.last[(side, pid)] = value

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._sample(False)

    def start(self) -> None:
        if self.env is None:
            return
        self._sample(True)
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> tuple[float, float]:
        if self.env is None or self.task is None:
            return 0.0, 0.0
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self._sample(False)
        used = {"app": 0.0, "pg": 0.0}
        for (side, pid), value in self.last.items():
            used[side] += value - self.first.get((side, pid), 0.0)
        return used["app"], used["pg"]


async def closed_loop(stats: Stats, env: Env | None, count: int, clients: int, send: Send) -> Stats:
    """``clients`` workers each send the next request as soon as their previous one returns."""
    counter = iter(range(count))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await send(i)
            stats.latencies.append(time.perf_counter() - start)

    meter = CpuMeter(env)
    meter.start()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    stats.elapsed = time.perf_counter() - start
    stats.app_cpu, stats.pg_cpu = await meter.stop()
    return stats


WRK_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  local headers = {["Authorization"] = "Bearer %(key)s", ["Content-Type"] = "application/json"}
  if %(trigger)s then
    headers["Idempotency-Key"] = "%(prefix)s-" .. counter
    local user = '{"user":{"external_id":"t' .. (counter %% %(users)d) .. '"},'
    local body = user .. '"event":{"order":"%(prefix)s-' .. counter .. '"}}'
    return wrk.format("POST", nil, headers, body)
  end
  return wrk.format("GET", nil, headers, nil)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


async def wrk_closed_loop(
    stats: Stats, env: Env, url: str, *, key: str, trigger: bool, prefix: str, seconds: float, clients: int
) -> Stats:
    """The closed loop driven by wrk (one thread, ``clients`` connections, ``seconds`` long): a
    load generator in C costs the two cores a few µs per request instead of aiohttp's ~0.5 ms."""
    script = WRK_SCRIPT % {"key": key, "trigger": "true" if trigger else "false", "prefix": prefix, "users": USERS}
    meter = CpuMeter(env)
    meter.start()
    requests, p50, p99, worst = await wrk.run(script, url, seconds=seconds, clients=clients)
    stats.app_cpu, stats.pg_cpu = await meter.stop()
    stats.elapsed = seconds  # wrk's own window; the start-up of the process is not load
    stats.reported_count = requests
    stats.reported_ms = {0.50: p50 / 1000, 0.99: p99 / 1000}
    stats.reported_max_ms = worst / 1000
    return stats


async def open_loop(stats: Stats, env: Env, rate: float, seconds: float, inflight: int, send: Send) -> Stats:
    """Arrivals every ``1/rate`` s; at most ``inflight`` outstanding (later arrivals wait for a
    slot, and their latency still counts from their scheduled arrival)."""
    total = int(rate * seconds)
    slots = asyncio.Semaphore(inflight)
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        try:
            await send(i)
        finally:
            slots.release()
        stats.latencies.append(time.perf_counter() - due)
        stats.timeline.append((due - start, stats.latencies[-1]))

    # The load generator must not pause: a full collection of this process's heap would hold
    # every arrival behind it and be measured as server latency.
    gc.collect()
    gc.disable()
    meter = CpuMeter(env)
    meter.start()
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots.locked():
            stats.late += 1
        await slots.acquire()
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    stats.elapsed = time.perf_counter() - start
    gc.enable()
    stats.app_cpu, stats.pg_cpu = await meter.stop()
    return stats


async def _json(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any) -> Any:
    async with session.request(method, url, data=orjson.dumps(body), headers=headers) as r:
        text = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {url}: {r.status} {text[:300]!r}")
        return orjson.loads(text)


async def _campaign(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> int:
    providers = (await _json(http, "GET", f"{base}/api/client/providers?limit=100", headers, None))["results"]
    provider_id = next(p["id"] for p in providers if p["group"] == "email" and p["type"] == "capture")
    subs = (await _json(http, "GET", f"{base}/api/client/subscriptions?limit=100", headers, None))["results"]
    subscription_id = next(s["id"] for s in subs if s["channel"] == "email")
    campaign = await _json(
        http,
        "POST",
        f"{base}/api/client/campaigns",
        headers,
        {"type": "trigger", "name": "Bench", "subscription_id": subscription_id, "provider_id": provider_id},
    )
    await _json(
        http,
        "POST",
        f"{base}/api/client/templates",
        headers,
        {
            "type": "email",
            "campaign_id": campaign["id"],
            "locale": "en",
            "data": {
                "from": {"name": "Clarion", "address": "hello@example.com"},
                "subject": "Your order {{ event.order }}",
                "html": "<p>Hello {{ user.first_name }}, order {{ event.order }} has shipped.</p>",
                "editor": "code",
            },
        },
    )
    await _json(http, "PATCH", f"{base}/api/client/campaigns/{campaign['id']}", headers, {"state": "scheduled"})
    return int(campaign["id"])


async def _users(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> None:
    for start in range(0, USERS, 100):
        batch = [
            {"external_id": f"t{i}", "email": f"t{i}@bench.example", "data": {"first_name": f"User {i}"}}
            for i in range(start, min(USERS, start + 100))
        ]
        result = await _json(http, "POST", f"{base}/api/client/users/batch", headers, batch)
        if result.get("failed"):
            raise RuntimeError(f"users/batch: {result}")


def _pg_url(env: Env) -> str:
    return env.database_url.replace("+asyncpg", "")


async def _wal_position(env: Env) -> int:
    """PostgreSQL's current WAL position in bytes: the difference over a phase is what it wrote,
    a figure the machine's CPU drift does not move."""
    conn = await asyncpg.connect(_pg_url(env))
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await conn.close()


async def _wait_sent(env: Env, campaign_id: int, timeout: float, quiet: bool = False) -> tuple[int, int]:
    """(sent or delivered, still queued/sending) once the worker drained or the timeout passed."""
    conn = await asyncpg.connect(_pg_url(env))
    try:
        deadline = time.monotonic() + timeout
        while True:
            done, pending = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE state IN ('sent', 'delivered')),"
                " count(*) FILTER (WHERE state IN ('queued', 'sending')) FROM messages WHERE campaign_id = $1",
                campaign_id,
            )
            if quiet and (pending == 0 or time.monotonic() > deadline):
                return int(done), int(pending)
            if pending == 0 or time.monotonic() > deadline:
                states = await conn.fetch(
                    "SELECT state, count(*) FROM messages WHERE campaign_id = $1 GROUP BY state", campaign_id
                )
                print(f"  message states: {dict((r[0], r[1]) for r in states)}", flush=True)
                return int(done), int(pending)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _verify(env: Env, campaign_id: int, answered: int, unanswered: int) -> int:
    """Every trigger has exactly one message and the campaign counts them all. ``unanswered``:
    requests the load generator sent but stopped waiting for (at most one per wrk connection),
    which the server may still have carried out. Returns the number of triggers recorded."""
    conn = await asyncpg.connect(_pg_url(env))
    try:
        triggers = await conn.fetchval("SELECT count(*) FROM triggers WHERE campaign_id = $1", campaign_id)
        messages = await conn.fetchval("SELECT count(*) FROM messages WHERE campaign_id = $1", campaign_id)
        wrong = await conn.fetchval(
            "SELECT count(*) FROM triggers t WHERE t.campaign_id = $1"
            " AND (SELECT count(*) FROM messages m WHERE m.trigger_id = t.id) <> 1",
            campaign_id,
        )
        total = await conn.fetchval(
            "SELECT total + coalesce((SELECT sum(total) FROM campaign_counter_deltas WHERE campaign_id = $1), 0)"
            " FROM campaigns WHERE id = $1",
            campaign_id,
        )
    finally:
        await conn.close()
    print(
        f"  check: {answered} triggers answered 200 (+ up to {unanswered} in flight at a window's end);"
        f" {triggers} trigger rows, {messages} messages, {wrong} triggers without exactly one message,"
        f" campaign total {total}",
        flush=True,
    )
    assert answered <= triggers <= answered + unanswered
    assert messages == triggers and wrong == 0 and total == triggers
    return int(triggers)


async def _raw_insert_baseline(env: Env, campaign_id: int, count: int) -> Stats:
    """One message-like row per request (a copy of `messages` with its indexes and unique
    constraint, no foreign keys), through an asyncpg pool of the same concurrency."""
    pool = await asyncpg.create_pool(_pg_url(env), min_size=CLIENTS, max_size=CLIENTS)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE bench_messages (LIKE messages INCLUDING ALL)")
        sql = (
            "INSERT INTO bench_messages (public_id, project_id, campaign_id, trigger_id, user_id, channel, state,"
            " due_at, attempts, context, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, 'email', 'queued', now(), 0, $6::jsonb, now(), now())"
        )

        async def send(i: int) -> None:
            async with pool.acquire() as conn:
                await conn.execute(
                    sql,
                    f"msg_{uuid.uuid4().hex[:26]}",
                    env.project_id,
                    campaign_id,
                    i + 1,
                    i % USERS + 1,
                    orjson.dumps({"attributes": {}, "event": {"order": i}}).decode(),
                )

        stats = Stats("baseline raw asyncpg INSERT of a message-like row")
        return await closed_loop(stats, env, count, CLIENTS, send)
    finally:
        await pool.close()


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # A few pooled connections per uvicorn worker and no overflow: a trigger holds its
        # connection for one round trip, so a handful serve 1,000+ requests/s, and PostgreSQL on
        # two cores does more with few busy backends than with one per request in flight (each
        # extra one adds context switches and lock traffic). Requests beyond the pool wait for a
        # connection in the API process; overflow connections would instead be opened and closed
        # on every burst. docs/sending.md, "Scaling", says the same for deployments.
        settings = {"CLARION_DB_POOL_SIZE": str(POOL), "CLARION_DB_MAX_OVERFLOW": "0"}
        async with environment(Path(tmp), worker=WORKER != "0", settings=settings) as env:
            base = env.base_url
            auth = {"Authorization": f"Bearer {env.secret_key}", "Content-Type": "application/json"}
            connector = aiohttp.TCPConnector(limit=max(CLIENTS, INFLIGHT))
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
                campaign_id = await _campaign(http, base, auth)
                await _users(http, base, auth)
                url = f"{base}/api/client/campaigns/{campaign_id}/trigger"
                run_id = uuid.uuid4().hex[:8]
                fired = 0
                unanswered = 0

                def trigger(phase: str) -> Send:
                    async def send(i: int) -> None:
                        nonlocal fired
                        body = {"user": {"external_id": f"t{i % USERS}"}, "event": {"order": f"{phase}-{i}"}}
                        headers = {**auth, "Idempotency-Key": f"{run_id}-{phase}-{i}"}
                        async with http.post(url, data=orjson.dumps(body), headers=headers) as r:
                            payload = await r.read()
                            if r.status != 200:
                                raise RuntimeError(f"trigger: {r.status} {payload[:300]!r}")
                        fired += 1

                    return send

                async def me(_: int) -> None:
                    async with http.get(f"{base}/api/client/me", headers=auth) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"GET /me: {r.status}")

                # Warm-up (connections, caches, the worker's first batches), not measured.
                # Opening a pooled connection costs tens of milliseconds; a phase that grows the
                # pools would measure that instead of triggers.
                await closed_loop(Stats("warm-up"), env, WARM_UP, max(CLIENTS, INFLIGHT), trigger("warm"))
                await closed_loop(Stats("warm-up"), env, 300, CLIENTS, me)
                if env.worker_pid:
                    await _wait_sent(env, campaign_id, timeout=60, quiet=True)
                if WORKER == "after":
                    os.kill(env.worker_pid, signal.SIGSTOP)
                worker_cpu0 = _cpu(env.worker_pid) if env.worker_pid else 0.0

                wal_start = await _wal_position(env)
                if WRK:
                    closed = await wrk_closed_loop(
                        Stats(f"closed loop, {CLIENTS} clients (wrk, {WRK_SECONDS:g}s): POST /trigger"),
                        env,
                        url,
                        key=env.secret_key,
                        trigger=True,
                        prefix=f"{run_id}-wrk",
                        seconds=WRK_SECONDS,
                        clients=CLIENTS,
                    )
                    fired += closed.count
                    unanswered = CLIENTS  # in flight when wrk's window closed: sent, not counted
                    closed.wal_bytes = await _wal_position(env) - wal_start
                    print(closed.line(), flush=True)
                    base_get = await wrk_closed_loop(
                        Stats(f"baseline closed loop, {CLIENTS} clients (wrk): GET /me"),
                        env,
                        f"{base}/api/client/me",
                        key=env.secret_key,
                        trigger=False,
                        prefix=run_id,
                        seconds=WRK_SECONDS,
                        clients=CLIENTS,
                    )
                    print(base_get.line(), flush=True)
                else:
                    closed = await closed_loop(
                        Stats(f"closed loop, {CLIENTS} clients: POST /trigger"), env, N, CLIENTS, trigger("closed")
                    )
                    closed.wal_bytes = await _wal_position(env) - wal_start
                    print(closed.line(), flush=True)
                    base_get = await closed_loop(
                        Stats(f"baseline closed loop, {CLIENTS} clients: GET /me"), env, N, CLIENTS, me
                    )
                    print(base_get.line(), flush=True)
                opened = await open_loop(
                    Stats(f"open loop {RATE:,.0f}/s for {SECONDS:.0f}s (≤ {INFLIGHT} in flight): POST /trigger"),
                    env,
                    RATE,
                    SECONDS,
                    INFLIGHT,
                    trigger("open"),
                )
                print(opened.line(), flush=True)
                print(f"    seconds with a request over {TARGET_P99_MS:.0f} ms: {opened.slow_seconds(TARGET_P99_MS)}")
                open_get = await open_loop(
                    Stats(f"baseline open loop {RATE:,.0f}/s: GET /me"), env, RATE, SECONDS, INFLIGHT, me
                )
                print(open_get.line(), flush=True)
            raw = await _raw_insert_baseline(env, campaign_id, N)
            print(raw.line(), flush=True)

            fired = await _verify(env, campaign_id, fired, unanswered)
            if env.worker_pid:
                if WORKER == "after":
                    os.kill(env.worker_pid, signal.SIGCONT)
                drain_start, wal_before_drain = time.perf_counter(), await _wal_position(env)
                done, pending = await _wait_sent(env, campaign_id, timeout=300)
                drained = time.perf_counter() - drain_start
                drain_wal = await _wal_position(env) - wal_before_drain
                worker_cpu = _cpu(env.worker_pid) - worker_cpu0
                measured = fired - WARM_UP  # the warm-up's were sent before the measurement
                print(
                    f"  sending worker ({WORKER}): {done} of {fired} messages sent, {pending} still queued"
                    f" ({drained:.1f} s after the last phase); its own CPU {1000 * worker_cpu / measured:.2f} ms"
                    " per message",
                    flush=True,
                )
                if WORKER == "after":
                    print(f"  WAL per message sent (the drain): {drain_wal / max(1, measured):,.0f} bytes", flush=True)
                assert pending == 0 and done == fired

    generator = "wrk (closed loops) and aiohttp in this process (open loops)" if WRK else "aiohttp in this process"
    print(f"  server: uvicorn, 2 workers, PostgreSQL; load generator: {generator}; users: {USERS}")
    print(f"  ratio trigger/GET /me (closed loop) = {closed.rate / base_get.rate:.3f}")
    print(f"  ratio trigger/raw INSERT (closed loop) = {closed.rate / raw.rate:.3f}")
    print(
        f"  target ≥ {TARGET_RATE:,.0f} req/s sustained: {'met' if closed.rate >= TARGET_RATE else 'NOT met'}"
        f" ({closed.rate:,.0f}/s); p99 < {TARGET_P99_MS:.0f} ms at {RATE:,.0f} req/s:"
        f" {'met' if opened.pct(0.99) < TARGET_P99_MS and opened.rate >= 0.98 * RATE else 'NOT met'}"
        f" (p99 {opened.pct(0.99):.1f} ms at {opened.rate:,.0f}/s)",
        flush=True,
    )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
