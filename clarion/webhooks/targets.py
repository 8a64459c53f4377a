"""Where a webhook may be sent (contract §E9): ``https://`` only, and never to a private,
loopback, link-local or otherwise non-global address — checked after DNS resolution, when an
endpoint is saved and again before every dispatch. ``CLARION_WEBHOOK_ALLOW_PRIVATE=true`` lifts
both rules (development, tests, receivers on the same private network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# Resolutions are reused this long, so a batch of deliveries to one host costs one lookup.
RESOLUTION_TTL_SECONDS = 10.0


class TargetRefused(Exception):
    """The URL may not be used as a webhook target; ``str(exc)`` says why."""


@dataclass(frozen=True)
class ParsedTarget:
    scheme: str
    host: str
    port: int


def parse_target(url: str, *, allow_private: bool) -> ParsedTarget:
    """Syntax and scheme rules (no network)."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise TargetRefused("URL must start with https://")
    if scheme == "http" and not allow_private:
        raise TargetRefused("URL must use https://")
    if not parts.hostname:
        raise TargetRefused("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("URL must not contain credentials")
    if parts.fragment:
        raise TargetRefused("URL must not contain a fragment")
    return ParsedTarget(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def refused_address(address: str) -> str | None:
    """Why an IP address is not a permitted target, or ``None`` if it is a global address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_unspecified:
        return f"{ip} is unspecified"
    if ip.is_private or not ip.is_global:
        return f"{ip} is a private or reserved address"
    return None


class TargetChecker:
    """Resolves hosts through the event loop and applies the address rules, with a short cache."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._cache: dict[tuple[str, int], tuple[float, str | None]] = {}

    async def check(self, url: str) -> None:
        """Raise :class:`TargetRefused` unless ``url`` may receive a webhook now."""
        target = parse_target(url, allow_private=self.allow_private)
        if self.allow_private:
            return
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            reason = cached[1]
        else:
            reason = await self._resolve_and_judge(target)
            self._cache[key] = (now + RESOLUTION_TTL_SECONDS, reason)
        if reason is not None:
            raise TargetRefused(reason)

    async def _resolve_and_judge(self, target: ParsedTarget) -> str | None:
        try:
            ipaddress.ip_address(target.host.strip("[]"))
            addresses = [target.host.strip("[]")]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                return f"host {target.host!r} does not resolve ({exc})"
            addresses = sorted({str(info[4][0]) for info in infos})
            if not addresses:
                return f"host {target.host!r} does not resolve"
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                return f"host {target.host!r} resolves to a refused address: {reason}"
        return None
