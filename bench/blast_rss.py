"""Peak memory of a blast to 1,000,000 recipients: materialising the audience and sending every
message through the `capture` provider, with every Clarion process's resident set sampled.

Topology as in `bench.blast` (``BENCH_RSS_BACKEND``: ``postgres``, the default, runs
``clarion serve --no-worker`` + ``BENCH_BLAST_WORKERS`` workers + a scheduler on a throw-away
PostgreSQL database and Redis; ``sqlite`` runs the embedded ``clarion serve``). The users are
imported beforehand (CSV import into a static list); the template is small so the captured rows
stay small. The process tree is sampled every 0.5 s (``VmRSS``; ``VmHWM`` at the end catches
peaks between samples). Knobs: ``BENCH_RSS_RECIPIENTS`` (default 1,000,000),
``BENCH_RSS_MAX_SECONDS`` (default 3,600: how long to wait for the blast to finish).
Baseline in the same run: the resident set of an idle Clarion process of the same kind, taken
just before the trigger.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.blast import _ok, _states, _write_users, ready_blast, settled

N = int(os.environ.get("BENCH_RSS_RECIPIENTS", "1000000"))
BACKEND = os.environ.get("BENCH_RSS_BACKEND", "postgres")
MAX_SECONDS = float(os.environ.get("BENCH_RSS_MAX_SECONDS", "3600"))
LIMIT_MB = 400


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return str(pid)
    words = [p.decode() for p in parts if p and not p.startswith(b"-")]
    return " ".join(w.rsplit("/", 1)[-1] for w in words[1:3]) or str(pid)


PROVIDER = {"type": "capture", "group": "email", "name": "Capture", "is_default": True}
TEMPLATE = {
    "from": {"name": "News", "address": "news@example.com"},
    "subject": "Hello {{ user.data.first_name }}",
    "html": '<p>Hi {{ user.data.first_name }}</p><a href="https://example.com/a">a</a>',
    "editor": "code",
}


async def run() -> None:
    with tempfile.TemporaryDirectory(prefix="clarion-rss-users-") as tmp_name:
        users_csv = Path(tmp_name) / "users.csv"
        _write_users(users_csv, N)
        async with ready_blast(BACKEND, users_csv, N, PROVIDER, TEMPLATE) as ready:
            topo, cid = ready.topo, ready.campaign_id
            idle = {pid: _status_kb(pid, "VmRSS") for pid in topo.pids()}
            peak: dict[int, int] = dict(idle)
            peak_total = sum(idle.values())
            started = time.perf_counter()
            _ok(await ready.api.post(f"/campaigns/{cid}/trigger", json={}))
            states: dict[str, int] = {}
            last_poll = 0.0
            while time.perf_counter() - started < MAX_SECONDS:
                await asyncio.sleep(0.5)
                sample = {pid: _status_kb(pid, "VmRSS") for pid in topo.pids()}
                for pid, kb in sample.items():
                    peak[pid] = max(peak.get(pid, 0), kb)
                peak_total = max(peak_total, sum(sample.values()))
                if time.perf_counter() - last_poll > 2:
                    last_poll = time.perf_counter()
                    try:
                        states = await _states(ready.db_url, cid)
                    except Exception as exc:  # a busy server refusing a connection: poll again
                        print(f"  … poll failed: {exc!r:.120}", flush=True)
                        continue
                    if int(time.perf_counter() - started) % 60 < 3:
                        print(f"  … {time.perf_counter() - started:6.0f}s {states}", flush=True)
                    if settled(states) >= N:
                        break
            elapsed = time.perf_counter() - started
            hwm = {pid: _status_kb(pid, "VmHWM") for pid in topo.pids()}
            names = {pid: _name(pid) for pid in topo.pids()}
            imported = ready.import_seconds
    done = settled(states)
    print(
        f"bench.blast_rss: {N:,} recipients, {BACKEND}, capture provider; users imported in {imported:.0f}s; "
        f"{done:,} messages settled in {elapsed:.0f}s ({done / elapsed:,.0f}/s): {states}"
    )
    worst = 0
    for pid in sorted(peak):
        top = max(peak[pid], hwm.get(pid, 0))
        worst = max(worst, top)
        print(
            f"  {names.get(pid, pid)!s:<28} pid {pid:>7}: idle {idle.get(pid, 0) / 1024:6.0f} MiB, "
            f"peak {top / 1024:6.0f} MiB"
        )
    print(
        f"  largest single process peak: {worst / 1024:.0f} MiB (goal < {LIMIT_MB} MB: "
        f"{'met' if worst * 1024 < LIMIT_MB * 1_000_000 else 'NOT met'})"
    )
    print(f"  peak of all Clarion processes together (sampled): {peak_total / 1024:.0f} MiB")
    if done < N:
        print(f"  NOTE: the blast did not finish within BENCH_RSS_MAX_SECONDS={MAX_SECONDS:.0f}")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
