"""A real HTTP receiver for webhook tests: uvicorn on a free 127.0.0.1 port, in its own thread,
recording every request and answering what the test's ``respond`` function says."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import standardwebhooks
import stripe
import uvicorn


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[["Received"], Reply]


def ok(_: Received) -> Reply:
    return 200, {}, b"ok"


class Receiver:
    def __init__(self, port: int, respond: Responder = ok) -> None:
        self.port = port
        self.respond = respond
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(scope["path"], headers, body, 0)
        status, reply_headers, reply_body = self.respond(request)
        request.status = status
        with self._lock:
            self.requests.append(request)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in reply_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": reply_body})

    def start(self) -> Receiver:
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            loop="asyncio",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def acked_ids(self) -> set[str]:
        return {r.webhook_id for r in self.snapshot() if 200 <= r.status < 300}


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def stripe_verifies(request: Received, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(
            request.body.decode(), request.headers.get("spotzee-signature"), secret, tolerance=300
        )
    except stripe.SignatureVerificationError:
        return False
    return True


def standard_verifies(request: Received, secret: str) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


def verifies(request: Received, secret: str) -> bool:
    """Both third-party verifiers accept ``request`` under ``secret``."""
    return stripe_verifies(request, secret) and standard_verifies(request, secret)
