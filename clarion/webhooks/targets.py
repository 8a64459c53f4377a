"""Where a webhook may be sent (contract §E9): ``https://`` only, and never to a private,
loopback, link-local or otherwise non-global address — checked after DNS resolution, when an
endpoint is saved (:class:`TargetChecker`) and at dispatch time by :class:`GuardedResolver`, the
resolver of the dispatcher's HTTP connector: the addresses it approves are the ones connected to,
so a DNS answer that changes between the check and the connection (DNS rebinding) cannot slip
through. ``CLARION_WEBHOOK_ALLOW_PRIVATE=true`` lifts both rules (development, tests, receivers on
the same private network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_URL_LENGTH = 2048
# Resolutions are reused this long, so a batch of deliveries to one host costs one lookup.
RESOLUTION_TTL_SECONDS = 10.0


class TargetRefused(Exception):
    """The URL may not be used as a webhook target; ``str(exc)`` says why."""


class AddressRefused(OSError):
    """Raised by :class:`GuardedResolver` when a host resolves to a refused address. An ``OSError``
    so that aiohttp reports it as a connection (DNS) error carrying this exception."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


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


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def dispatch_refusal(url: str, *, allow_private: bool) -> str | None:
    """The checks a dispatch makes before connecting: the URL rules, and the address rule for a
    literal IP host (aiohttp does not consult the resolver for those). Host names are judged by
    :class:`GuardedResolver` when the connection resolves them."""
    try:
        target = parse_target(url, allow_private=allow_private)
    except TargetRefused as exc:
        return str(exc)
    if allow_private or not is_ip_literal(target.host):
        return None
    return refused_address(target.host.strip("[]"))


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses non-global addresses after resolution (unless
    ``allow_private``). It wraps aiohttp's default resolver; the connector connects only to the
    addresses returned here, and caches them (``ttl_dns_cache``) as it would any answer."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.allow_private:
            return results
        if not results:
            raise AddressRefused(f"host {host!r} does not resolve")
        for result in results:
            reason = refused_address(result["host"])
            if reason is not None:
                raise AddressRefused(f"host {host!r} resolves to a refused address: {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


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
        if is_ip_literal(target.host):
            addresses = [target.host.strip("[]")]
        else:
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
