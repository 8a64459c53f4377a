"""Blast throughput end to end: a blast campaign to a static list of N users (10 KB HTML, link
wrapping and the open pixel on) fired through the HTTP API, until every message is ``sent``
into a local SMTP sink — against the ceiling measured in the same run: a bare aiosmtplib loop
sending pre-built messages of the same template to the same sink.

Two topologies (``BENCH_BLAST_BACKENDS``, default ``sqlite,postgres``):

- ``sqlite``: embedded mode — one ``clarion serve`` process (API, worker and scheduler) on a
  SQLite file;
- ``postgres``: distributed mode — a throw-away PostgreSQL database, Redis (a random
  namespace), ``clarion serve --no-worker``, ``BENCH_BLAST_WORKERS`` (default 2)
  ``clarion worker`` processes and one ``clarion scheduler``.

Sink: Postfix's ``smtp-sink`` when installed (Debian package ``postfix``), else aiosmtpd's Sink
handler in a separate process. Knobs: ``BENCH_BLAST_MESSAGES`` (default 100,000),
``BENCH_BLAST_CEILING_MESSAGES`` (default 10,000), ``BENCH_BLAST_TIMEOUT`` (seconds, default
3,600). Besides wall-clock rates the benchmark prints the CPU each part of the system used per
message (from ``/proc``), which does not depend on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

from bench.cpu_split import _children, _cpu, _pg_backends, _proc_files
from bench.harness import _free_port, clarion_env, create_database, drop_database
from bench.render_mime import build_html
from bench.smtp import SENDER, bare_loop, start_sink

N = int(os.environ.get("BENCH_BLAST_MESSAGES", "100000"))
CEILING_N = int(os.environ.get("BENCH_BLAST_CEILING_MESSAGES", "10000"))
BACKENDS = os.environ.get("BENCH_BLAST_BACKENDS", "sqlite,postgres").split(",")
WORKERS = int(os.environ.get("BENCH_BLAST_WORKERS", "2"))
TIMEOUT = float(os.environ.get("BENCH_BLAST_TIMEOUT", "3600"))
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CLARION = str(Path(sys.executable).parent / "clarion")
SUBJECT = "Hello {{ user.first_name }}, your weekly picks"


@dataclass
class Topology:
    backend: str
    env: dict[str, str]
    base: str
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    db_name: str = ""

    def spawn(self, *args: str) -> None:
        log = (self.logs / f"{args[0]}-{len(self.procs)}.log").open("wb")
        self.procs.append(subprocess.Popen([CLARION, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def pids(self) -> list[int]:
        out: list[int] = []
        for proc in self.procs:
            out += [proc.pid, *_children(proc.pid)]
        return out

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: Clarion's processes, and this database's PostgreSQL backends."""
        clarion = sum(_cpu(p) for p in self.pids())
        backends = sum(_cpu(p) for p in _pg_backends(self.db_name)) if self.db_name else 0.0
        return clarion, backends

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _sink_pids(port: int) -> list[int]:
    marker = f"127.0.0.1:{port}".encode()
    return [pid for pid, cmd in _proc_files("cmdline") if marker in cmd]


def _write_users(path: Path, n: int) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["external_id", "email", "first_name", "tier"])
        for i in range(n):
            out.writerow([f"u{i}", f"user{i}@blast.example.com", f"Ünïcode{i}", "gold"])


@contextlib.contextmanager
def topology(backend: str, tmp: Path, db_url: str, db_name: str) -> Iterator[Topology]:
    port = _free_port()
    env = clarion_env(
        db_url,
        tmp,
        {
            "CLARION_BASE_URL": "https://clarion.example",
            "CLARION_DB_POOL_SIZE": os.environ.get("CLARION_DB_POOL_SIZE", "5"),
        },
    )
    topo = Topology(backend, env, f"http://127.0.0.1:{port}", tmp, db_name=db_name)
    try:
        if backend == "sqlite":
            topo.spawn("serve", "--host", "127.0.0.1", "--port", str(port))
        else:
            env["CLARION_REDIS_URL"] = REDIS_URL
            env["CLARION_REDIS_NAMESPACE"] = f"clarion-bench-{secrets.token_hex(4)}"
            topo.spawn("serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port))
            topo.spawn("scheduler")
            for _ in range(WORKERS):
                topo.spawn("worker")
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=topo.base) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/health").status_code == 200:
                        break
                if time.monotonic() > deadline or any(p.poll() is not None for p in topo.procs):
                    raise RuntimeError(f"clarion did not start; logs in {tmp}")
                time.sleep(0.2)
        yield topo
    finally:
        topo.stop()


async def _prepare(db_url: str, tmp: Path) -> tuple[int, str]:
    from clarion.core.db import Database
    from clarion.core.migrations import migrate
    from clarion.core.registry import load_models
    from clarion.core.settings import Settings
    from clarion.orgs.bootstrap import bootstrap

    load_models()
    db = Database(Settings(database_url=db_url, data_dir=tmp, secret_key="bench"))
    try:
        await migrate(db)
        result = await bootstrap(db, org_name="bench", project_name="bench")
        return result.project_id, result.secret_key
    finally:
        await db.dispose()


async def _import(db_url: str, tmp: Path, project_id: int, list_id: int, path: Path, expected: int) -> None:
    from clarion.core.db import Database
    from clarion.core.settings import Settings
    from clarion.imports.csv_users import import_users_csv

    db = Database(Settings(database_url=db_url, data_dir=tmp, secret_key="bench"))
    try:
        state = await import_users_csv(db, project_id, path, list_id=list_id)
        if state.imported != expected:
            raise RuntimeError(f"imported {state.imported} of {expected} users")
    finally:
        await db.dispose()


def _ok(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    return response.json()


async def _states(db_url: str, campaign_id: int) -> dict[str, int]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT state, count(*) FROM messages WHERE campaign_id = :c GROUP BY state"),
                    {"c": campaign_id},
                )
            ).all()
    finally:
        await engine.dispose()
    return {str(s): int(n) for s, n in rows}


def prebuilt_messages(n: int) -> list[tuple[str, bytes]]:
    """The ceiling's messages: the same template rendered by the same code, before timing."""
    from datetime import UTC, datetime

    from bench.render_mime import Row
    from clarion.rendering.render import ProjectInfo, Recipient, RenderSettings, render_batch

    row = Row(1, "email", "en", _template_data(), updated_at=datetime.now(UTC))
    project = ProjectInfo(1, "bench", "en", link_wrap_email=True, track_opens_email=True)
    settings = RenderSettings("https://clarion.example", "bench")
    out: list[tuple[str, bytes]] = []
    for start in range(0, n, 1000):
        recipients = [
            Recipient(
                f"msg_{i:026d}",
                {
                    "id": i,
                    "external_id": f"u{i}",
                    "email": f"user{i}@blast.example.com",
                    "data": {"first_name": f"Ünïcode{i}", "tier": "gold"},
                },
            )
            for i in range(start, min(n, start + 1000))
        ]
        for item in render_batch([row], project=project, settings=settings, recipients=recipients):
            out.append((item.to, item.mime))  # type: ignore[union-attr]
    return out


def _template_data() -> dict[str, Any]:
    html = build_html().replace("{{ user.first_name }}", "{{ user.data.first_name }}")
    html = html.replace("{{ user.tier }}", "{{ user.data.tier }}")
    return {
        "from": {"name": "Shop News", "address": SENDER},
        "subject": SUBJECT.replace("user.first_name", "user.data.first_name"),
        "preheader": "Ten things for {{ user.data.first_name }}",
        "html": html,
        "editor": "code",
    }


def settled(states: dict[str, int]) -> int:
    """How many of a campaign's messages are past ``queued``/``sending``."""
    return sum(v for k, v in states.items() if k not in ("queued", "sending"))


@dataclass
class ReadyBlast:
    topo: Topology
    api: httpx.AsyncClient
    db_url: str
    campaign_id: int
    import_seconds: float


@contextlib.asynccontextmanager
async def ready_blast(
    backend: str, users_csv: Path, users: int, provider: dict[str, Any], template: dict[str, Any]
) -> AsyncIterator[ReadyBlast]:
    """A running topology on a fresh database whose static list holds the users of ``users_csv``
    (CSV import), with a scheduled blast campaign at that list through ``provider`` — not fired."""
    with tempfile.TemporaryDirectory(prefix=f"clarion-blast-{backend}-") as tmp_name:
        tmp = Path(tmp_name)
        db_name = ""
        if backend == "sqlite":
            db_url = f"sqlite+aiosqlite:///{tmp / 'clarion.db'}"
        else:
            db_name, raw = await create_database()
            db_url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
        try:
            project_id, key = await _prepare(db_url, tmp)
            with topology(backend, tmp, db_url, db_name) as topo:
                h = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=topo.base + "/api/client", headers=h, timeout=120) as api:
                    lst = _ok(await api.post("/lists", json={"name": "Blast", "type": "static"}))
                    started = time.perf_counter()
                    await _import(db_url, tmp, project_id, int(lst["id"]), users_csv, users)
                    imported = time.perf_counter() - started
                    provider_id = _ok(await api.post("/providers", json=provider))["id"]
                    subs = _ok(await api.get("/subscriptions?limit=100"))["results"]
                    campaign = _ok(
                        await api.post(
                            "/campaigns",
                            json={
                                "type": "blast",
                                "name": "Blast",
                                "subscription_id": next(s["id"] for s in subs if s["channel"] == "email"),
                                "provider_id": provider_id,
                                "list_ids": [lst["id"]],
                                # Fired by POST /trigger when the measurement starts: a schedule
                                # due now would let the scheduler start it before the clock.
                                "send_at": "2999-01-01T00:00:00Z",
                            },
                        )
                    )
                    cid = int(campaign["id"])
                    _ok(
                        await api.post(
                            "/templates", json={"type": "email", "campaign_id": cid, "locale": "en", "data": template}
                        )
                    )
                    _ok(await api.patch(f"/campaigns/{cid}", json={"state": "scheduled"}))
                    yield ReadyBlast(topo, api, db_url, cid, imported)
        finally:
            if db_name:
                await drop_database(db_name)


async def blast(backend: str, sink_port: int, users_csv: Path) -> dict[str, float]:
    provider = {
        "type": "smtp",
        "group": "email",
        "name": "Sink",
        "is_default": True,
        "data": {"host": "127.0.0.1", "port": sink_port, "protocol": "plain"},
    }
    async with ready_blast(backend, users_csv, N, provider, _template_data()) as ready:
        sink_cpu_before = sum(_cpu(p) for p in _sink_pids(sink_port))
        cpu_before = ready.topo.cpu()
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        _ok(await ready.api.post(f"/campaigns/{ready.campaign_id}/trigger", json={}))
        states: dict[str, int] = {}
        while time.perf_counter() - started < TIMEOUT:
            await asyncio.sleep(0.5)
            states = await _states(ready.db_url, ready.campaign_id)
            if settled(states) >= N:
                break
        elapsed = time.perf_counter() - started
        cpu_after = ready.topo.cpu()
        sink_cpu = sum(_cpu(p) for p in _sink_pids(sink_port)) - sink_cpu_before
        load_after = os.getloadavg()[0]
        delivery = _ok(await ready.api.get(f"/campaigns/{ready.campaign_id}"))["delivery"]
        imported = ready.import_seconds
    sent = states.get("sent", 0) + states.get("delivered", 0)
    if sent != N:
        raise RuntimeError(f"{backend}: only {sent} of {N} sent in {elapsed:.0f}s: {states}")
    if delivery.get("total") != N or delivery.get("sent") != N:
        raise RuntimeError(f"{backend}: campaign counters disagree with the ledger: {delivery}")
    return {
        "rate": N / elapsed,
        "elapsed": elapsed,
        "import": imported,
        "clarion_ms": (cpu_after[0] - cpu_before[0]) * 1000 / N,
        "pg_ms": (cpu_after[1] - cpu_before[1]) * 1000 / N,
        "sink_ms": sink_cpu * 1000 / N,
        "load_before": load_before,
        "load_after": load_after,
    }


async def ceiling(port: int, messages: list[tuple[str, bytes]]) -> tuple[float, float]:
    """Messages/s and client CPU ms per message of a bare one-connection aiosmtplib loop."""
    before = time.process_time()
    rate = await bare_loop(port, messages, 1)
    return rate, (time.process_time() - before) * 1000 / len(messages)


async def run() -> None:
    messages = prebuilt_messages(min(CEILING_N, 2000))
    messages = (messages * (CEILING_N // len(messages) + 1))[:CEILING_N]
    size = sum(len(m) for _, m in messages) / len(messages)
    port = _free_port()
    sink, sink_name = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="clarion-blast-users-") as tmp:
            users_csv = Path(tmp) / "users.csv"
            _write_users(users_csv, N)
            await bare_loop(port, messages[:200], 1)  # warm up the sink
            print(
                f"bench.blast: {N:,} recipients, messages of {size / 1024:.1f} KB (10 KB HTML, 10 tracked links, "
                f"open pixel, text part) to {sink_name}; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                f"aiosmtplib {aiosmtplib.__version__}",
                flush=True,
            )
            for backend in BACKENDS:
                before, before_cpu = await ceiling(port, messages)
                result = await blast(backend, port, users_csv)
                after, after_cpu = await ceiling(port, messages)
                bare = (before + after) / 2
                label = (
                    "SQLite, embedded (one serve process)"
                    if backend == "sqlite"
                    else (f"PostgreSQL + Redis, serve --no-worker + {WORKERS} workers + scheduler")
                )
                print(f"  {label}")
                print(
                    f"    blast: {N:,} sent in {result['elapsed']:.1f}s = {result['rate']:,.0f} msg/s "
                    f"(users imported beforehand in {result['import']:.1f}s; load average "
                    f"{result['load_before']:.1f} → {result['load_after']:.1f})"
                )
                print(
                    f"    ceiling: bare aiosmtplib loop, 1 connection, {len(messages):,} pre-built messages: "
                    f"{before:,.0f} / {after:,.0f} msg/s before / after (mean {bare:,.0f}); "
                    f"{(before_cpu + after_cpu) / 2:.3f} CPU ms per message"
                )
                print(
                    f"    ratio blast / ceiling = {result['rate'] / bare:.2f} (goal ≥ 0.5: "
                    f"{'met' if result['rate'] >= 0.5 * bare else 'NOT met'})"
                )
                print(
                    f"    CPU per message: Clarion processes {result['clarion_ms']:.3f} ms, PostgreSQL backends "
                    f"{result['pg_ms']:.3f} ms, sink {result['sink_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
