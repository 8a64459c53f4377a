"""The RFC 7807 error envelope and the 20-code catalogue (contract §A5).

Services raise :class:`ApiError` (or one of the helpers); the handlers registered by
:func:`install_error_handlers` turn it — and every framework error — into
``application/problem+json`` with the ``error`` mirror and the request id.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("clarion.api")

DOCS_BASE = "https://docs.spotzee.com/main-api/errors#"
PROBLEM_JSON = "application/problem+json"


class ErrorCode(StrEnum):
    parameter_missing = "parameter_missing"
    parameter_invalid_empty = "parameter_invalid_empty"
    parameter_invalid_format = "parameter_invalid_format"
    parameter_unknown = "parameter_unknown"
    idempotency_key_invalid = "idempotency_key_invalid"
    version_unsupported = "version_unsupported"
    version_required = "version_required"
    webhook_signature_invalid = "webhook_signature_invalid"
    authentication_required = "authentication_required"
    quota_exceeded = "quota_exceeded"
    permission_denied = "permission_denied"
    resource_missing = "resource_missing"
    resource_already_exists = "resource_already_exists"
    state_conflict = "state_conflict"
    idempotency_key_mismatch = "idempotency_key_mismatch"
    idempotency_in_progress = "idempotency_in_progress"
    validation_failed = "validation_failed"
    rate_limited = "rate_limited"
    internal_error = "internal_error"
    service_unavailable = "service_unavailable"


# code -> (HTTP status, title). Titles are identical for every response with the same code.
CATALOGUE: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.parameter_missing: (400, "Missing parameter"),
    ErrorCode.parameter_invalid_empty: (400, "Empty parameter"),
    ErrorCode.parameter_invalid_format: (400, "Invalid parameter format"),
    ErrorCode.parameter_unknown: (400, "Unknown parameter"),
    ErrorCode.idempotency_key_invalid: (400, "Invalid idempotency key"),
    ErrorCode.version_unsupported: (400, "Unsupported API version"),
    ErrorCode.version_required: (400, "API version required"),
    ErrorCode.webhook_signature_invalid: (400, "Invalid webhook signature"),
    ErrorCode.authentication_required: (401, "Authentication required"),
    ErrorCode.quota_exceeded: (402, "Quota exceeded"),
    ErrorCode.permission_denied: (403, "Permission denied"),
    ErrorCode.resource_missing: (404, "Resource missing"),
    ErrorCode.resource_already_exists: (409, "Resource already exists"),
    ErrorCode.state_conflict: (409, "State conflict"),
    ErrorCode.idempotency_key_mismatch: (409, "Idempotency key mismatch"),
    ErrorCode.idempotency_in_progress: (409, "Idempotent request in progress"),
    ErrorCode.validation_failed: (422, "Request validation failed"),
    ErrorCode.rate_limited: (429, "Rate limit exceeded"),
    ErrorCode.internal_error: (500, "Internal error"),
    ErrorCode.service_unavailable: (503, "Service unavailable"),
}


class FieldError(BaseModel):
    param: str
    code: ErrorCode
    message: str


class ErrorResponse(BaseModel):
    """The problem document every error response carries."""

    status: str = Field(default="error", json_schema_extra={"const": "error"})
    code: ErrorCode
    message: str
    error: str
    title: str | None = None
    type: str | None = None
    request_id: str | None = None
    param: str | None = None
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """An error with a catalogue code; the handler renders it as problem+json."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.errors = errors
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return CATALOGUE[self.code][0]


def not_found(what: str, param: str | None = "id") -> ApiError:
    return ApiError(ErrorCode.resource_missing, f"No such {what}.", param=param)


def validation_failed(errors: list[FieldError], message: str | None = None) -> ApiError:
    first = errors[0] if errors else None
    return ApiError(
        ErrorCode.validation_failed,
        message or (f"{first.param}: {first.message}" if first else "The request is not valid."),
        param=first.param if first else None,
        errors=errors,
    )


def field_error(param: str, message: str, code: ErrorCode = ErrorCode.parameter_invalid_format) -> ApiError:
    return validation_failed([FieldError(param=param, code=code, message=message)])


def problem_body(
    code: ErrorCode,
    message: str,
    *,
    request_id: str | None,
    param: str | None = None,
    errors: list[FieldError] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "code": code.value,
        "message": message,
        "error": message,
        "title": CATALOGUE[code][1],
        "type": DOCS_BASE + code.value,
        "request_id": request_id,
    }
    if param is not None:
        body["param"] = param
    if errors:
        body["errors"] = [e.model_dump(mode="json") for e in errors]
    return body


def problem_response(
    code: ErrorCode,
    message: str,
    *,
    request_id: str | None,
    param: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    status: int | None = None,
) -> Response:
    body = problem_body(code, message, request_id=request_id, param=param, errors=errors)
    return Response(
        content=orjson.dumps(body),
        status_code=status or CATALOGUE[code][0],
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


_TYPE_CODES = {
    "missing": ErrorCode.parameter_missing,
    "extra_forbidden": ErrorCode.parameter_unknown,
    "string_too_short": ErrorCode.parameter_invalid_empty,
}


def _field_errors(exc: RequestValidationError) -> tuple[str, list[FieldError]]:
    """Map pydantic errors to FieldErrors; return the location kind of the first one."""
    out: list[FieldError] = []
    kind = "body"
    for index, err in enumerate(exc.errors()):
        loc = [str(p) for p in err.get("loc", ())]
        if index == 0 and loc:
            kind = loc[0]
        where = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc
        param = ".".join(where) or loc[0] if loc else "body"
        etype = str(err.get("type", ""))
        code = _TYPE_CODES.get(etype, ErrorCode.parameter_invalid_format)
        if etype == "string_too_short" and err.get("ctx", {}).get("min_length", 1) > 1:
            code = ErrorCode.parameter_invalid_format
        if etype == "missing" and kind == "body" and not where:
            param = "body"
        out.append(FieldError(param=param, code=code, message=str(err.get("msg", "Invalid value."))))
    return kind, out


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    kind, errors = _field_errors(exc)
    rid = _request_id(request)
    raw = exc.errors()
    if raw and raw[0].get("type") == "json_invalid":
        return problem_response(
            ErrorCode.parameter_invalid_format,
            "The request body is not valid JSON.",
            request_id=rid,
            param="body",
        )
    if kind in ("query", "path", "header", "cookie"):
        first = errors[0]
        code = ErrorCode.parameter_missing if first.code == ErrorCode.parameter_missing else first.code
        if code in (ErrorCode.validation_failed, ErrorCode.parameter_unknown):
            code = ErrorCode.parameter_invalid_format
        return problem_response(
            code, f"{first.param}: {first.message}", request_id=rid, param=first.param, errors=errors
        )
    first = errors[0]
    return problem_response(
        ErrorCode.validation_failed,
        f"{first.param}: {first.message}",
        request_id=rid,
        param=first.param,
        errors=errors,
    )


async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem_response(
        exc.code,
        exc.message,
        request_id=_request_id(request),
        param=exc.param,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    rid = _request_id(request)
    if exc.status_code in (404, 405):
        return problem_response(
            ErrorCode.resource_missing, "No such resource or operation.", request_id=rid, status=404
        )
    if exc.status_code == 401:
        return problem_response(ErrorCode.authentication_required, str(exc.detail), request_id=rid)
    if exc.status_code == 403:
        return problem_response(ErrorCode.permission_denied, str(exc.detail), request_id=rid)
    if exc.status_code >= 500:
        return problem_response(ErrorCode.internal_error, "Internal error.", request_id=rid)
    return problem_response(ErrorCode.parameter_invalid_format, str(exc.detail), request_id=rid, status=400)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
