"""Diagnostic (not registered in ``bench/__main__.py``): CPU time per request of the uvicorn
workers and of the PostgreSQL backends serving them, for `POST /users/batch` (create, update) and
`POST /events`. CPU time barely moves with machine load, unlike wall-clock throughput, so this is
the figure to compare before/after a change on a busy machine.

    .venv/bin/python -m bench.cpu_split
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.events import _events
from bench.harness import Env, environment, http_clients
from bench.users_batch import _batches

TICK = os.sysconf("SC_CLK_TCK")
ROUNDS = int(os.environ.get("CLARION_BENCH_ROUNDS", "100"))  # batches of 100 per phase


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def _pg_backends(db_name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"postgres:") and f" {db_name} ".encode() in cmd:
            out.append(int(entry))
    return out


def _snapshot(env: Env) -> tuple[float, float]:
    workers = [env.server_pid, *_children(env.server_pid)]
    return sum(_cpu(p) for p in workers), sum(_cpu(p) for p in _pg_backends(env.db_name))


async def _phase(env: Env, label: str, path: str, batches: list[object], expect: int) -> None:
    headers = {"Authorization": f"Bearer {env.secret_key}"}
    app0, pg0 = _snapshot(env)
    start = time.perf_counter()
    await http_clients(env, "POST", path, headers, batches, {expect})
    wall = time.perf_counter() - start
    app1, pg1 = _snapshot(env)
    n = len(batches)
    print(
        f"  {label}: {n} requests, wall {wall:.2f}s; CPU per request: app {1000 * (app1 - app0) / n:.2f} ms,"
        f" postgres {1000 * (pg1 - pg0) / n:.2f} ms",
        flush=True,
    )


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with environment(Path(tmp)) as env:
            headers = {"Authorization": f"Bearer {env.secret_key}"}
            await http_clients(env, "POST", "/api/client/users/batch", headers, _batches("warm")[:20], {200})
            batches = _batches("u")[:ROUNDS]
            await _phase(env, "POST /users/batch create", "/api/client/users/batch", list(batches), 200)
            await _phase(env, "POST /users/batch update", "/api/client/users/batch", list(batches), 200)
            users = [[{"external_id": f"u{i}"} for i in range(s, s + 100)] for s in range(0, 5_000, 100)]
            await http_clients(env, "POST", "/api/client/users/batch", headers, users, {200})
            events = _events()
            await http_clients(env, "POST", "/api/client/events", headers, events[:20], {204})
            await _phase(env, "POST /events", "/api/client/events", events[20 : 20 + ROUNDS], 204)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
