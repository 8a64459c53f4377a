"""Project B's key can neither read nor write project A's users, events or subscriptions."""

from __future__ import annotations

import httpx

from tests.conftest import Tenant, assert_problem

C = "/api/client"
WINDOW = {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}


async def test_cross_project_sweep(client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant) -> None:
    a, b = tenant, other_tenant
    await client.post(
        f"{C}/users/batch",
        json=[{"external_id": "alice", "email": "alice@a.co", "data": {"secret": "a"}}],
        headers=a.sk,
    )
    await client.post(
        f"{C}/events",
        json=[{"name": "a_only", "external_id": "alice", "created_at": "2026-06-01T00:00:00Z"}],
        headers=a.sk,
    )
    a_subs = (await client.get(f"{C}/subscriptions", headers=a.sk)).json()["results"]
    a_sub = a_subs[0]["id"]
    supp = (
        await client.post(f"{C}/suppressions", json={"channel": "email", "address": "alice@a.co"}, headers=a.sk)
    ).json()
    token_a = (await client.post(f"{C}/users/alice/sessions", headers=a.sk)).json()["token"]

    # Reads with B's key see nothing of A.
    assert (await client.get(f"{C}/users", headers=b.sk)).json()["results"] == []
    assert (await client.get(f"{C}/users", params={"q": "alice"}, headers=b.sk)).json()["results"] == []
    assert_problem(await client.get(f"{C}/users/alice", headers=b.sk), 404, "resource_missing")
    assert_problem(await client.get(f"{C}/users/alice/subscriptions", headers=b.sk), 404, "resource_missing")
    assert (await client.get(f"{C}/events", params=WINDOW, headers=b.sk)).json()["results"] == []
    assert (await client.get(f"{C}/events", params={**WINDOW, "external_id": "alice"}, headers=b.sk)).json()[
        "results"
    ] == []
    agg = (await client.get(f"{C}/events/aggregations", params=WINDOW, headers=b.sk)).json()["results"]
    assert agg[0]["count"] == 0
    assert_problem(await client.get(f"{C}/subscriptions/{a_sub}", headers=b.sk), 404, "resource_missing")
    assert a_sub not in {s["id"] for s in (await client.get(f"{C}/subscriptions", headers=b.sk)).json()["results"]}
    assert (await client.get(f"{C}/suppressions", headers=b.sk)).json()["results"] == []
    assert (await client.get(f"{C}/data-schema", headers=b.sk)).json()["results"] == []
    assert_problem(
        await client.get(f"{C}/users/me", headers={**b.pk, "X-Spotzee-User-Token": token_a}),
        401,
        "authentication_required",
    )

    # Writes with B's key never touch A's rows.
    assert_problem(
        await client.patch(f"{C}/subscriptions/{a_sub}", json={"name": "x", "is_public": True}, headers=b.sk),
        404,
        "resource_missing",
    )
    assert_problem(
        await client.patch(
            f"{C}/users/alice/subscriptions", json=[{"subscription_id": a_sub, "state": 0}], headers=b.sk
        ),
        404,
        "resource_missing",
    )
    r = await client.post(
        f"{C}/subscriptions/batch", json=[{"external_id": "alice", "subscription_id": a_sub, "state": 0}], headers=b.sk
    )
    assert r.json()["failed"] == 1
    assert_problem(await client.post(f"{C}/users/alice/sessions", headers=b.sk), 404, "resource_missing")
    assert_problem(await client.delete(f"{C}/users/alice", headers=b.sk), 404, "resource_missing")
    assert (await client.delete(f"{C}/users", params={"user_id": "alice"}, headers=b.sk)).status_code == 204
    assert_problem(await client.delete(f"{C}/suppressions/{supp['id']}", headers=b.sk), 404, "resource_missing")
    assert_problem(
        await client.patch(
            f"{C}/subscriptions/me",
            json=[{"subscription_id": a_sub, "state": 0}],
            headers={**b.pk, "X-Spotzee-User-Token": token_a},
        ),
        401,
        "authentication_required",
    )
    # Same external_id in B is a different person.
    r = await client.post(
        f"{C}/users/batch", json=[{"external_id": "alice", "data": {"secret": None, "b": 1}}], headers=b.sk
    )
    b_alice = r.json()["results"][0]["user"]
    assert b_alice["project_id"] == b.project_id and b_alice["data"] == {"b": 1}
    await client.post(f"{C}/events", json=[{"name": "b_only", "external_id": "alice"}], headers=b.pk)

    # A's data is intact.
    alice = (await client.get(f"{C}/users/alice", headers=a.sk)).json()
    assert alice["data"] == {"secret": "a"} and alice["id"] != b_alice["id"]
    events = (await client.get(f"{C}/events", params=WINDOW, headers=a.sk)).json()["results"]
    assert [e["name"] for e in events] == ["a_only"]
    states = (await client.get(f"{C}/users/alice/subscriptions", headers=a.sk)).json()["results"]
    assert all(s["state"] == 1 for s in states)
    assert (await client.get(f"{C}/subscriptions/{a_sub}", headers=a.sk)).json()["name"] == a_subs[0]["name"]
    assert len((await client.get(f"{C}/suppressions", headers=a.sk)).json()["results"]) == 1
