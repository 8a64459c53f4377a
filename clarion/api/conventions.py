"""Outermost ASGI middleware: request ids, API version, client type, and last-resort errors.

Every response — success, error, replay, even an unhandled exception — leaves with
``X-Request-Id: req_<ULID>`` and ``Spotzee-Version``.
"""

from __future__ import annotations

import logging
import re
from datetime import date

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion import API_VERSION
from clarion.api.errors import ErrorCode, problem_response
from clarion.core.ids import request_id

log = logging.getLogger("clarion.api")

CLIENT_TYPES = {"mcp", "mobile", "sdk-js", "sdk-android", "sdk-ios", "cli", "unknown"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _version_problem(value: str) -> tuple[ErrorCode, str] | None:
    if not _DATE.match(value):
        return ErrorCode.parameter_invalid_format, "Spotzee-Version must be a date (YYYY-MM-DD)."
    try:
        date.fromisoformat(value)
    except ValueError:
        return ErrorCode.parameter_invalid_format, "Spotzee-Version must be a valid calendar date."
    if value != API_VERSION:
        return ErrorCode.version_unsupported, f"API version {value} is not supported; use {API_VERSION}."
    return None


class ConventionsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        headers = Headers(scope=scope)
        client_type = headers.get("x-spotzee-client-type", "unknown").strip().lower()
        state["client_type"] = client_type if client_type in CLIENT_TYPES else "unknown"
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = MutableHeaders(scope=message)
                if "x-request-id" not in out:
                    out["X-Request-Id"] = rid
                out["Spotzee-Version"] = API_VERSION
            await send(message)

        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            response = problem_response(
                ErrorCode.parameter_invalid_format, "Parameters must not contain NUL characters.", request_id=rid
            )
            await response(scope, receive, send_with_headers)
            return
        version = headers.get("spotzee-version")
        if version is not None and scope["path"].startswith("/api/"):
            problem = _version_problem(version.strip())
            if problem is not None:
                code, message = problem
                response = problem_response(code, message, request_id=rid, param="Spotzee-Version")
                await response(scope, receive, send_with_headers)
                return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = problem_response(ErrorCode.internal_error, "Internal error.", request_id=rid)
            await response(scope, receive, send_with_headers)
