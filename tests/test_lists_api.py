"""Lists over HTTP: CRUD, rule validation errors, materialisation, static membership, CSV import,
incremental maintenance hooks, audiences and cross-project isolation."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import select

from clarion.core.clock import utcnow
from clarion.core.db import Database
from clarion.lists import jobs as list_jobs
from clarion.lists import service
from clarion.lists.models import ListUser, UserList
from clarion.lists.queries import audience_user_ids
from clarion.worker.jobs import JobContext
from tests.conftest import Tenant, assert_problem
from tests.lists_support import add_events, add_users, event_rule, node, run_jobs, wrapper

BASE = "/api/client"


def plan_rule(plan: str = "pro") -> dict[str, Any]:
    return wrapper("and", node("string", "data.plan", "=", plan))


async def _members(db: Database, project_id: int, list_id: int) -> set[int]:
    async with db.transaction(project_id=project_id, readonly=True) as session:
        rows = await session.execute(
            select(ListUser.user_id).where(ListUser.project_id == project_id, ListUser.list_id == list_id)
        )
        return {int(r) for r in rows.scalars()}


async def _create(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"{BASE}/lists", json=body, headers=tenant.sk)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_dynamic_list_lifecycle(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    ids = await add_users(
        db,
        tenant.project_id,
        [
            {"external_id": "u1", "data": {"plan": "pro"}},
            {"external_id": "u2", "data": {"plan": "free"}},
            {"external_id": "u3", "data": {"plan": "pro"}},
        ],
    )
    created = await _create(
        client, tenant, {"name": "Pro users", "type": "dynamic", "rule": plan_rule(), "tags": ["vip", "beta"]}
    )
    assert created["state"] == "loading"
    assert created["version"] == 1
    assert created["tags"] == ["beta", "vip"]
    assert created["rule"]["children"][0]["parent_uuid"] == created["rule"]["uuid"]
    await run_jobs(db)
    got = (await client.get(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json()
    assert got["state"] == "ready"
    assert got["users_count"] == 2
    assert got["refreshed_at"] is not None
    assert await _members(db, tenant.project_id, created["id"]) == {ids["u1"], ids["u3"]}

    # A rule edit bumps the version, goes back to loading, and members who stop matching leave.
    r = await client.patch(
        f"{BASE}/lists/{created['id']}", json={"name": "Free users", "rule": plan_rule("free")}, headers=tenant.sk
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert r.json()["state"] == "loading"
    await run_jobs(db)
    got = (await client.get(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json()
    assert (got["state"], got["users_count"], got["name"]) == ("ready", 1, "Free users")
    assert await _members(db, tenant.project_id, created["id"]) == {ids["u2"]}

    # A name-only edit does not re-materialise.
    r = await client.patch(f"{BASE}/lists/{created['id']}", json={"name": "Renamed"}, headers=tenant.sk)
    assert (r.json()["version"], r.json()["state"]) == (2, "ready")

    listed = (await client.get(f"{BASE}/lists", headers=tenant.sk)).json()
    assert [x["id"] for x in listed["results"]] == [created["id"]]

    # Archive, then hard delete.
    assert (await client.delete(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json() is True
    archived = (await client.get(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json()
    assert archived["archived_at"] is not None
    assert (await client.get(f"{BASE}/lists", headers=tenant.sk)).json()["results"] == []
    assert_problem(
        await client.patch(f"{BASE}/lists/{created['id']}", json={"name": "x"}, headers=tenant.sk),
        409,
        "state_conflict",
    )
    assert (await client.delete(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json() is True
    assert_problem(await client.get(f"{BASE}/lists/{created['id']}", headers=tenant.sk), 404, "resource_missing")
    assert await _members(db, tenant.project_id, created["id"]) == set()


async def test_unpublished_edits_stay_draft(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    await add_users(db, tenant.project_id, [{"external_id": "d1", "data": {"plan": "pro"}}])
    created = await _create(client, tenant, {"name": "D", "type": "dynamic", "rule": plan_rule()})
    await run_jobs(db)
    r = await client.patch(
        f"{BASE}/lists/{created['id']}",
        json={"name": "D", "rule": plan_rule("free"), "published": False},
        headers=tenant.sk,
    )
    assert (r.json()["state"], r.json()["version"], r.json()["published"]) == ("draft", 2, False)
    await run_jobs(db)
    assert (await client.get(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json()["state"] == "draft"
    r = await client.patch(f"{BASE}/lists/{created['id']}", json={"name": "D", "published": True}, headers=tenant.sk)
    assert r.json()["state"] == "loading"
    await run_jobs(db)
    got = (await client.get(f"{BASE}/lists/{created['id']}", headers=tenant.sk)).json()
    assert (got["state"], got["users_count"]) == ("ready", 0)


async def test_invalid_rules_are_422_naming_the_node(client: httpx.AsyncClient, tenant: Tenant) -> None:
    bad = wrapper(
        "and",
        {"uuid": "leaf-1", "type": "number", "group": "user", "path": "data.age", "operator": "contains", "value": 3},
    )
    body = assert_problem(
        await client.post(f"{BASE}/lists", json={"name": "x", "type": "dynamic", "rule": bad}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "rule.leaf-1.operator"
    assert "leaf-1" in body["errors"][0]["message"]

    shopify = wrapper(
        "and",
        {
            "uuid": "shop",
            "type": "shopify_purchase",
            "group": "user",
            "path": "",
            "operator": "has_purchased",
            "value": "x",
        },
    )
    body = assert_problem(
        await client.post(f"{BASE}/lists", json={"name": "x", "type": "dynamic", "rule": shopify}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "rule.shop.type" and "shopify" in body["message"].lower()

    missing = wrapper("and", {"uuid": "nv", "type": "string", "group": "user", "path": "email", "operator": "="})
    body = assert_problem(
        await client.post(f"{BASE}/lists", json={"name": "x", "type": "dynamic", "rule": missing}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "rule.nv.value"

    bad_path = wrapper(
        "and", {"uuid": "bp", "type": "string", "group": "user", "path": "data.a b", "operator": "=", "value": "x"}
    )
    body = assert_problem(
        await client.post(f"{BASE}/lists", json={"name": "x", "type": "dynamic", "rule": bad_path}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["param"] == "rule.bp.path"

    # Dynamic lists need a rule; static lists refuse one.
    assert (
        await client.post(f"{BASE}/lists", json={"name": "x", "type": "dynamic"}, headers=tenant.sk)
    ).status_code in (400, 422)
    static = await _create(client, tenant, {"name": "S", "type": "static"})
    assert_problem(
        await client.patch(f"{BASE}/lists/{static['id']}", json={"name": "S", "rule": plan_rule()}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert_problem(await client.get(f"{BASE}/lists/999999999", headers=tenant.sk), 404, "resource_missing")
    assert_problem(await client.get(f"{BASE}/lists", headers=tenant.pk), 401, "authentication_required")


async def test_static_membership(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    ids = await add_users(db, tenant.project_id, [{"external_id": f"s{i}"} for i in range(5)])
    lst = await _create(client, tenant, {"name": "Static", "type": "static", "is_visible": False})
    assert (lst["state"], lst["is_visible"], lst["users_count"]) == ("ready", False, 0)
    r = await client.post(
        f"{BASE}/lists/{lst['id']}/users", json={"external_ids": ["s0", "s1", "s1", "nobody"]}, headers=tenant.sk
    )
    assert r.json() == {"added": 2, "removed": 0, "missing": ["nobody"]}
    r = await client.post(f"{BASE}/lists/{lst['id']}/users", json={"external_ids": ["s1", "s2"]}, headers=tenant.sk)
    assert r.json()["added"] == 1
    page = (await client.get(f"{BASE}/lists/{lst['id']}/users?limit=2", headers=tenant.sk)).json()
    assert len(page["results"]) == 2 and page["nextCursor"]
    rest = (
        await client.get(f"{BASE}/lists/{lst['id']}/users?limit=2&cursor={page['nextCursor']}", headers=tenant.sk)
    ).json()
    assert {u["external_id"] for u in page["results"] + rest["results"]} == {"s0", "s1", "s2"}
    r = await client.delete(f"{BASE}/lists/{lst['id']}/users?external_id=s0&external_id=zzz", headers=tenant.sk)
    assert r.json() == {"added": 0, "removed": 1, "missing": ["zzz"]}
    assert await _members(db, tenant.project_id, lst["id"]) == {ids["s1"], ids["s2"]}
    assert (await client.get(f"{BASE}/lists/{lst['id']}", headers=tenant.sk)).json()["users_count"] == 2

    too_many = {"external_ids": [f"x{i}" for i in range(1001)]}
    assert_problem(
        await client.post(f"{BASE}/lists/{lst['id']}/users", json=too_many, headers=tenant.sk), 422, "validation_failed"
    )
    dynamic = await _create(client, tenant, {"name": "Dyn", "type": "dynamic", "rule": plan_rule()})
    assert_problem(
        await client.post(f"{BASE}/lists/{dynamic['id']}/users", json={"external_ids": ["s0"]}, headers=tenant.sk),
        409,
        "state_conflict",
    )


async def test_csv_import_into_a_static_list(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    ids = await add_users(db, tenant.project_id, [{"external_id": f"c{i}"} for i in range(1200)])
    lst = await _create(client, tenant, {"name": "Imported", "type": "static"})
    rows = ["Email,External_ID"] + [f"c{i}@x.com,c{i}" for i in range(1200)] + [",", "x@x.com,ghost"]
    csv_bytes = ("\ufeff" + "\n".join(rows) + "\n").encode()
    r = await client.post(
        f"{BASE}/lists/{lst['id']}/import", files={"file": ("people.csv", csv_bytes, "text/csv")}, headers=tenant.sk
    )
    assert r.status_code == 200, r.text
    assert r.json()["import"]["state"] == "queued"
    await run_jobs(db)
    got = (await client.get(f"{BASE}/lists/{lst['id']}", headers=tenant.sk)).json()
    status = got["import"]
    assert (status["state"], status["processed_rows"], status["added_rows"], status["failed_rows"]) == (
        "finished",
        1202,
        1200,
        2,
    )
    assert {e["row"] for e in status["errors"]} == {1201, 1202}
    assert got["users_count"] == 1200
    assert await _members(db, tenant.project_id, lst["id"]) == set(ids.values())

    no_column = b"email\nx@x.com\n"
    assert_problem(
        await client.post(
            f"{BASE}/lists/{lst['id']}/import", files={"file": ("bad.csv", no_column, "text/csv")}, headers=tenant.sk
        ),
        422,
        "validation_failed",
    )


async def test_incremental_hooks_touch_only_affected_lists(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    ids = await add_users(
        db,
        tenant.project_id,
        [
            {"external_id": "i1", "data": {"plan": "free"}},
            {"external_id": "i2", "data": {"plan": "free"}},
        ],
    )
    by_plan = await _create(client, tenant, {"name": "Pro", "type": "dynamic", "rule": plan_rule()})
    buyers_rule = wrapper(
        "and",
        event_rule(
            "purchase",
            frequency={"period": {"type": "rolling", "unit": "day", "value": 30}, "operator": ">=", "count": 2},
        ),
    )
    buyers = await _create(client, tenant, {"name": "Buyers", "type": "dynamic", "rule": buyers_rule})
    await run_jobs(db)

    # A user change moves i1 into "Pro"; the event-only list is not re-evaluated.
    async with db.transaction(project_id=tenant.project_id) as session:
        from clarion.users.models import User

        user = (await session.execute(select(User).where(User.id == ids["i1"]))).scalar_one()
        user.data = {"plan": "pro"}
        await session.flush()
        touched = await service.on_users_changed(session, tenant.project_id, [ids["i1"]])
    assert touched == [by_plan["id"]]
    assert await _members(db, tenant.project_id, by_plan["id"]) == {ids["i1"]}
    assert (await client.get(f"{BASE}/lists/{by_plan['id']}", headers=tenant.sk)).json()["users_count"] == 1

    # Events: only lists naming the event are touched, and only for the users who did it.
    now = utcnow()
    await add_events(
        db,
        tenant.project_id,
        [
            {"user_id": ids["i2"], "name": "purchase", "created_at": now},
            {"user_id": ids["i2"], "name": "purchase", "created_at": now},
        ],
    )
    async with db.transaction(project_id=tenant.project_id) as session:
        assert await service.on_events_recorded(session, tenant.project_id, [(ids["i2"], "visit")]) == []
        touched = await service.on_events_recorded(
            session, tenant.project_id, [(ids["i2"], "purchase"), (ids["i2"], "purchase")]
        )
    assert touched == [buyers["id"]]
    assert await _members(db, tenant.project_id, buyers["id"]) == {ids["i2"]}

    # Leaving: i1 is no longer pro.
    async with db.transaction(project_id=tenant.project_id) as session:
        user = (await session.execute(select(User).where(User.id == ids["i1"]))).scalar_one()
        user.data = {"plan": "free"}
        await session.flush()
        await service.on_users_changed(session, tenant.project_id, [ids["i1"]])
    assert await _members(db, tenant.project_id, by_plan["id"]) == set()

    # The single-user check agrees.
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        lst = await service.get_list(session, buyers["id"])
        assert await service.user_matches(session, lst, ids["i2"]) is True
        assert await service.user_matches(session, lst, ids["i1"]) is False


async def test_audience_and_merge(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> None:
    ids = await add_users(db, tenant.project_id, [{"external_id": f"a{i}"} for i in range(4)])
    one = await _create(client, tenant, {"name": "One", "type": "static"})
    two = await _create(client, tenant, {"name": "Two", "type": "static"})
    out = await _create(client, tenant, {"name": "Out", "type": "static"})
    for lst, members in ((one, ["a0", "a1"]), (two, ["a1", "a2", "a3"]), (out, ["a3"])):
        await client.post(f"{BASE}/lists/{lst['id']}/users", json={"external_ids": members}, headers=tenant.sk)
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        rows = await session.execute(audience_user_ids(tenant.project_id, [one["id"], two["id"]], [out["id"]]))
        assert sorted(r[0] for r in rows) == sorted([ids["a0"], ids["a1"], ids["a2"]])
        rows = await session.execute(audience_user_ids(tenant.project_id, [one["id"]]))
        assert sorted(r[0] for r in rows) == sorted([ids["a0"], ids["a1"]])

    async with db.transaction(project_id=tenant.project_id) as session:
        await service.move_memberships(session, tenant.project_id, ids["a0"], ids["a2"])
    assert await _members(db, tenant.project_id, one["id"]) == {ids["a1"], ids["a2"]}
    assert await _members(db, tenant.project_id, two["id"]) == {ids["a1"], ids["a2"], ids["a3"]}


async def test_cross_project_isolation(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await add_users(db, tenant.project_id, [{"external_id": "same", "data": {"plan": "pro"}}])
    theirs = await add_users(db, other_tenant.project_id, [{"external_id": "same", "data": {"plan": "pro"}}])
    lst = await _create(client, tenant, {"name": "Pro", "type": "dynamic", "rule": plan_rule()})
    static = await _create(client, tenant, {"name": "S", "type": "static"})
    await run_jobs(db)
    assert await _members(db, tenant.project_id, lst["id"]) == {mine["same"]}
    for path in (f"/lists/{lst['id']}", f"/lists/{lst['id']}/users"):
        assert_problem(await client.get(BASE + path, headers=other_tenant.sk), 404, "resource_missing")
    assert_problem(await client.delete(f"{BASE}/lists/{lst['id']}", headers=other_tenant.sk), 404, "resource_missing")
    assert (await client.get(f"{BASE}/lists", headers=other_tenant.sk)).json()["results"] == []
    # Hooks called for the other project never touch this project's lists.
    async with db.transaction(project_id=other_tenant.project_id) as session:
        assert await service.on_users_changed(session, other_tenant.project_id, [theirs["same"]]) == []
    r = await client.post(f"{BASE}/lists/{static['id']}/users", json={"external_ids": ["same"]}, headers=tenant.sk)
    assert r.json()["added"] == 1
    assert await _members(db, tenant.project_id, static["id"]) == {mine["same"]}


async def test_materialisation_is_chunked_and_stops_when_the_rule_moves_on(db: Database, tenant: Tenant) -> None:
    ids = await add_users(db, tenant.project_id, [{"external_id": f"k{i}", "data": {"n": i}} for i in range(40)])
    rule = wrapper("and", node("number", "data.n", ">=", 10))
    async with db.transaction(project_id=tenant.project_id) as session:
        lst = UserList(
            name="chunks",
            type="dynamic",
            state="loading",
            version=1,
            published=True,
            is_visible=True,
            rule_event_names=[],
            rule_reads_user=True,
            rule=rule,
        )
        session.add(lst)
        await session.flush()
        list_id = lst.id
        # A stale member that no longer matches must leave.
        session.add(ListUser(list_id=list_id, user_id=ids["k0"], project_id=tenant.project_id, created_at=utcnow()))
    ctx = JobContext(db, 0, tenant.project_id, 1)
    started = time.monotonic()
    assert await list_jobs.materialise(ctx, list_id, 1, chunk=7) is True
    assert time.monotonic() - started < 60
    assert await _members(db, tenant.project_id, list_id) == {ids[f"k{i}"] for i in range(10, 40)}
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        lst = await service.get_list(session, list_id)
        assert (lst.state, lst.users_count) == ("ready", 30)
    # A job for an older version does nothing.
    assert await list_jobs.materialise(ctx, list_id, 0, chunk=7) is False


async def test_rolling_window_lists_are_refreshed_periodically(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    ids = await add_users(db, tenant.project_id, [{"external_id": "r1"}])
    rule = wrapper(
        "and",
        event_rule(
            "login", frequency={"period": {"type": "rolling", "unit": "hour", "value": 1}, "operator": ">=", "count": 1}
        ),
    )
    lst = await _create(client, tenant, {"name": "Active", "type": "dynamic", "rule": rule})
    static_rule = await _create(client, tenant, {"name": "Plan", "type": "dynamic", "rule": plan_rule()})
    await run_jobs(db)
    # An event written without the hook (e.g. a bulk load): only the periodic refresh picks it up.
    await add_events(db, tenant.project_id, [{"user_id": ids["r1"], "name": "login", "created_at": utcnow()}])
    async with db.transaction(project_id=tenant.project_id) as session:
        for list_id in (lst["id"], static_rule["id"]):
            row = await service.get_list(session, list_id)
            row.refreshed_at = utcnow() - list_jobs.REFRESH_INTERVAL * 2
    assert await list_jobs.refresh_windowed_lists(db) >= 1
    await run_jobs(db)
    assert await _members(db, tenant.project_id, lst["id"]) == {ids["r1"]}
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        # The rule without a rolling window was not re-materialised.
        plan_list = await service.get_list(session, static_rule["id"])
        assert plan_list.refreshed_at is not None and plan_list.refreshed_at < utcnow() - list_jobs.REFRESH_INTERVAL
        assert (await service.get_list(session, lst["id"])).state == "ready"
