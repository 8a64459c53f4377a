"""Users: batch upsert, async PATCH, reads, deletes, identity linking and merge, sessions."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from clarion.core.db import Database
from clarion.core.registry import load_job_handlers
from clarion.events.models import Event
from clarion.subscriptions.models import UserSubscription
from clarion.users.models import User
from clarion.worker.jobs import JobSource
from tests.conftest import Tenant, assert_problem

U = "/api/client/users"


async def batch(client: httpx.AsyncClient, tenant: Tenant, items: list[Any]) -> dict[str, Any]:
    r = await client.post(f"{U}/batch", json=items, headers=tenant.sk)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_batch_upsert_creates_and_normalises(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = await batch(
        client,
        tenant,
        [
            {
                "external_id": "u1",
                "email": "Ada@Example.COM",
                "phone": "+61 412 345 678",
                "timezone": "Australia/Sydney",
                "locale": "en-AU",
                "data": {"plan": "pro", "address": {"city": "Sydney"}},
            }
        ],
    )
    assert body["succeeded"] == 1 and body["failed"] == 0
    user = body["results"][0]["user"]
    assert body["results"][0]["index"] == 0 and body["results"][0]["external_id"] == "u1"
    assert user["email"] == "ada@example.com"
    assert user["phone"] == "+61412345678"
    assert user["timezone"] == "Australia/Sydney" and user["locale"] == "en-AU"
    assert user["data"] == {"plan": "pro", "address": {"city": "Sydney"}}
    assert user["project_id"] == tenant.project_id and user["has_push_device"] is False and user["devices"] == []


async def test_bad_items_do_not_poison_the_batch(client: httpx.AsyncClient, tenant: Tenant) -> None:
    items = [
        {"external_id": "ok1", "email": "a@b.co"},
        {"external_id": "bad-email", "email": "not an email"},
        {"external_id": "bad-phone", "phone": "12"},
        {"external_id": "bad-tz", "timezone": "Mars/Base"},
        {"external_id": "bad-locale", "locale": "en-au"},
        {"email": "x@y.co"},
        {"external_id": "x", "colour": "blue"},
        "not an object",
        {"external_id": ""},
        {"external_id": "ok2", "data": {"a": 1}},
    ]
    body = await batch(client, tenant, items)
    assert body["succeeded"] == 2 and body["failed"] == 8
    codes = [r.get("error", {}).get("code") for r in body["results"]]
    assert codes == [
        None,
        "parameter_invalid_format",
        "parameter_invalid_format",
        "parameter_invalid_format",
        "parameter_invalid_format",
        "parameter_missing",
        "parameter_unknown",
        "parameter_invalid_format",
        "parameter_invalid_empty",
        None,
    ]
    assert "email" in body["results"][1]["error"]["message"]
    assert "phone" in body["results"][2]["error"]["message"]
    assert body["results"][9]["user"]["external_id"] == "ok2"
    r = await client.get(f"{U}/ok1", headers=tenant.sk)
    assert r.status_code == 200
    assert_problem(await client.get(f"{U}/bad-email", headers=tenant.sk), 404, "resource_missing")


async def test_batch_body_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(
        await client.post(f"{U}/batch", json={"external_id": "a"}, headers=tenant.sk), 422, "validation_failed"
    )
    too_many = [{"external_id": f"e{i}"} for i in range(101)]
    assert_problem(await client.post(f"{U}/batch", json=too_many, headers=tenant.sk), 422, "validation_failed")
    assert_problem(await client.post(f"{U}/batch", json=[], headers=tenant.pk), 401, "authentication_required")
    assert_problem(await client.post(f"{U}/batch", json=[]), 401, "authentication_required")


async def test_data_deep_merge_and_null_removes(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await batch(client, tenant, [{"external_id": "m", "email": "m@x.co", "data": {"a": {"b": 1, "c": 2}, "d": 3}}])
    body = await batch(client, tenant, [{"external_id": "m", "data": {"a": {"c": None, "e": 5}, "d": None, "f": [1]}}])
    user = body["results"][0]["user"]
    assert user["data"] == {"a": {"b": 1, "e": 5}, "f": [1]}
    assert user["email"] == "m@x.co"  # absent field untouched
    body = await batch(client, tenant, [{"external_id": "m", "email": None}])
    assert body["results"][0]["user"]["email"] is None
    stored = (await client.get(f"{U}/m", headers=tenant.sk)).json()  # the profile update was written
    assert stored["data"] == {"a": {"b": 1, "e": 5}, "f": [1]}
    assert stored["email"] is None
    assert stored["updated_at"] == body["results"][0]["user"]["updated_at"]


async def test_repeats_within_a_batch_accumulate(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = await batch(client, tenant, [{"external_id": "r", "data": {"a": 1}}, {"external_id": "r", "data": {"b": 2}}])
    assert body["results"][1]["user"]["data"] == {"a": 1, "b": 2}
    assert body["results"][0]["user"]["id"] == body["results"][1]["user"]["id"]


async def test_get_list_search_sort_and_pagination(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await batch(client, tenant, [{"external_id": f"p{i}", "email": f"p{i}@list.example"} for i in range(5)])
    await batch(client, tenant, [{"anonymous_id": "anon-list"}])
    r = await client.get(U, params={"limit": 2}, headers=tenant.sk)
    assert r.status_code == 200
    page1 = r.json()
    assert [u["external_id"] for u in page1["results"]] == [None, "p4"]  # id desc by default
    assert page1["nextCursor"] and page1["prevCursor"] is None and page1["limit"] == 2
    assert r.headers["x-total-count"] == "6"
    r = await client.get(U, params={"limit": 2, "cursor": page1["nextCursor"]}, headers=tenant.sk)
    assert [u["external_id"] for u in r.json()["results"]] == ["p3", "p2"]
    r = await client.get(U, params={"q": "p3@list"}, headers=tenant.sk)
    assert [u["external_id"] for u in r.json()["results"]] == ["p3"]
    r = await client.get(U, params={"q": "anon-li"}, headers=tenant.sk)
    assert [u["anonymous_id"] for u in r.json()["results"]] == ["anon-list"]
    r = await client.get(U, params={"sort": "created_at", "direction": "asc", "limit": 1}, headers=tenant.sk)
    assert r.json()["results"][0]["external_id"] == "p0"
    assert_problem(await client.get(U, params={"sort": "nope"}, headers=tenant.sk), 400, "parameter_invalid_format")
    assert_problem(await client.get(U, params={"limit": 101}, headers=tenant.sk), 400, "parameter_invalid_format")


async def test_delete_single_and_batch(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    await batch(client, tenant, [{"external_id": e} for e in ("d1", "d2", "d3")])
    await client.post("/api/client/events", json=[{"name": "x", "external_id": "d1"}], headers=tenant.sk)
    r = await client.delete(f"{U}/d1", headers=tenant.sk)
    assert r.status_code == 204
    assert_problem(await client.get(f"{U}/d1", headers=tenant.sk), 404, "resource_missing")
    assert_problem(await client.delete(f"{U}/d1", headers=tenant.sk), 404, "resource_missing")
    r = await client.delete(U, params=[("user_id", "d2"), ("user_id", "d3")], headers=tenant.sk)
    assert r.status_code == 204
    assert_problem(await client.get(f"{U}/d3", headers=tenant.sk), 404, "resource_missing")
    assert_problem(await client.delete(U, headers=tenant.sk), 400, "parameter_missing")
    async with db.session(project_id=tenant.project_id) as s:
        assert (await s.execute(select(func.count()).select_from(Event))).scalar() == 0


async def test_patch_users_is_processed_by_the_worker(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    load_job_handlers()
    r = await client.patch(U, json=[{"external_id": "async1", "data": {"x": 1}}], headers=tenant.sk)
    assert r.status_code == 204 and r.content == b""
    assert_problem(await client.get(f"{U}/async1", headers=tenant.sk), 404, "resource_missing")
    while await JobSource(db).run_once():
        pass
    r = await client.get(f"{U}/async1", headers=tenant.sk)
    assert r.status_code == 200 and r.json()["data"] == {"x": 1}
    r = await client.patch(
        U, json=[{"external_id": "async2"}, {"external_id": "b", "email": "nope"}], headers=tenant.sk
    )
    assert r.status_code == 200
    body = r.json()
    assert body["succeeded"] == 1 and body["failed"] == 1
    assert body["results"][1]["error"]["code"] == "parameter_invalid_format"
    while await JobSource(db).run_once():
        pass
    assert (await client.get(f"{U}/async2", headers=tenant.sk)).status_code == 200
    assert_problem(await client.get(f"{U}/b", headers=tenant.sk), 404, "resource_missing")


async def _count_users(db: Database, project_id: int) -> int:
    async with db.session(project_id=project_id) as s:
        return int((await s.execute(select(func.count()).select_from(User))).scalar() or 0)


async def test_anonymous_user_identifies_in_place(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    await client.post("/api/client/events", json=[{"name": "view", "anonymous_id": "anon-1"}], headers=tenant.pk)
    body = await batch(client, tenant, [{"anonymous_id": "anon-1", "external_id": "known-1", "email": "k@x.co"}])
    user = body["results"][0]["user"]
    assert user["external_id"] == "known-1" and user["anonymous_id"] == "anon-1"
    assert await _count_users(db, tenant.project_id) == 1
    async with db.session(project_id=tenant.project_id) as s:
        owners = (await s.execute(select(Event.user_id))).scalars().all()
    assert owners == [user["id"]]


async def test_anonymous_user_merges_into_existing_user(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    target = (await batch(client, tenant, [{"external_id": "person", "data": {"tier": "gold"}}]))["results"][0]["user"]
    await client.post(
        "/api/client/events",
        json=[{"name": "view", "anonymous_id": "visitor", "user": {"email": "v@x.co", "data": {"seen": True}}}],
        headers=tenant.pk,
    )
    subs = (await client.get("/api/client/subscriptions", headers=tenant.sk)).json()["results"]
    email_sub = next(s for s in subs if s["channel"] == "email")
    r = await client.post(
        "/api/client/subscriptions/batch",
        json=[{"anonymous_id": "visitor", "subscription_id": email_sub["id"], "state": 0}],
        headers=tenant.sk,
    )
    assert r.json()["succeeded"] == 1
    assert await _count_users(db, tenant.project_id) == 2
    body = await batch(client, tenant, [{"external_id": "person", "anonymous_id": "visitor"}])
    merged = body["results"][0]["user"]
    assert merged["id"] == target["id"]
    assert merged["anonymous_id"] == "visitor"
    assert merged["email"] == "v@x.co"  # filled from the anonymous profile
    assert merged["data"] == {"tier": "gold", "seen": True}
    assert await _count_users(db, tenant.project_id) == 1
    async with db.session(project_id=tenant.project_id) as s:
        assert (await s.execute(select(Event.user_id))).scalars().all() == [target["id"]]
        states = (await s.execute(select(UserSubscription.user_id, UserSubscription.state))).all()
    assert states == [(target["id"], 0)]


async def test_linking_via_events_with_both_ids(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    await client.post("/api/client/events", json=[{"name": "a", "anonymous_id": "dev-9"}], headers=tenant.pk)
    await batch(client, tenant, [{"external_id": "member-9"}])
    r = await client.post(
        "/api/client/events",
        json=[{"name": "login", "anonymous_id": "dev-9", "external_id": "member-9"}],
        headers=tenant.pk,
    )
    assert r.status_code == 204
    assert await _count_users(db, tenant.project_id) == 1
    user = (await client.get(f"{U}/member-9", headers=tenant.sk)).json()
    assert user["anonymous_id"] == "dev-9"
    async with db.session(project_id=tenant.project_id) as s:
        assert set((await s.execute(select(Event.user_id))).scalars().all()) == {user["id"]}


async def test_anonymous_id_held_by_other_identified_user_is_left(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    await batch(client, tenant, [{"external_id": "owner", "anonymous_id": "shared"}])
    body = await batch(client, tenant, [{"external_id": "newcomer", "anonymous_id": "shared"}])
    assert body["results"][0]["user"]["external_id"] == "newcomer"
    assert body["results"][0]["user"]["anonymous_id"] is None
    assert (await client.get(f"{U}/owner", headers=tenant.sk)).json()["anonymous_id"] == "shared"
    assert await _count_users(db, tenant.project_id) == 2


async def test_sessions_and_users_me(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await batch(client, tenant, [{"external_id": "me-user", "email": "me@x.co"}])
    r = await client.post(f"{U}/me-user/sessions", headers=tenant.sk)
    assert r.status_code == 200
    token = r.json()["token"]
    assert r.json()["expires_at"]
    r = await client.get(f"{U}/me", headers={**tenant.pk, "X-Spotzee-User-Token": token})
    assert r.status_code == 200 and r.json()["external_id"] == "me-user"
    assert_problem(await client.get(f"{U}/me", headers=tenant.pk), 401, "authentication_required")
    assert_problem(
        await client.get(f"{U}/me", headers={**tenant.pk, "X-Spotzee-User-Token": "ut_forged"}),
        401,
        "authentication_required",
    )
    assert_problem(
        await client.get(f"{U}/me", headers={**tenant.sk, "X-Spotzee-User-Token": token}),
        401,
        "authentication_required",
    )
    assert_problem(await client.post(f"{U}/nobody/sessions", headers=tenant.sk), 404, "resource_missing")
    assert_problem(await client.post(f"{U}/me-user/sessions", headers=tenant.pk), 401, "authentication_required")


async def test_expired_session_is_rejected(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from clarion.core.clock import utcnow
    from clarion.users.models import UserSession

    await batch(client, tenant, [{"external_id": "exp"}])
    token = (await client.post(f"{U}/exp/sessions", headers=tenant.sk)).json()["token"]
    async with db.transaction(project_id=tenant.project_id) as s:
        await s.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_problem(
        await client.get(f"{U}/me", headers={**tenant.pk, "X-Spotzee-User-Token": token}),
        401,
        "authentication_required",
    )
    async with db.session(project_id=tenant.project_id) as s:
        hashes = (await s.execute(select(UserSession.token_hash))).scalars().all()
    assert token not in hashes and len(hashes[0]) == 64


async def test_concurrent_upserts_of_the_same_new_users_create_each_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    import asyncio

    items = [{"external_id": f"race{i}", "data": {f"k{i}": i}} for i in range(20)]
    responses = await asyncio.gather(
        *(client.post(f"{U}/batch", json=items, headers=tenant.sk) for _ in range(6)),
        *(
            client.post(
                "/api/client/events",
                json=[{"name": "x", "external_id": f"race{i}"} for i in range(20)],
                headers=tenant.sk,
            )
            for _ in range(4)
        ),
    )
    assert [r.status_code for r in responses] == [200] * 6 + [204] * 4
    assert await _count_users(db, tenant.project_id) == 20
    ids = {r.json()["results"][0]["user"]["id"] for r in responses[:6]}
    assert len(ids) == 1


async def test_batches_keyed_by_one_kind_of_id_find_existing_users(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """External-only and anonymous-only batches (PostgreSQL reads them through ``unnest``) resolve
    to the users already stored, and only to those of the caller's project."""
    first = await batch(
        client, tenant, [{"external_id": "k1"}, {"external_id": "k2"}, {"anonymous_id": "a1"}, {"anonymous_id": "a2"}]
    )
    ids = {r.get("external_id") or r.get("anonymous_id"): r["user"]["id"] for r in first["results"]}
    by_ext = await batch(
        client, tenant, [{"external_id": "k2", "data": {"n": 2}}, {"external_id": "k1"}, {"external_id": "k9"}]
    )
    assert [r["user"]["id"] for r in by_ext["results"][:2]] == [ids["k2"], ids["k1"]]
    assert by_ext["results"][0]["user"]["data"] == {"n": 2}
    assert by_ext["results"][2]["user"]["id"] not in ids.values()
    by_anon = await batch(client, tenant, [{"anonymous_id": "a2", "email": "a2@x.co"}, {"anonymous_id": "a1"}])
    assert [r["user"]["id"] for r in by_anon["results"]] == [ids["a2"], ids["a1"]]
    assert by_anon["results"][0]["user"]["email"] == "a2@x.co"
    assert await _count_users(db, tenant.project_id) == 5
