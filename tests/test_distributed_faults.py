"""Distributed mode as real processes, and its fault tests.

PostgreSQL (a fresh database) + Redis (a random namespace), ``clarion serve --no-worker``, two
``clarion worker`` processes and one ``clarion scheduler``; an aiosmtpd server (in a thread of the
test process) counts messages per recipient. Everything is set up through the HTTP API of the
serve process, and a blast is fired at a static list.

Sizes and durations are env-overridable:
- ``CLARION_TEST_BLAST_SIZE`` (default 20,000): recipients per blast;
- ``CLARION_TEST_SMTP_OUTAGE_SECONDS`` (default 60, the issue's figure): how long the SMTP server
  refuses connections in the outage test.

The fault tests' figures (duplicates after the kill, the outage's ledger) are printed in a
"fault test reports" section at the end of every pytest run (`tests/conftest.py`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from clarion.core.db import Database
from clarion.core.migrations import migrate
from tests.conftest import (
    BACKENDS,
    Backend,
    Tenant,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_settings,
    new_tenant,
    pg_url,
)

BLAST_SIZE = int(os.environ.get("CLARION_TEST_BLAST_SIZE", "20000"))
RecordProperty = Callable[[str, object], None]  # pytest's record_property fixture
OUTAGE_SECONDS = float(os.environ.get("CLARION_TEST_SMTP_OUTAGE_SECONDS", "60"))
SEND_BATCH_SIZE = 200  # MessageSource's claim batch: the most a killed worker can have in flight
DEADLINE_SECONDS = float(os.environ.get("CLARION_TEST_BLAST_DEADLINE_SECONDS", "600"))
REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("distributed"),
    pytest.mark.skipif("postgres" not in BACKENDS, reason="distributed mode needs PostgreSQL"),
]


@dataclass
class Counting:
    """aiosmtpd handler: counts accepted messages per recipient (thread-safe reads)."""

    per_rcpt: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.per_rcpt[rcpt] += 1
        return "250 2.0.0 Message accepted for delivery"

    def snapshot(self, domain: str) -> Counter[str]:
        with self.lock:
            return Counter({k: v for k, v in self.per_rcpt.items() if k.endswith("@" + domain)})


class SmtpSink:
    """aiosmtpd on a fixed free port, stoppable and restartable (connections refused meanwhile)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = Counting()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@dataclass
class Topology:
    env: dict[str, str]
    base: str
    tenant: Tenant
    sink: SmtpSink
    database: str
    logs: Path
    list_id: int
    provider_id: int
    subscription_id: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}-{time.monotonic_ns()}.log").open("wb")
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "clarion"), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def start_worker(self, index: int) -> None:
        proc = self.spawn("worker", name=f"worker{index}")
        if index < len(self.workers):
            self.workers[index] = proc
        else:
            self.workers.append(proc)

    @property
    def headers(self) -> dict[str, str]:
        return self.tenant.sk


def _wait(predicate: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def _prepare_database(name: str, data_dir: Path) -> Tenant:
    db = Database(make_settings(Backend("postgres", pg_url(name), data_dir), secret_key="distributed-secret"))
    try:
        await migrate(db)
        return await new_tenant(db)
    finally:
        await db.dispose()


def _states(database: str, campaign_id: int) -> dict[str, int]:
    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(pg_url(database).replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch(
                "SELECT state, count(*) AS n FROM messages WHERE campaign_id = $1 GROUP BY state", campaign_id
            )
        finally:
            await conn.close()
        return {r["state"]: int(r["n"]) for r in rows}

    return asyncio.run(go())


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    data_dir = tmp_path_factory.mktemp("distributed")
    name = asyncio.run(create_pg_database())
    tenant = asyncio.run(_prepare_database(name, data_dir))
    sink = SmtpSink()
    sink.start()
    port = free_port()
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": pg_url(name),
        "CLARION_DATA_DIR": str(data_dir),
        "CLARION_SECRET_KEY": "distributed-secret",
        "CLARION_REDIS_URL": REDIS_URL,
        "CLARION_REDIS_NAMESPACE": f"clarion-test-{secrets.token_hex(6)}",
        "CLARION_RATE_LIMIT_CLIENT_IP": "1000000/minute",
        "CLARION_RATE_LIMIT_GENERAL_IP": "1000000/10 seconds",
        "CLARION_RATE_LIMIT_PER_KEY": "1000000/10 seconds",
        "CLARION_SEND_RETRY_BASE_SECONDS": "0.2",
        "CLARION_SEND_RETRY_CAP_SECONDS": "2",
        "CLARION_SEND_MAX_ATTEMPTS": "1000",
        "CLARION_SEND_LEASE_SECONDS": "5",
        "CLARION_LOG_LEVEL": "warning",
    }
    topo = Topology(env, f"http://127.0.0.1:{port}", tenant, sink, name, data_dir, 0, 0, 0)
    try:
        topo.others.append(topo.spawn("serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port), name="serve"))
        topo.others.append(topo.spawn("scheduler", name="scheduler"))
        topo.start_worker(0)
        topo.start_worker(1)
        with httpx.Client(base_url=topo.base, timeout=30) as client:

            def up() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            _wait(up, timeout=60, what="clarion serve to answer /health")
            _setup_audience(client, topo)
        yield topo
    finally:
        for proc in topo.workers + topo.others:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in topo.workers + topo.others:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sink.stop()
        asyncio.run(drop_pg_database(name))


def _setup_audience(client: httpx.Client, topo: Topology) -> None:
    h = topo.headers
    users = [{"external_id": f"u{i}", "email": f"u{i}@blast.example.com"} for i in range(BLAST_SIZE)]
    lst = _ok(client.post("/api/client/lists", json={"name": "Blast", "type": "static"}, headers=h))
    for start in range(0, BLAST_SIZE, 1000):
        chunk = users[start : start + 1000]
        for sub in range(0, len(chunk), 100):  # the batch endpoint takes 100 users a call
            out = _ok(client.post("/api/client/users/batch", json=chunk[sub : sub + 100], headers=h))
            assert "error" not in str(out.get("results", ""))[:2000], str(out)[:500]
        _ok(
            client.post(
                f"/api/client/lists/{lst['id']}/users",
                json={"external_ids": [u["external_id"] for u in chunk]},
                headers=h,
            )
        )
    provider = _ok(
        client.post(
            "/api/client/providers",
            json={
                "type": "smtp",
                "group": "email",
                "name": "Sink",
                "is_default": True,
                "data": {"host": "127.0.0.1", "port": topo.sink.port, "protocol": "plain"},
            },
            headers=h,
        )
    )
    subs = _ok(client.get("/api/client/subscriptions?limit=100", headers=h))["results"]
    topo.list_id = int(lst["id"])
    topo.provider_id = int(provider["id"])
    topo.subscription_id = next(int(s["id"]) for s in subs if s["channel"] == "email")


def _fire_blast(topo: Topology, name: str) -> int:
    """A scheduled blast campaign at the static list, fired with an empty body; its id."""
    h = topo.headers
    with httpx.Client(base_url=topo.base, timeout=30) as client:
        campaign = _ok(
            client.post(
                "/api/client/campaigns",
                json={
                    "type": "blast",
                    "name": name,
                    "subscription_id": topo.subscription_id,
                    "provider_id": topo.provider_id,
                    "list_ids": [topo.list_id],
                },
                headers=h,
            )
        )
        cid = int(campaign["id"])
        _ok(
            client.post(
                "/api/client/templates",
                json={
                    "type": "email",
                    "campaign_id": cid,
                    "locale": "en",
                    "data": {
                        "from": {"name": "Clarion", "address": "hello@example.com"},
                        "subject": f"{name} for {{{{ user.external_id }}}}",
                        "html": "<p>Hello {{ user.email }}</p>",
                        "editor": "code",
                    },
                },
                headers=h,
            )
        )
        _ok(client.patch(f"/api/client/campaigns/{cid}", json={"state": "scheduled"}, headers=h))
        _ok(client.post(f"/api/client/campaigns/{cid}/trigger", json={}, headers=h))
    return cid


def _received(topo: Topology) -> Counter[str]:
    return topo.sink.handler.snapshot("blast.example.com")


def _finish(topo: Topology, cid: int, started: float, label: str) -> tuple[Counter[str], dict[str, int]]:
    """Wait for every recipient and for the ledger to settle; print the figures."""
    _wait(lambda: len(_received(topo)) >= BLAST_SIZE, timeout=DEADLINE_SECONDS, what="every recipient", poll=0.5)
    elapsed = time.monotonic() - started

    def settled() -> bool:
        states = _states(topo.database, cid)
        return states.get("queued", 0) == 0 and states.get("sending", 0) == 0 and sum(states.values()) == BLAST_SIZE

    try:
        _wait(settled, timeout=60, what="the ledger to settle (nothing queued or sending)", poll=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; ledger: {_states(topo.database, cid)}") from None
    counts = _received(topo)
    states = _states(topo.database, cid)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\n[{label}] recipients={BLAST_SIZE} received={sum(counts.values())} distinct={len(counts)} "
        f"duplicates={duplicates} seconds={elapsed:.1f} rate={BLAST_SIZE / elapsed:.0f}/s states={states}"
    )
    return counts, states


def _reset(topo: Topology) -> None:
    with topo.sink.handler.lock:
        topo.sink.handler.per_rcpt.clear()


def test_blast_reaches_every_recipient_exactly_once(topology: Topology) -> None:
    _reset(topology)
    started = time.monotonic()
    cid = _fire_blast(topology, "Plain")
    counts, states = _finish(topology, cid, started, "blast")
    expected = {f"u{i}@blast.example.com" for i in range(BLAST_SIZE)}
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), Counter(counts.values())
    assert states == {"sent": BLAST_SIZE}


def test_kill_9_worker_mid_blast_loses_nothing(topology: Topology, record_property: RecordProperty) -> None:
    """A worker killed with SIGKILL mid-blast and restarted: every recipient gets the message;
    duplicates are at most the one batch the killed worker had in flight (its lease expires and
    the rows are claimed again)."""
    _reset(topology)
    started = time.monotonic()
    cid = _fire_blast(topology, "Kill")
    _wait(
        lambda: sum(_received(topology).values()) >= BLAST_SIZE // 3,
        timeout=DEADLINE_SECONDS,
        what="a third of the blast",
        poll=0.05,
    )
    victim = topology.workers[0]
    killed_after = sum(_received(topology).values())
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    topology.start_worker(0)
    counts, states = _finish(topology, cid, started, "kill -9")
    assert set(counts) == {f"u{i}@blast.example.com" for i in range(BLAST_SIZE)}
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    record_property(
        "fault_report",
        f"kill -9 of a worker after {killed_after:,} of {BLAST_SIZE:,} messages: {duplicates} duplicate(s)"
        f" (bound: one batch = {SEND_BATCH_SIZE}), none lost",
    )
    assert duplicates <= SEND_BATCH_SIZE
    assert states == {"sent": BLAST_SIZE}


def test_smtp_outage_mid_blast_loses_and_duplicates_nothing(
    topology: Topology, record_property: RecordProperty
) -> None:
    """The SMTP server refuses connections for ``CLARION_TEST_SMTP_OUTAGE_SECONDS`` (60 s) in the
    middle of a blast:
    transient failures go back to ``queued`` with backoff, and after the server returns every
    recipient has exactly one message."""
    _reset(topology)
    started = time.monotonic()
    cid = _fire_blast(topology, "Outage")
    _wait(
        lambda: sum(_received(topology).values()) >= BLAST_SIZE // 3,
        timeout=DEADLINE_SECONDS,
        what="a third of the blast",
        poll=0.05,
    )
    topology.sink.stop()
    during = sum(_received(topology).values())
    time.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a condition
    states_during = _states(topology.database, cid)
    topology.sink.start()
    print(f"\n[outage] {OUTAGE_SECONDS:.0f}s outage after {during} messages; ledger during outage: {states_during}")
    assert states_during.get("sent", 0) < BLAST_SIZE  # the outage really hit the blast
    counts, states = _finish(topology, cid, started, "outage")
    assert set(counts) == {f"u{i}@blast.example.com" for i in range(BLAST_SIZE)}
    assert all(n == 1 for n in counts.values()), Counter(counts.values())
    assert states == {"sent": BLAST_SIZE}
    record_property(
        "fault_report",
        f"SMTP refused connections for {OUTAGE_SECONDS:.0f} s after {during:,} of {BLAST_SIZE:,} messages"
        f" (ledger then: {states_during}); afterwards all {BLAST_SIZE:,} received exactly once",
    )
