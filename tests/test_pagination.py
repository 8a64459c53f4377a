"""Cursor pagination in both styles, stable while rows are inserted and deleted."""

from __future__ import annotations

import httpx

from tests.conftest import Tenant, assert_problem


async def _make_tags(client: httpx.AsyncClient, tenant: Tenant, names: list[str]) -> list[int]:
    ids = []
    for name in names:
        r = await client.post("/api/client/tags", json={"name": name}, headers=tenant.sk)
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    return ids


async def _walk(client: httpx.AsyncClient, tenant: Tenant, query: str) -> list[list[str]]:
    pages = []
    url = f"/api/client/tags?{query}"
    while True:
        r = await client.get(url, headers=tenant.sk)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([t["name"] for t in body["results"]])
        if body["nextCursor"] is None:
            return pages
        url = f"/api/client/tags?{query}&cursor={body['nextCursor']}"


async def test_spec_style_walk_forward_and_back(client: httpx.AsyncClient, tenant: Tenant) -> None:
    names = [f"t{i:02d}" for i in range(7)]
    await _make_tags(client, tenant, names)
    first = await client.get("/api/client/tags?limit=3&sort=name&direction=asc", headers=tenant.sk)
    body = first.json()
    assert first.headers["x-total-count"] == "7" and first.headers["x-limit"] == "3"
    assert [t["name"] for t in body["results"]] == ["t00", "t01", "t02"]
    assert body["prevCursor"] is None and body["limit"] == 3
    second = (
        await client.get(
            f"/api/client/tags?limit=3&sort=name&direction=asc&cursor={body['nextCursor']}&page=next", headers=tenant.sk
        )
    ).json()
    assert [t["name"] for t in second["results"]] == ["t03", "t04", "t05"]
    back = (
        await client.get(
            f"/api/client/tags?limit=3&sort=name&direction=asc&cursor={second['prevCursor']}&page=prev",
            headers=tenant.sk,
        )
    ).json()
    assert [t["name"] for t in back["results"]] == ["t00", "t01", "t02"]
    assert back["prevCursor"] is None and back["nextCursor"] is not None
    assert await _walk(client, tenant, "limit=3&sort=name&direction=asc") == [names[0:3], names[3:6], names[6:7]]


async def test_docs_style_sort_and_backward(client: httpx.AsyncClient, tenant: Tenant) -> None:
    names = [f"d{i}" for i in range(5)]
    await _make_tags(client, tenant, names)
    pages = await _walk(client, tenant, "limit=2&sort=-name")
    assert pages == [["d4", "d3"], ["d2", "d1"], ["d0"]]
    first = (await client.get("/api/client/tags?limit=2&sort=-name", headers=tenant.sk)).json()
    second = (
        await client.get(f"/api/client/tags?limit=2&sort=-name&cursor={first['nextCursor']}", headers=tenant.sk)
    ).json()
    back = (
        await client.get(
            f"/api/client/tags?limit=2&sort=-name&direction=backward&cursor={second['prevCursor']}", headers=tenant.sk
        )
    ).json()
    assert [t["name"] for t in back["results"]] == ["d4", "d3"]


async def test_default_sort_is_newest_first_and_limit_minus_one_is_all(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    ids = await _make_tags(client, tenant, [f"n{i}" for i in range(30)])
    default = (await client.get("/api/client/tags", headers=tenant.sk)).json()
    assert default["limit"] == 25 and len(default["results"]) == 25
    assert [t["id"] for t in default["results"]] == sorted(ids, reverse=True)[:25]
    everything = (await client.get("/api/client/tags?limit=-1", headers=tenant.sk)).json()
    assert len(everything["results"]) == 30 and everything["nextCursor"] is None and everything["limit"] == -1


async def test_stable_under_concurrent_inserts_and_deletes(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ids = await _make_tags(client, tenant, [f"s{i:02d}" for i in range(10)])
    page1 = (await client.get("/api/client/tags?limit=4&sort=name", headers=tenant.sk)).json()
    assert [t["name"] for t in page1["results"]] == ["s00", "s01", "s02", "s03"]
    # Meanwhile: a row on the first page is deleted, one is inserted before the cursor, one after.
    await client.delete(f"/api/client/tags/{ids[1]}", headers=tenant.sk)
    await _make_tags(client, tenant, ["s00a", "s05a"])
    seen = [t["name"] for t in page1["results"]]
    url = f"/api/client/tags?limit=4&sort=name&cursor={page1['nextCursor']}"
    while url:
        body = (await client.get(url, headers=tenant.sk)).json()
        seen += [t["name"] for t in body["results"]]
        url = f"/api/client/tags?limit=4&sort=name&cursor={body['nextCursor']}" if body["nextCursor"] else ""
    # Nothing repeated, nothing skipped among rows that existed throughout; the later insert is seen.
    assert len(seen) == len(set(seen))
    assert [n for n in seen if n not in ("s00a",)] == [
        "s00",
        "s01",
        "s02",
        "s03",
        "s04",
        "s05",
        "s05a",
        "s06",
        "s07",
        "s08",
        "s09",
    ]


async def test_cursor_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _make_tags(client, tenant, ["a", "b", "c"])
    assert_problem(
        await client.get("/api/client/tags?cursor=garbage!", headers=tenant.sk), 400, "parameter_invalid_format"
    )
    first = (await client.get("/api/client/tags?limit=1&sort=name", headers=tenant.sk)).json()
    body = assert_problem(
        await client.get(f"/api/client/tags?limit=1&sort=-created_at&cursor={first['nextCursor']}", headers=tenant.sk),
        400,
        "parameter_invalid_format",
    )
    assert body["param"] == "cursor"
    body = assert_problem(
        await client.get("/api/client/tags?sort=colour", headers=tenant.sk), 400, "parameter_invalid_format"
    )
    assert body["param"] == "sort"


async def test_q_searches_names(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _make_tags(client, tenant, ["vip", "vip-gold", "churned"])
    body = (await client.get("/api/client/tags?q=vip&sort=name", headers=tenant.sk)).json()
    assert [t["name"] for t in body["results"]] == ["vip", "vip-gold"]
