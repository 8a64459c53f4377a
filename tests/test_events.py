"""Events: ingestion (§E5), listing, aggregations, pk_ access."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Tenant, assert_problem

E = "/api/client/events"
WINDOW = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}


def ev(name: str, ext: str | None = None, when: str = "2026-01-10T10:00:00Z", **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "created_at": when, **kw}
    if ext:
        item["external_id"] = ext
    return item


async def test_post_events_all_valid_is_204_and_user_block_upserts(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post("/api/client/users/batch", json=[{"external_id": "e1", "locale": "fr"}], headers=tenant.sk)
    r = await client.post(
        E,
        json=[
            ev(
                "purchase",
                "e1",
                data={"amount": 12.5, "sku": "A1"},
                user={"email": "E1@x.co", "locale": "en", "data": {"vip": True}},
            ),
            ev("signup", "e2", user={"locale": "de", "timezone": "Europe/Berlin"}),
        ],
        headers=tenant.sk,
    )
    assert r.status_code == 204 and r.content == b""
    e1 = (await client.get("/api/client/users/e1", headers=tenant.sk)).json()
    assert e1["email"] == "e1@x.co" and e1["data"] == {"vip": True}
    assert e1["locale"] == "fr"  # the user block's locale only fills an empty one
    e2 = (await client.get("/api/client/users/e2", headers=tenant.sk)).json()
    assert e2["locale"] == "de" and e2["timezone"] == "Europe/Berlin"


async def test_post_events_partial_failure_is_200_with_results(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(
        E,
        json=[
            ev("ok", "p1"),
            {"external_id": "p1"},
            {"name": "noid"},
            ev("bad-when", "p1", when="yesterday"),
            ev("bad-user", "p1", user={"email": "nope"}),
            ev("extra", "p1", colour="red"),
        ],
        headers=tenant.sk,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["succeeded"] == 1 and body["failed"] == 5
    assert body["results"][0]["id"].startswith("evt_") and "error" not in body["results"][0]
    assert [x.get("error", {}).get("code") for x in body["results"][1:]] == [
        "parameter_missing",
        "parameter_missing",
        "parameter_invalid_format",
        "parameter_invalid_format",
        "parameter_unknown",
    ]
    assert "user.email" in body["results"][4]["error"]["message"]
    listed = (await client.get(E, params=WINDOW, headers=tenant.sk)).json()["results"]
    assert [e["id"] for e in listed] == [body["results"][0]["id"]]


async def test_post_events_body_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(await client.post(E, json=[], headers=tenant.sk), 422, "validation_failed")
    assert_problem(await client.post(E, json=[ev("x", "a")] * 101, headers=tenant.sk), 422, "validation_failed")
    assert_problem(await client.post(E, json={"name": "x"}, headers=tenant.sk), 422, "validation_failed")
    assert_problem(await client.post(E, json=[ev("x", "a")]), 401, "authentication_required")


async def test_pk_may_post_events_but_not_read(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(E, json=[{"name": "page_view", "anonymous_id": "browser-1"}], headers=tenant.pk)
    assert r.status_code == 204
    assert_problem(await client.get(E, params=WINDOW, headers=tenant.pk), 401, "authentication_required")
    assert_problem(
        await client.get(f"{E}/aggregations", params=WINDOW, headers=tenant.pk), 401, "authentication_required"
    )
    assert_problem(await client.get("/api/client/users", headers=tenant.pk), 401, "authentication_required")


async def test_list_events_window_filters_payload_and_pages(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post(
        E,
        json=[
            ev("a", "l1", "2026-01-02T00:00:00Z", data={"k": 1}),
            ev("b", "l1", "2026-01-03T00:00:00Z"),
            ev("a", "l2", "2026-01-04T00:00:00Z"),
            ev("a", "l2", "2026-02-01T00:00:00Z"),  # outside: `to` is exclusive
            {"name": "a", "anonymous_id": "anon-l", "created_at": "2026-01-05T00:00:00Z"},
        ],
        headers=tenant.sk,
    )
    r = await client.get(E, params=WINDOW, headers=tenant.sk)
    assert r.status_code == 200
    rows = r.json()["results"]
    assert [e["created_at"][:10] for e in rows] == ["2026-01-05", "2026-01-04", "2026-01-03", "2026-01-02"]
    assert "data" not in rows[0] or rows[0]["data"] is None
    assert rows[0]["user"] == {"external_id": None, "anonymous_id": "anon-l"}
    r = await client.get(
        E, params={**WINDOW, "include_payload": "true", "external_id": "l1", "event_name": "a"}, headers=tenant.sk
    )
    rows = r.json()["results"]
    assert len(rows) == 1 and rows[0]["data"] == {"k": 1} and rows[0]["user"]["external_id"] == "l1"
    r = await client.get(E, params={**WINDOW, "anonymous_id": "anon-l"}, headers=tenant.sk)
    assert len(r.json()["results"]) == 1
    page = (await client.get(E, params={**WINDOW, "limit": 3, "direction": "asc"}, headers=tenant.sk)).json()
    assert [e["created_at"][:10] for e in page["results"]] == ["2026-01-02", "2026-01-03", "2026-01-04"]
    page2 = (
        await client.get(
            E, params={**WINDOW, "limit": 3, "direction": "asc", "cursor": page["nextCursor"]}, headers=tenant.sk
        )
    ).json()
    assert [e["created_at"][:10] for e in page2["results"]] == ["2026-01-05"] and page2["nextCursor"] is None
    assert_problem(await client.get(E, headers=tenant.sk), 400, "parameter_missing")
    assert_problem(
        await client.get(E, params={**WINDOW, "limit": 500}, headers=tenant.sk), 400, "parameter_invalid_format"
    )
    assert_problem(
        await client.get(E, params={"from": WINDOW["to"], "to": WINDOW["from"]}, headers=tenant.sk),
        400,
        "parameter_invalid_format",
    )


async def test_aggregations(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.post(
        E,
        json=[
            ev("view", "g1", "2026-01-02T01:00:00Z"),
            ev("view", "g1", "2026-01-02T05:00:00Z"),
            ev("view", "g2", "2026-01-03T00:00:00Z"),
            ev("buy", "g2", "2026-01-03T02:00:00Z"),
        ],
        headers=tenant.sk,
    )
    total = (await client.get(f"{E}/aggregations", params=WINDOW, headers=tenant.sk)).json()["results"]
    assert len(total) == 1
    assert total[0]["count"] == 4 and total[0]["unique_user_count"] == 2
    assert total[0]["first_seen_at"].startswith("2026-01-02T01:00:00") and "event_name" not in total[0]
    by_name = (
        await client.get(f"{E}/aggregations", params={**WINDOW, "group_by": "event_name"}, headers=tenant.sk)
    ).json()["results"]
    assert [(r["event_name"], r["count"], r["unique_user_count"]) for r in by_name] == [("buy", 1, 1), ("view", 3, 2)]
    by_day_user = (
        await client.get(
            f"{E}/aggregations", params=[*WINDOW.items(), ("group_by", "day"), ("group_by", "user")], headers=tenant.sk
        )
    ).json()["results"]
    assert [(r["day"], r["user"]["external_id"], r["count"]) for r in by_day_user] == [
        ("2026-01-02", "g1", 2),
        ("2026-01-03", "g2", 2),
    ]
    by_campaign = (
        await client.get(f"{E}/aggregations", params={**WINDOW, "group_by": "campaign"}, headers=tenant.sk)
    ).json()["results"]
    assert by_campaign == [
        {
            "campaign_id": None,
            "count": 4,
            "unique_user_count": 2,
            "first_seen_at": by_campaign[0]["first_seen_at"],
            "last_seen_at": by_campaign[0]["last_seen_at"],
        }
    ]
    paged = (
        await client.get(
            f"{E}/aggregations", params={**WINDOW, "group_by": "event_name", "limit": 1}, headers=tenant.sk
        )
    ).json()
    assert paged["results"][0]["event_name"] == "buy" and paged["nextCursor"]
    nxt = (
        await client.get(
            f"{E}/aggregations",
            params={**WINDOW, "group_by": "event_name", "limit": 1, "cursor": paged["nextCursor"]},
            headers=tenant.sk,
        )
    ).json()
    assert nxt["results"][0]["event_name"] == "view" and nxt["nextCursor"] is None
    assert_problem(
        await client.get(f"{E}/aggregations", params={**WINDOW, "group_by": "colour"}, headers=tenant.sk),
        400,
        "parameter_invalid_format",
    )
