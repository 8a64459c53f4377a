"""`POST /events` throughput (batches of 100 for existing users, concurrent clients, real uvicorn
server) against a plain multi-row INSERT of the same events through asyncpg."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import asyncpg

from bench import wrk
from bench.harness import CLIENTS, environment, http_clients, report, run_clients

EVENTS = 100_000
BATCH = 100
USERS = 5_000
SECONDS = float(os.environ.get("BENCH_WINDOW_SECONDS", "10"))


def _events() -> list[list[dict[str, object]]]:
    return [
        [
            {
                "name": "purchase" if i % 3 else "page_view",
                "external_id": f"u{i % USERS}",
                "data": {"amount": i % 97, "sku": f"S{i % 13}"},
            }
            for i in range(start, start + BATCH)
        ]
        for start in range(0, EVENTS, BATCH)
    ]


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with environment(Path(tmp)) as env:
            headers = {"Authorization": f"Bearer {env.secret_key}"}
            users = [[{"external_id": f"u{i}"} for i in range(s, s + 100)] for s in range(0, USERS, 100)]
            await http_clients(env, "POST", "/api/client/users/batch", headers, users, {200})
            await http_clients(env, "POST", "/api/client/events", headers, _events()[:40], {204})  # warm-up
            if wrk.available():
                window = await wrk.sustained(env, "POST", "/api/client/events", _events(), seconds=SECONDS)
                count, elapsed = window.items, window.seconds
            else:
                count = EVENTS
                elapsed = await http_clients(env, "POST", "/api/client/events", headers, _events(), {204})

            pool = await asyncpg.create_pool(
                env.database_url.replace("+asyncpg", ""), min_size=CLIENTS, max_size=CLIENTS
            )
            ids = dict(
                await (await asyncpg.connect(env.database_url.replace("+asyncpg", ""))).fetch(
                    "SELECT external_id, id FROM users WHERE project_id = $1", env.project_id
                )
            )
            sql = (
                "INSERT INTO events (project_id, uid, user_id, name, data, created_at)"
                " SELECT $1, x.u, x.i, x.n, x.d::jsonb, now()"
                " FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[]) AS x(u, i, n, d)"
            )

            async def insert(batch: list[dict[str, object]]) -> None:
                async with pool.acquire() as conn:
                    await conn.execute(
                        sql,
                        env.project_id,
                        [f"evt_b{n}" for n in range(len(batch))],
                        [ids[e["external_id"]] for e in batch],
                        [e["name"] for e in batch],
                        [json.dumps(e["data"]) for e in batch],
                    )

            baseline = await run_clients(_events(), insert)
            await pool.close()
    generator = f"wrk, {SECONDS:g} s window" if wrk.available() else "httpx in this process"
    print(f"  server: uvicorn subprocess on PostgreSQL; {CLIENTS} concurrent clients ({generator}), batches of {BATCH}")
    report("POST /events", count, elapsed, baseline, 20_000, baseline_count=EVENTS)


def main() -> None:
    asyncio.run(run())
