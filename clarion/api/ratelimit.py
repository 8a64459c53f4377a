"""Per source IP and per API key rate limits (contract §A7), through the `limits` library.

Counters live in Redis when ``CLARION_REDIS_URL`` is set, so every API process shares them;
otherwise in process memory.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.api.auth import principal_for_request
from clarion.api.errors import ErrorCode, problem_response
from clarion.core.settings import Settings


def make_storage(settings: Settings) -> Storage:
    if settings.redis_url:
        url = settings.redis_url
        if url.startswith("redis://") or url.startswith("rediss://"):
            url = "async+" + url
        return RedisStorage(url, key_prefix=f"{settings.redis_namespace}:rl")
    return MemoryStorage()


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, storage: Storage) -> None:
        self.app = app
        self.enabled = settings.rate_limit_enabled
        self.limiter = MovingWindowRateLimiter(storage)
        self.client_ip: RateLimitItem = parse(settings.rate_limit_client_ip)
        self.general_ip: RateLimitItem = parse(settings.rate_limit_general_ip)
        self.per_key: RateLimitItem = parse(settings.rate_limit_per_key)

    async def _retry_after(self, item: RateLimitItem, *ids: str) -> int:
        stats = await self.limiter.get_window_stats(item, *ids)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if not self.enabled or scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        ip = (scope.get("client") or ("unknown", 0))[0]
        checks: list[tuple[RateLimitItem, tuple[str, ...]]] = [(self.general_ip, ("ip-general", ip))]
        if path.startswith("/api/client/"):
            checks.append((self.client_ip, ("ip-client", ip)))
        request = Request(scope, receive)
        if request.headers.get("authorization"):
            principal = await principal_for_request(request)
            if principal is not None:
                checks.append((self.per_key, ("key", principal.rate_key)))
        for item, ids in checks:
            if not await self.limiter.hit(item, *ids):
                retry_after = await self._retry_after(item, *ids)
                response = problem_response(
                    ErrorCode.rate_limited,
                    f"Too many requests; retry after {retry_after} seconds.",
                    request_id=scope.get("state", {}).get("request_id"),
                    headers={"Retry-After": str(retry_after)},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
