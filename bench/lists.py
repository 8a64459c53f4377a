"""Dynamic-list benchmark on PostgreSQL.

Generates N users and M events with COPY (defaults: 1,000,000 and 10,000,000), then measures,
each against the same query written by hand in SQL in the same run:

1. full materialisation of a 3-level rule with one event-frequency condition
   (Clarion: the chunked job; baseline: one hand-written ``INSERT … SELECT`` with a
   ``GROUP BY … HAVING`` over events);
2. incremental update after one event (Clarion: ``on_events_recorded``; baseline: the
   hand-written per-user ``INSERT``/``DELETE``), median of ``--repeat`` runs;
3. peak RSS of this process (``resource.getrusage``).

    python -m bench lists                                      # via `make bench`, sizes from the environment
    python -m bench.lists --users 1000000 --events 10000000
    python -m bench.lists --users 100000 --events 1000000      # a quicker run

``CLARION_BENCH_LIST_USERS`` / ``CLARION_BENCH_LIST_EVENTS`` set the sizes for ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import select, text

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.core.migrations import migrate
from clarion.core.registry import load_models
from clarion.core.settings import Settings
from clarion.lists import jobs as list_jobs
from clarion.lists import service
from clarion.lists.models import UserList
from clarion.orgs.bootstrap import bootstrap
from clarion.worker.jobs import JobContext

ADMIN_URL = os.environ.get("CLARION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
EVENT_NAMES = ["purchase", "visit", "signup", "view", "click"]

RULE: dict[str, Any] = {
    "uuid": "root",
    "type": "wrapper",
    "group": "parent",
    "path": "",
    "operator": "and",
    "children": [
        {
            "uuid": "plan-or-score",
            "type": "wrapper",
            "group": "user",
            "path": "",
            "operator": "or",
            "children": [
                {
                    "uuid": "plan",
                    "type": "string",
                    "group": "user",
                    "path": "data.plan",
                    "operator": "=",
                    "value": "pro",
                },
                {
                    "uuid": "score",
                    "type": "number",
                    "group": "user",
                    "path": "data.score",
                    "operator": ">=",
                    "value": 80,
                },
            ],
        },
        {
            "uuid": "country-and-buyer",
            "type": "wrapper",
            "group": "user",
            "path": "",
            "operator": "and",
            "children": [
                {
                    "uuid": "country",
                    "type": "string",
                    "group": "user",
                    "path": "data.country",
                    "operator": "!=",
                    "value": "NZ",
                },
                {
                    "uuid": "buyer",
                    "type": "wrapper",
                    "group": "event",
                    "path": "name",
                    "operator": "and",
                    "value": "purchase",
                    "children": [],
                    "frequency": {
                        "period": {"type": "rolling", "unit": "day", "value": 30},
                        "operator": ">=",
                        "count": 2,
                    },
                },
            ],
        },
    ],
}

# The same rule, written by hand for PostgreSQL.
HAND_FULL = """
INSERT INTO list_users (list_id, user_id, project_id, created_at)
SELECT $1, u.id, u.project_id, now()
FROM users u
JOIN (
    SELECT user_id FROM events
    WHERE project_id = $2 AND name = 'purchase' AND created_at >= $3 AND created_at <= $4
    GROUP BY user_id HAVING count(*) >= 2
) buyers ON buyers.user_id = u.id
WHERE u.project_id = $2
  AND (u.data->>'plan' = 'pro' OR (u.data->>'score')::float8 >= 80)
  AND u.data->>'country' IS DISTINCT FROM 'NZ'
ON CONFLICT DO NOTHING
"""
HAND_ONE_INSERT = """
INSERT INTO list_users (list_id, user_id, project_id, created_at)
SELECT $1, u.id, u.project_id, now() FROM users u
WHERE u.project_id = $2 AND u.id = $3
  AND (u.data->>'plan' = 'pro' OR (u.data->>'score')::float8 >= 80)
  AND u.data->>'country' IS DISTINCT FROM 'NZ'
  AND (SELECT count(*) FROM events e WHERE e.project_id = $2 AND e.user_id = u.id AND e.name = 'purchase'
       AND e.created_at >= $4 AND e.created_at <= $5) >= 2
ON CONFLICT DO NOTHING
"""
HAND_ONE_DELETE = """
DELETE FROM list_users l WHERE l.list_id = $1 AND l.project_id = $2 AND l.user_id = $3 AND NOT EXISTS (
  SELECT 1 FROM users u WHERE u.id = l.user_id AND u.project_id = $2
  AND (u.data->>'plan' = 'pro' OR (u.data->>'score')::float8 >= 80)
  AND u.data->>'country' IS DISTINCT FROM 'NZ'
  AND (SELECT count(*) FROM events e WHERE e.project_id = $2 AND e.user_id = u.id AND e.name = 'purchase'
       AND e.created_at >= $4 AND e.created_at <= $5) >= 2)
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _users_csv(project_id: int, start: int, count: int, rng: random.Random, now: datetime) -> bytes:
    out = io.StringIO()
    stamp = now.isoformat()
    for i in range(start, start + count):
        data = json.dumps(
            {
                "plan": rng.choice(("free", "pro", "team")),
                "score": rng.randrange(101),
                "country": rng.choice(("AU", "NZ", "US", "GB")),
            }
        )
        data = '"' + data.replace('"', '""') + '"'
        out.write(f"{project_id},u{i},{data},[],f,UTC,{stamp},{stamp}\n")
    return out.getvalue().encode()


def _events_csv(project_id: int, first_user: int, per_user: list[int], rng: random.Random, now: datetime) -> bytes:
    out = io.StringIO()
    for offset, n in enumerate(per_user):
        user_id = first_user + offset
        for _ in range(n):
            when = (now - timedelta(seconds=rng.randrange(90 * 86400))).isoformat()
            out.write(f"{project_id},e{secrets.token_hex(8)},{user_id},{rng.choice(EVENT_NAMES)},{{}},{when}\n")
    return out.getvalue().encode()


async def generate(conn: asyncpg.Connection, project_id: int, users: int, events: int, now: datetime) -> float:
    rng = random.Random(42)
    started = time.perf_counter()
    batch = 50_000
    for start in range(0, users, batch):
        n = min(batch, users - start)
        await conn.copy_to_table(
            "users",
            source=io.BytesIO(_users_csv(project_id, start, n, rng, now)),
            format="csv",
            columns=[
                "project_id",
                "external_id",
                "data",
                "devices",
                "has_push_device",
                "timezone",
                "created_at",
                "updated_at",
            ],
        )
    first = await conn.fetchval("SELECT min(id) FROM users WHERE project_id = $1", project_id)
    # Events are spread evenly (the first events % users users get one more) and written user by user,
    # so the (project_id, user_id, name, created_at) index grows in order.
    base, extra = divmod(events, users) if users else (0, 0)
    for start in range(0, users, 5_000):
        n = min(5_000, users - start)
        counts = [base + (1 if start + k < extra else 0) for k in range(n)]
        await conn.copy_to_table(
            "events",
            source=io.BytesIO(_events_csv(project_id, first + start, counts, rng, now)),
            format="csv",
            columns=["project_id", "uid", "user_id", "name", "data", "created_at"],
        )
    await conn.execute("ANALYZE users")
    await conn.execute("ANALYZE events")
    return time.perf_counter() - started


async def measure(users: int, events: int, repeat: int, keep: bool) -> dict[str, Any]:
    name = f"clarion_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    load_models()
    db = Database(Settings(database_url=url, secret_key="bench"))
    results: dict[str, Any] = {"users": users, "events": events}
    try:
        await migrate(db)
        tenant = await bootstrap(db, org_name="bench", project_name="bench")
        project_id = tenant.as_dict()["project_id"]
        now = utcnow()
        conn = await asyncpg.connect(url)
        results["generate_s"] = round(await generate(conn, project_id, users, events, now), 1)
        results["events_loaded"] = await conn.fetchval("SELECT count(*) FROM events")

        # 1. Full materialisation: Clarion's chunked job vs one hand-written statement.
        async with db.transaction(project_id=project_id) as session:
            lst = UserList(
                name="bench",
                type="dynamic",
                state="loading",
                version=1,
                published=True,
                is_visible=True,
                rule=RULE,
                rule_event_names=["purchase"],
                rule_reads_user=True,
            )
            session.add(lst)
            await session.flush()
            list_id = lst.id
            hand = UserList(
                name="hand",
                type="static",
                state="ready",
                version=1,
                published=True,
                is_visible=True,
                rule_event_names=[],
                rule_reads_user=False,
            )
            session.add(hand)
            await session.flush()
            hand_id = hand.id
        ctx = JobContext(db, 0, project_id, 1)
        started = time.perf_counter()
        assert await list_jobs.materialise(ctx, list_id, 1)
        clarion_full = time.perf_counter() - started
        # The hand-written query uses exactly the job's window (the job's "now" is refreshed_at).
        async with db.transaction(project_id=project_id, readonly=True) as session:
            job_now = (await session.execute(select(UserList.refreshed_at).where(UserList.id == list_id))).scalar_one()
        assert job_now is not None
        started = time.perf_counter()
        await conn.execute(HAND_FULL, hand_id, project_id, job_now - timedelta(days=30), job_now)
        hand_full = time.perf_counter() - started
        ours = await conn.fetchval("SELECT count(*) FROM list_users WHERE list_id = $1", list_id)
        theirs = await conn.fetchval("SELECT count(*) FROM list_users WHERE list_id = $1", hand_id)
        results.update(
            full_clarion_s=round(clarion_full, 2),
            full_hand_sql_s=round(hand_full, 2),
            full_ratio=round(clarion_full / hand_full, 2),
            members=ours,
            members_hand_sql=theirs,
        )

        # 2. Incremental update after one event, for random users.
        rng = random.Random(7)
        first = await conn.fetchval("SELECT min(id) FROM users WHERE project_id = $1", project_id)
        ours_ms: list[float] = []
        hand_ms: list[float] = []
        for i in range(repeat):
            user_id = first + rng.randrange(users)

            async def clarion_update(user_id: int = user_id) -> None:
                # As in ingestion: the event insert and the hook share one transaction; only the hook is timed.
                async with db.transaction(project_id=project_id) as session:
                    await session.execute(
                        text(
                            "INSERT INTO events (project_id, uid, user_id, name, data, created_at) "
                            "VALUES (:p, :u, :i, 'purchase', CAST('{}' AS jsonb), now())"
                        ),
                        {"p": project_id, "u": "e" + secrets.token_hex(8), "i": user_id},
                    )
                    started = time.perf_counter()
                    await service.on_events_recorded(session, project_id, [(user_id, "purchase")])
                    ours_ms.append((time.perf_counter() - started) * 1000)

            async def hand_update(user_id: int = user_id) -> None:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO events (project_id, uid, user_id, name, data, created_at) "
                        "VALUES ($1, $2, $3, 'purchase', '{}', now())",
                        project_id,
                        "e" + secrets.token_hex(8),
                        user_id,
                    )
                    end = utcnow()
                    started = time.perf_counter()
                    await conn.execute(HAND_ONE_INSERT, hand_id, project_id, user_id, end - timedelta(days=30), end)
                    await conn.execute(HAND_ONE_DELETE, hand_id, project_id, user_id, end - timedelta(days=30), end)
                    hand_ms.append((time.perf_counter() - started) * 1000)

            # Alternate which side goes first, so neither always finds the user's pages cached.
            for step in (clarion_update, hand_update) if i % 2 == 0 else (hand_update, clarion_update):
                await step()
        inc, inc_hand = statistics.median(ours_ms), statistics.median(hand_ms)
        results.update(
            incremental_median_ms=round(inc, 2),
            incremental_hand_sql_median_ms=round(inc_hand, 2),
            incremental_ratio=round(inc / inc_hand, 2),
        )
        async with db.transaction(project_id=project_id, readonly=True) as session:
            state = (await session.execute(select(UserList.state).where(UserList.id == list_id))).scalar_one()
        results["state_after"] = state
        await conn.close()
    finally:
        await db.dispose()
        if not keep:
            admin = await asyncpg.connect(ADMIN_URL)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["cores"] = os.cpu_count()
    return results


def report(results: dict[str, Any]) -> None:
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}", flush=True)


async def run() -> None:
    """Entry point for ``python -m bench`` (sizes from the environment; defaults are the full size)."""
    users = int(os.environ.get("CLARION_BENCH_LIST_USERS", "1000000"))
    events = int(os.environ.get("CLARION_BENCH_LIST_EVENTS", "10000000"))
    report(await measure(users, events, 200, False))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lists")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="incremental updates to time")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    args = parser.parse_args(argv)
    report(asyncio.run(measure(args.users, args.events, args.repeat, args.keep)))


if __name__ == "__main__":
    main(sys.argv[1:])
