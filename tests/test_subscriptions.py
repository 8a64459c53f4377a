"""Subscription types, user states, sessions' /subscriptions/me, suppressions and eligibility."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from sqlalchemy import select

from clarion.core.db import Database
from clarion.subscriptions.eligibility import eligible, ineligibility_reason, may_receive
from clarion.subscriptions.suppression import suppress
from clarion.users.upsert import USERS
from tests.conftest import Tenant, assert_problem

S = "/api/client/subscriptions"


async def subs_by_channel(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, dict[str, Any]]:
    r = await client.get(S, params={"limit": 100}, headers=tenant.sk)
    return {s["channel"]: s for s in r.json()["results"]}


async def test_new_projects_get_one_default_subscription_per_channel(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    r = await client.post(
        "/api/admin/projects", json={"name": "Second", "locale": "en", "timezone": "UTC"}, headers=tenant.ok
    )
    assert r.status_code == 200, r.text
    project_id = r.json()["id"]
    from clarion.keys.service import create_project_key

    async with db.transaction() as session:
        _, value = await create_project_key(session, project_id, name="t", scope="secret", role="admin")
    rows = (await client.get(S, headers={"Authorization": f"Bearer {value}"})).json()["results"]
    assert sorted(s["channel"] for s in rows) == ["email", "in_app", "push", "text", "webhook"]
    assert all(s["project_id"] == project_id for s in rows)
    assert sorted(s["channel"] for s in (await subs_by_channel(client, tenant)).values()) == [
        "email",
        "in_app",
        "push",
        "text",
        "webhook",
    ]


async def test_subscription_crud_and_roles(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(S, json={"name": "News", "channel": "email", "is_public": True}, headers=tenant.sk)
    assert r.status_code == 200
    sub = r.json()
    assert sub["name"] == "News" and sub["is_public"] is True and sub["project_id"] == tenant.project_id
    r = await client.patch(f"{S}/{sub['id']}", json={"name": "Newsletter", "is_public": False}, headers=tenant.sk)
    assert r.json()["name"] == "Newsletter" and r.json()["channel"] == "email"
    assert (await client.get(f"{S}/{sub['id']}", headers=tenant.sk)).json()["is_public"] is False
    assert_problem(
        await client.patch(f"{S}/{sub['id']}", json={"name": "x"}, headers=tenant.sk), 422, "validation_failed"
    )
    assert_problem(
        await client.patch(
            f"{S}/{sub['id']}", json={"name": "x", "is_public": True, "channel": "text"}, headers=tenant.sk
        ),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.post(S, json={"name": "x", "channel": "fax"}, headers=tenant.sk), 422, "validation_failed"
    )
    assert_problem(await client.get(f"{S}/999999999", headers=tenant.sk), 404, "resource_missing")
    editor = (
        await client.post(
            "/api/client/keys", json={"name": "ed", "scope": "secret", "role": "editor"}, headers=tenant.sk
        )
    ).json()["value"]
    assert_problem(
        await client.post(S, json={"name": "x", "channel": "email"}, headers={"Authorization": f"Bearer {editor}"}),
        403,
        "permission_denied",
    )


async def test_user_states_default_subscribed_and_toggle(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post("/api/client/users/batch", json=[{"external_id": "s1", "email": "s1@x.co"}], headers=tenant.sk)
    subs = await subs_by_channel(client, tenant)
    r = await client.get("/api/client/users/s1/subscriptions", headers=tenant.sk)
    states = {s["channel"]: s["state"] for s in r.json()["results"]}
    assert states == {c: 1 for c in ("email", "text", "push", "webhook", "in_app")}
    r = await client.patch(
        "/api/client/users/s1/subscriptions",
        json=[{"subscription_id": subs["email"]["id"], "state": 0}],
        headers=tenant.sk,
    )
    assert r.status_code == 200 and r.json()["external_id"] == "s1"
    r = await client.get("/api/client/users/s1/subscriptions", headers=tenant.sk)
    assert {s["channel"]: s["state"] for s in r.json()["results"]}["email"] == 0
    assert_problem(
        await client.patch(
            "/api/client/users/s1/subscriptions", json=[{"subscription_id": 999999999, "state": 0}], headers=tenant.sk
        ),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.patch(
            "/api/client/users/s1/subscriptions",
            json=[{"subscription_id": subs["email"]["id"], "state": 7}],
            headers=tenant.sk,
        ),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.get("/api/client/users/ghost/subscriptions", headers=tenant.sk), 404, "resource_missing"
    )


async def test_batch_toggle_per_item_results(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post(
        "/api/client/users/batch", json=[{"external_id": "b1"}, {"anonymous_id": "b-anon"}], headers=tenant.sk
    )
    subs = await subs_by_channel(client, tenant)
    sid = subs["text"]["id"]
    r = await client.post(
        f"{S}/batch",
        json=[
            {"external_id": "b1", "subscription_id": sid, "state": 0},
            {"anonymous_id": "b-anon", "subscription_id": sid, "state": 2},
            {"external_id": "nobody", "subscription_id": sid, "state": 1},
            {"external_id": "b1", "subscription_id": 999999999, "state": 1},
            {"subscription_id": sid, "state": 1},
            {"external_id": "b1", "subscription_id": sid, "state": 9},
        ],
        headers=tenant.sk,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["succeeded"] == 2 and body["failed"] == 4
    assert body["results"][0] == {
        "index": 0,
        "external_id": "b1",
        "anonymous_id": None,
        "subscription_id": sid,
        "state": 0,
        "error": None,
    }
    assert [x["error"]["code"] for x in body["results"][2:]] == [
        "resource_missing",
        "resource_missing",
        "parameter_missing",
        "parameter_invalid_format",
    ]
    r = await client.get("/api/client/users/b1/subscriptions", headers=tenant.sk)
    assert {s["channel"]: s["state"] for s in r.json()["results"]}["text"] == 0


async def test_subscriptions_me_with_user_token(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post("/api/client/users/batch", json=[{"external_id": "me2"}], headers=tenant.sk)
    token = (await client.post("/api/client/users/me2/sessions", headers=tenant.sk)).json()["token"]
    subs = await subs_by_channel(client, tenant)
    headers = {**tenant.pk, "X-Spotzee-User-Token": token}
    r = await client.patch(f"{S}/me", json=[{"subscription_id": subs["push"]["id"], "state": 0}], headers=headers)
    assert r.status_code == 200
    body = r.json()
    assert {s["channel"]: s["state"] for s in body["results"]}["push"] == 0
    assert body["nextCursor"] is None and len(body["results"]) == 5
    assert_problem(await client.patch(f"{S}/me", json=[], headers=tenant.pk), 401, "authentication_required")
    assert_problem(
        await client.patch(f"{S}/me", json=[], headers={**tenant.sk, "X-Spotzee-User-Token": token}),
        401,
        "authentication_required",
    )
    assert_problem(await client.get(S, headers=tenant.pk), 401, "authentication_required")


async def test_suppressions_crud(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(
        "/api/client/suppressions",
        json={"channel": "email", "address": "Bounce@X.co", "reason": "hard_bounce"},
        headers=tenant.sk,
    )
    assert r.status_code == 200
    row = r.json()
    assert row["address"] == "bounce@x.co" and row["reason"] == "hard_bounce"
    assert_problem(
        await client.post(
            "/api/client/suppressions", json={"channel": "email", "address": "bounce@x.co"}, headers=tenant.sk
        ),
        409,
        "resource_already_exists",
    )
    assert_problem(
        await client.post("/api/client/suppressions", json={"channel": "email", "address": "nope"}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert_problem(
        await client.post(
            "/api/client/suppressions",
            json={"channel": "email", "address": "a@b.co", "reason": "because"},
            headers=tenant.sk,
        ),
        422,
        "validation_failed",
    )
    r = await client.post(
        "/api/client/suppressions",
        json={"channel": "text", "address": "+61 412 000 111", "reason": "stop_keyword"},
        headers=tenant.sk,
    )
    assert r.json()["address"] == "+61412000111"
    listed = (await client.get("/api/client/suppressions", params={"channel": "email"}, headers=tenant.sk)).json()
    assert [s["address"] for s in listed["results"]] == ["bounce@x.co"]
    r = await client.delete(f"/api/client/suppressions/{row['id']}", headers=tenant.sk)
    assert r.status_code == 200 and r.json() is True
    assert_problem(
        await client.delete(f"/api/client/suppressions/{row['id']}", headers=tenant.sk), 404, "resource_missing"
    )


async def test_single_and_bulk_eligibility_agree(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    """Every combination of address / suppression / state, checked against an independent oracle."""
    subs = await subs_by_channel(client, tenant)
    sid = subs["email"]["id"]
    cases = list(itertools.product([True, False], [True, False], [None, 0, 1, 2]))
    items = []
    for n, (has_email, _, _) in enumerate(cases):
        items.append({"external_id": f"el{n}", **({"email": f"el{n}@x.co"} if has_email else {})})
    await client.post("/api/client/users/batch", json=items, headers=tenant.sk)
    expected: dict[str, tuple[bool, str | None]] = {}
    for n, (has_email, suppressed, state) in enumerate(cases):
        ext = f"el{n}"
        if state is not None:
            r = await client.patch(
                f"/api/client/users/{ext}/subscriptions",
                json=[{"subscription_id": sid, "state": state}],
                headers=tenant.sk,
            )
            assert r.status_code == 200
        if not has_email:
            expected[ext] = (False, "no_address")
        elif suppressed:
            expected[ext] = (False, "suppressed")
        elif state == 0:
            expected[ext] = (False, "unsubscribed")
        else:
            expected[ext] = (True, None)
    async with db.transaction(project_id=tenant.project_id) as session:
        for n, (_, suppressed, _) in enumerate(cases):
            if suppressed:
                await suppress(session, tenant.project_id, "email", f"EL{n}@x.co", "complaint")
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        rows = (
            await session.execute(
                select(USERS.c.id, USERS.c.external_id).where(USERS.c.project_id == tenant.project_id)
            )
        ).all()
        single = {ext: await may_receive(session, user=uid, channel="email", subscription_id=sid) for uid, ext in rows}
        bulk = set(
            (
                await session.execute(
                    select(USERS.c.external_id).where(
                        USERS.c.project_id == tenant.project_id, eligible(USERS, channel="email", subscription_id=sid)
                    )
                )
            ).scalars()
        )
        reasons = dict(
            (
                await session.execute(
                    select(
                        USERS.c.external_id, ineligibility_reason(USERS, channel="email", subscription_id=sid)
                    ).where(USERS.c.project_id == tenant.project_id)
                )
            ).all()
        )
    assert single == expected
    assert bulk == {ext for ext, (ok, _) in expected.items() if ok}
    assert reasons == {ext: reason for ext, (_, reason) in expected.items()}
    # Channels without an address column: webhook/in_app always have one, push needs a device.
    async with db.transaction(project_id=tenant.project_id, readonly=True) as session:
        uid = rows[0][0]
        assert await may_receive(session, user=uid, channel="webhook", subscription_id=subs["webhook"]["id"]) == (
            True,
            None,
        )
        assert await may_receive(session, user=uid, channel="push", subscription_id=subs["push"]["id"]) == (
            False,
            "no_address",
        )
