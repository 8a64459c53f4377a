"""Diagnostic (not registered in ``bench/__main__.py``): CPU time per request of the uvicorn
workers and of the PostgreSQL backends serving them, for `POST /users/batch` (create, update) and
`POST /events`. CPU time barely moves with machine load, unlike wall-clock throughput, so this is
the figure to compare before/after a change on a busy machine.

    .venv/bin/python -m bench.cpu_split

With ``CLARION_BENCH_AB_PYTHONPATH=/path/to/other/checkout`` a second server runs that checkout's
code at the same time, and the two are driven alternately (``CLARION_BENCH_AB_SLICES`` slices of
each phase), so both see the same machine load; the figures are printed per side.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.events import _events
from bench.harness import Env, environment, http_clients
from bench.users_batch import _batches


def _changed(batches: list[list[dict[str, object]]]) -> list[object]:
    """The same users with one data value changed, so every row is written."""
    return [[{**item, "data": {"plan": "team", "seats": 51}} for item in batch] for batch in batches]


TICK = os.sysconf("SC_CLK_TCK")
ROUNDS = int(os.environ.get("CLARION_BENCH_ROUNDS", "100"))  # batches of 100 per phase


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _proc_files(name: str) -> Iterator[tuple[int, bytes]]:
    """``(pid, content of /proc/<pid>/<name>)`` for every process still readable."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/{name}", "rb") as f:
                    yield int(entry), f.read()
            except OSError:
                continue


def _children(pid: int) -> list[int]:
    return [child for child, stat in _proc_files("stat") if int(stat.rsplit(b")", 1)[1].split()[1]) == pid]


def _pg_backends(db_name: str) -> list[int]:
    marker = f" {db_name} ".encode()
    return [pid for pid, cmd in _proc_files("cmdline") if cmd.startswith(b"postgres:") and marker in cmd]


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
            changed = _changed(batches)
            await _phase(env, "POST /users/batch update (changed data)", "/api/client/users/batch", changed, 200)
            users = [[{"external_id": f"u{i}"} for i in range(s, s + 100)] for s in range(0, 5_000, 100)]
            await http_clients(env, "POST", "/api/client/users/batch", headers, users, {200})
            events = _events()
            await http_clients(env, "POST", "/api/client/events", headers, events[:20], {204})
            await _phase(env, "POST /events", "/api/client/events", events[20 : 20 + ROUNDS], 204)


async def _ab_phase(
    envs: dict[str, Env], label: str, path: str, batches: dict[str, list[object]], expect: int, slices: int
) -> None:
    used = {side: [0.0, 0.0, 0.0] for side in envs}  # app CPU, postgres CPU, wall
    for k in range(slices):
        for side, env in envs.items():
            chunk = batches[side][k::slices]
            headers = {"Authorization": f"Bearer {env.secret_key}"}
            app0, pg0 = _snapshot(env)
            start = time.perf_counter()
            await http_clients(env, "POST", path, headers, chunk, {expect})
            used[side][2] += time.perf_counter() - start
            app1, pg1 = _snapshot(env)
            used[side][0] += app1 - app0
            used[side][1] += pg1 - pg0
    for side, (app, pg, wall) in used.items():
        n = len(batches[side])
        print(
            f"  [{side}] {label}: {n} requests, wall {wall:.2f}s; CPU per request: app {1000 * app / n:.2f} ms,"
            f" postgres {1000 * pg / n:.2f} ms",
            flush=True,
        )


async def run_ab(other: str) -> None:
    slices = int(os.environ.get("CLARION_BENCH_AB_SLICES", "6"))
    saved = os.environ.get("PYTHONPATH")
    with tempfile.TemporaryDirectory() as tmp_a, tempfile.TemporaryDirectory() as tmp_b:
        async with environment(Path(tmp_a)) as this:
            os.environ["PYTHONPATH"] = other  # only the second server's subprocess sees it
            try:
                starting = environment(Path(tmp_b))
                that = await starting.__aenter__()
            finally:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
            try:
                envs = {"this": this, "other": that}
                for env in envs.values():
                    headers = {"Authorization": f"Bearer {env.secret_key}"}
                    await http_clients(env, "POST", "/api/client/users/batch", headers, _batches("warm")[:20], {200})
                users = {side: list(_batches("u")[:ROUNDS]) for side in envs}
                await _ab_phase(envs, "POST /users/batch create", "/api/client/users/batch", users, 200, slices)
                await _ab_phase(envs, "POST /users/batch update", "/api/client/users/batch", users, 200, slices)
                changed = {side: _changed(batches) for side, batches in users.items()}
                label = "POST /users/batch update (changed data)"
                await _ab_phase(envs, label, "/api/client/users/batch", changed, 200, slices)
                known = [[{"external_id": f"u{i}"} for i in range(s, s + 100)] for s in range(0, 5_000, 100)]
                for env in envs.values():
                    headers = {"Authorization": f"Bearer {env.secret_key}"}
                    await http_clients(env, "POST", "/api/client/users/batch", headers, known, {200})
                    await http_clients(env, "POST", "/api/client/events", headers, _events()[:20], {204})
                events = {side: list(_events()[20 : 20 + ROUNDS]) for side in envs}
                await _ab_phase(envs, "POST /events", "/api/client/events", events, 204, slices)
            finally:
                await starting.__aexit__(None, None, None)


def main() -> None:
    other = os.environ.get("CLARION_BENCH_AB_PYTHONPATH")
    asyncio.run(run_ab(other) if other else run())


if __name__ == "__main__":
    main()
