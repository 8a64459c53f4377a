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
            start = time.perf_counter()
            state = await import_users_csv(db, env.project_id, path)
            elapsed = time.perf_counter() - start
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
    print(f"  peak RSS before import {rss_before / 1024:.0f} MiB, after {rss_after / 1024:.0f} MiB", flush=True)


def main() -> None:
    asyncio.run(run())
