from __future__ import annotations

import httpx


async def test_openapi_document_is_3_1_with_error_envelope_everywhere(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    error_schema = doc["components"]["schemas"]["ErrorResponse"]
    assert set(error_schema["required"]) >= {"code", "message", "error"}
    assert (
        len(error_schema["properties"]["code"]["$ref" if "$ref" in error_schema["properties"]["code"] else "anyOf"]) > 0
    )
    operations = [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if path.startswith("/api/")
    ]
    assert len(operations) >= 20
    for path, method, op in operations:
        for status in ("400", "401", "403", "404", "409", "422", "429", "500"):
            response = op["responses"][status]
            assert "application/problem+json" in response["content"], (path, method, status)
            assert "X-Request-Id" in response["headers"]
        names = {p["name"] for p in op.get("parameters", [])}
        assert "Spotzee-Version" in names
        if method in ("post", "patch"):
            assert "Idempotency-Key" in names
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for expected in (
        "getCurrentProject",
        "listProjects",
        "createProject",
        "listTags",
        "createProjectApiKey",
        "listOrganizationApiKeys",
    ):
        assert expected in ids
