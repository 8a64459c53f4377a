"""`POST /users/batch` throughput (batches of 100, concurrent clients, real uvicorn server) against
a plain multi-row INSERT of the same rows through asyncpg with the same concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import asyncpg

from bench import wrk
from bench.harness import CLIENTS, environment, http_clients, report, run_clients

USERS = 40_000
BATCH = 100
SECONDS = float(os.environ.get("BENCH_WINDOW_SECONDS", "10"))


def _batches(prefix: str, users: int = USERS) -> list[list[dict[str, object]]]:
    return [
        [
            {
                "external_id": f"{prefix}{i}",
                "email": f"{prefix}{i}@bench.example",
                "data": {"plan": "pro", "seats": i % 50, "address": {"city": "Perth"}},
            }
            for i in range(start, start + BATCH)
        ]
        for start in range(0, users, BATCH)
    ]


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with environment(Path(tmp)) as env:
            headers = {"Authorization": f"Bearer {env.secret_key}"}
            # Warm-up (connections, caches), not measured.
            await http_clients(env, "POST", "/api/client/users/batch", headers, _batches("warm")[:40], {200})
            if wrk.available():
                # Creates: fresh users in every body (enough that the window never repeats one).
                fresh = _batches("u", 300_000)
                create = await wrk.sustained(env, "POST", "/api/client/users/batch", fresh, seconds=SECONDS)
                assert not create.wrapped, "the create window sent some users twice: raise the pool"
                # Updates: users that exist, alternating two values so every row really changes.
                existing = fresh[: min(create.requests, 1000)]
                variants = [
                    [{**u, "data": {"plan": plan}} for u in batch] for plan in ("team", "pro") for batch in existing
                ]
                update = await wrk.sustained(env, "POST", "/api/client/users/batch", variants, seconds=SECONDS)
                created = (create.items, create.seconds)
                updated = (update.items, update.seconds)
            else:
                created = (
                    USERS,
                    await http_clients(env, "POST", "/api/client/users/batch", headers, _batches("u"), {200}),
                )
                updated = (
                    USERS,
                    await http_clients(env, "POST", "/api/client/users/batch", headers, _batches("u"), {200}),
                )

            pool = await asyncpg.create_pool(
                env.database_url.replace("+asyncpg", ""), min_size=CLIENTS, max_size=CLIENTS
            )
            sql = (
                "INSERT INTO users (project_id, external_id, email, data, devices, has_push_device, created_at,"
                " updated_at) SELECT $1, x.e, x.m, x.d::jsonb, '[]'::jsonb, false, now(), now()"
                " FROM unnest($2::text[], $3::text[], $4::text[]) AS x(e, m, d)"
            )

            async def insert(batch: list[dict[str, object]]) -> None:
                async with pool.acquire() as conn:
                    await conn.execute(
                        sql,
                        env.project_id,
                        [f"b{u['external_id']}" for u in batch],
                        [u["email"] for u in batch],
                        [json.dumps(u["data"]) for u in batch],
                    )

            baseline = await run_clients(_batches("u"), insert)
            await pool.close()
    generator = f"wrk, {SECONDS:g} s windows" if wrk.available() else "httpx in this process"
    print(f"  server: uvicorn subprocess on PostgreSQL; {CLIENTS} concurrent clients ({generator}), batches of {BATCH}")
    report("POST /users/batch (create)", *created, baseline, 10_000, baseline_count=USERS)
    report("POST /users/batch (update existing)", *updated, baseline, 10_000, baseline_count=USERS)


def main() -> None:
    asyncio.run(run())
