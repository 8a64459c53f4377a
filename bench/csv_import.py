"""CSV import throughput (the import code path, in-process, on PostgreSQL) against a raw asyncpg
COPY of the same rows into an equivalent table; peak RSS shows memory stays flat."""

from __future__ import annotations

import asyncio
import csv
import os
import resource
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.harness import environment

ROWS = int(os.environ.get("CLARION_BENCH_IMPORT_ROWS", "1000000"))


def _write(path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "email", "plan", "city"])
        for i in range(ROWS):
            writer.writerow([f"imp{i}", f"imp{i}@bench.example", "pro" if i % 2 else "free", "Perth"])


async def _backend_cpu(database_url: str) -> float:
    """CPU seconds (user + system) used so far by the other backends of this database."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def run() -> None:
    from clarion.core.db import Database
    from clarion.core.settings import Settings
    from clarion.imports.csv_users import import_users_csv

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "users.csv"
        _write(path)
        async with environment(Path(tmp)) as env:
            db = Database(Settings(database_url=env.database_url, data_dir=Path(tmp), secret_key="bench"))
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            cpu_start = time.process_time()
            start = time.perf_counter()
            state = await import_users_csv(db, env.project_id, path)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            pg_cpu = await _backend_cpu(env.database_url)  # the pool's backends did the import's SQL
            await db.dispose()
            assert state.imported == ROWS, state

            conn = await asyncpg.connect(env.database_url.replace("+asyncpg", ""))
            await conn.execute("CREATE TABLE copy_baseline (external_id text, email text, plan text, city text)")
            start = time.perf_counter()
            with path.open("rb") as f:
                await conn.copy_to_table("copy_baseline", source=f, format="csv", header=True)
            baseline = time.perf_counter() - start
            await conn.close()
    rate, base = ROWS / elapsed, ROWS / baseline
    print(
        f"  import {ROWS} rows: {elapsed:.2f}s = {rate:,.0f} rows/s (target 50,000: "
        f"{'met' if rate >= 50_000 else 'NOT met'})"
    )
    print(f"  baseline raw COPY into a bare table: {baseline:.2f}s = {base:,.0f} rows/s")
    print(f"  ratio clarion/baseline = {rate / base:.3f}")
    print(
        f"  CPU: import process {cpu:.2f}s ({cpu / ROWS * 1e6:.1f} µs/row, parse + validate + driver), "
        f"PostgreSQL backends {pg_cpu:.2f}s; load average at end {os.getloadavg()[0]:.1f}"
    )
    print(f"  peak RSS before import {rss_before / 1024:.0f} MiB, after {rss_after / 1024:.0f} MiB", flush=True)


def main() -> None:
    asyncio.run(run())
