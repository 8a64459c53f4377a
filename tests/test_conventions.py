"""Request ids, version header, client type, and the error envelope on framework errors."""

from __future__ import annotations

import re

import httpx
import pytest

from clarion.api.app import create_app
from tests.conftest import Backend, Tenant, assert_problem, make_settings, new_tenant

REQ_ID = re.compile(r"^req_[0-9A-HJKMNP-TV-Z]{26}$")


async def test_every_response_has_request_id_and_version(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ok = await client.get("/api/client/me", headers=tenant.sk)
    missing = await client.get("/api/client/me")
    health = await client.get("/health")
    ids = set()
    for response in (ok, missing, health):
        assert REQ_ID.match(response.headers["x-request-id"]), response.headers
        assert response.headers["spotzee-version"] == "2026-04-28"
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 3


async def test_version_header_validation(client: httpx.AsyncClient, tenant: Tenant) -> None:
    good = await client.get("/api/client/me", headers={**tenant.sk, "Spotzee-Version": "2026-04-28"})
    assert good.status_code == 200
    body = assert_problem(
        await client.get("/api/client/me", headers={**tenant.sk, "Spotzee-Version": "2025-01-01"}),
        400,
        "version_unsupported",
    )
    assert body["param"] == "Spotzee-Version"
    for bad in ("yesterday", "2026-13-45", "20260428"):
        body = assert_problem(
            await client.get("/api/client/me", headers={**tenant.sk, "Spotzee-Version": bad}),
            400,
            "parameter_invalid_format",
        )
        assert body["param"] == "Spotzee-Version"


async def test_client_type_never_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for value in ("mcp", "sdk-js", "something-else", ""):
        r = await client.get("/api/client/me", headers={**tenant.sk, "x-spotzee-client-type": value})
        assert r.status_code == 200


async def test_unknown_route_and_method_are_problem_documents(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_problem(await client.get("/api/client/nope", headers=tenant.sk), 404, "resource_missing")
    assert_problem(await client.put("/api/client/me", headers=tenant.sk), 404, "resource_missing")


async def test_malformed_json_is_400_with_param(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post(
        "/api/client/tags", content=b"{not json", headers={**tenant.sk, "content-type": "application/json"}
    )
    body = assert_problem(r, 400, "parameter_invalid_format")
    assert body["param"] == "body"


async def test_wrong_types_and_unknown_fields_are_422_with_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = assert_problem(
        await client.post("/api/client/tags", json={"name": 5}, headers=tenant.sk), 422, "validation_failed"
    )
    assert body["param"] == "name"
    assert body["errors"][0]["param"] == "name"
    body = assert_problem(
        await client.post("/api/client/tags", json={"name": "x", "colour": "red"}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert body["errors"][0] == {
        "param": "colour",
        "code": "parameter_unknown",
        "message": body["errors"][0]["message"],
    }
    body = assert_problem(await client.post("/api/client/tags", json={}, headers=tenant.sk), 422, "validation_failed")
    assert body["errors"][0]["code"] == "parameter_missing"


async def test_unknown_enum_value_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.post("/api/client/keys", json={"name": "k", "role": "emperor"}, headers=tenant.sk)
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0]["param"] == "role"
    assert body["errors"][0]["code"] == "parameter_invalid_format"


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=101", "limit=-2", "page=sideways", "direction=up"])
async def test_bad_query_params_are_400(client: httpx.AsyncClient, tenant: Tenant, query: str) -> None:
    body = assert_problem(
        await client.get(f"/api/client/tags?{query}", headers=tenant.sk), 400, "parameter_invalid_format"
    )
    assert body["param"] == query.split("=")[0]


async def test_bad_path_id_is_400(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = assert_problem(await client.get("/api/client/tags/abc", headers=tenant.sk), 400, "parameter_invalid_format")
    assert body["param"] == "tagId"


async def test_unhandled_exception_is_500_problem(backend: Backend) -> None:
    from fastapi import APIRouter

    app = create_app(make_settings(backend))
    tenant = await new_tenant(app.state.db)
    router = APIRouter()

    @router.get("/api/client/__boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    app.include_router(router)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
        ) as c:
            r = await c.get("/api/client/__boom", headers=tenant.sk)
        body = assert_problem(r, 500, "internal_error")
        assert "kaboom" not in body["message"]
    finally:
        await app.state.db.dispose()


async def test_nul_characters_are_rejected_not_500(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = assert_problem(
        await client.post("/api/client/tags", json={"name": "a\u0000b"}, headers=tenant.sk), 422, "validation_failed"
    )
    assert "NUL" in body["message"]
    assert_problem(
        await client.post("/api/client/keys", json={"name": "k", "description": "x\u0000"}, headers=tenant.sk),
        422,
        "validation_failed",
    )
    assert_problem(await client.get("/api/client/tags?q=a%00b", headers=tenant.sk), 400, "parameter_invalid_format")
