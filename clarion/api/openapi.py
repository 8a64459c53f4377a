"""OpenAPI 3.1 generated from the routes, plus the cross-cutting parts the routes don't declare:
the error envelope on every operation, the common headers, and the bearer security scheme."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from clarion import API_VERSION, __version__
from clarion.api.errors import ErrorResponse

ERROR_STATUSES = {
    400: "Invalid parameter, version or idempotency key",
    401: "Missing, invalid or revoked API key",
    403: "The key's role is too low",
    404: "Unknown id, or one that belongs to another project",
    409: "Conflict: duplicate, state, or idempotency",
    422: "Request validation failed",
    429: "Rate limit exceeded",
    500: "Internal error",
    503: "Service unavailable",
}

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The `responses=` value for routers: every catalogue status with the problem document."""
    return {status: {"description": text, "model": ErrorResponse} for status, text in ERROR_STATUSES.items()}


def _common_headers() -> dict[str, Any]:
    return {
        "X-Request-Id": {"description": "req_<ULID>", "schema": {"type": "string", "pattern": "^req_[0-9A-Z]{26}$"}},
        "Spotzee-Version": {"description": "API release served", "schema": {"type": "string"}},
    }


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title="Clarion API",
            version=__version__,
            summary=f"Spotzee Main API compatible (release {API_VERSION})",
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                if method not in ("get", "post", "patch", "put", "delete"):
                    continue
                params = op.setdefault("parameters", [])
                if path.startswith("/api/"):
                    op.setdefault("security", [{"bearer": []}])
                    params.append(
                        {
                            "name": "Spotzee-Version",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "enum": [API_VERSION]},
                        }
                    )
                    if method in ("post", "patch"):
                        params.append(
                            {
                                "name": "Idempotency-Key",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            }
                        )
                for status, response in op.get("responses", {}).items():
                    response.setdefault("headers", {}).update(_common_headers())
                    if status in ("429", "409"):
                        response["headers"]["Retry-After"] = {"schema": {"type": "string"}, "required": False}
                    content = response.get("content", {})
                    if str(status)[0] in "45" and any("ErrorResponse" in str(v) for v in content.values()):
                        response["content"] = _PROBLEM
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
