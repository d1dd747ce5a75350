"""Fetching a client's registered ``jwks_uri``, with the checks a server-side fetch needs.

- https only (http on a loopback address only when ``jwks_allow_http_loopback`` is set: tests);
- the host's every resolved address is checked against loopback, private, link-local,
  unique-local, multicast, reserved and cloud metadata ranges (``169.254.169.254`` is
  link-local) unless a configured network (``jwks_private_networks``) allows it; the
  connection then goes to the checked address (the ``Host`` header and TLS name stay the
  URL's), so a second DNS answer cannot redirect it;
- no redirects, a timeout, a size cap;
- cached per client with a TTL from ``Cache-Control: max-age`` clamped to [5 min, 24 h]
  (5 min without one); a ``kid`` the cached set lacks refetches at most once a minute per
  client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

MIN_TTL = 300.0
MAX_TTL = 86_400.0
REFETCH_SECONDS = 60.0
MAX_BYTES = 64 * 1024
TIMEOUT = 5.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(Exception):
    """The JWKS could not be fetched, or may not be (the reason is for the server's log)."""


def forbidden_address(address: Address, allowed: Sequence[Network]) -> bool:
    """Whether a fetch may not go to ``address``."""
    if any(address in network for network in allowed):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_address(address.ipv4_mapped, allowed)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def ttl_of(cache_control: str | None) -> float:
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return MIN_TTL
    return min(MAX_TTL, max(MIN_TTL, float(match.group(1))))


@dataclass
class _Entry:
    jwks: dict[str, Any]
    expires: float
    fetched: float


Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port)})


class JwksFetcher:
    def __init__(
        self,
        *,
        allowed_networks: Sequence[str] = (),
        allow_http_loopback: bool = False,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = _resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._allowed: list[Network] = [
            ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks if n.strip()
        ]
        self._http_loopback = allow_http_loopback
        self._clock = clock
        self._resolver = resolver
        self._transport = transport
        self._cache: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(self, client_id: str, url: str, kid: str) -> dict[str, Any] | None:
        """The client's JWKS for ``kid``: the cached set while fresh; refetched when stale, or
        when it lacks ``kid`` and the last fetch is over a minute old. None when it cannot
        be had (the caller refuses the assertion)."""
        lock = self._locks.setdefault(client_id, asyncio.Lock())
        async with lock:
            entry = self._cache.get(client_id)
            now = self._clock()
            fresh = entry is not None and entry.expires > now
            if fresh and entry is not None and _has_kid(entry.jwks, kid):
                return entry.jwks
            if entry is not None and now - entry.fetched < REFETCH_SECONDS:
                return entry.jwks  # fetched moments ago: no refetch for an unknown kid
            try:
                jwks, ttl = await self.fetch(url)
            except FetchError:
                return entry.jwks if fresh and entry is not None else None
            self._cache[client_id] = _Entry(jwks, now + ttl, now)
            return jwks

    def forget(self, client_id: str) -> None:
        self._cache.pop(client_id, None)

    async def fetch(self, url: str) -> tuple[dict[str, Any], float]:
        """Fetch and parse a JWKS; (jwks, cache TTL). Raises ``FetchError``."""
        parts = urlsplit(url)
        host = parts.hostname
        if host is None:
            raise FetchError("no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self._resolver(host, port)]
        except (OSError, ValueError) as exc:
            raise FetchError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise FetchError(f"{host} has no address")
        loopback_http = (
            parts.scheme == "http"
            and self._http_loopback
            and all(a.is_loopback for a in addresses)
        )
        if parts.scheme != "https" and not loopback_http:
            raise FetchError("a jwks_uri must use https")
        if not loopback_http:
            bad = [str(a) for a in addresses if forbidden_address(a, self._allowed)]
            if bad:
                raise FetchError(f"{host} resolves to a refused address ({', '.join(bad)})")
        target = addresses[0]
        netloc = f"[{target}]" if target.version == 6 else str(target)
        pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "application/json"}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            async with httpx.AsyncClient(
                follow_redirects=False, timeout=TIMEOUT, transport=self._transport
            ) as client:
                request = client.build_request("GET", pinned, headers=headers)
                request.extensions.update(extensions)
                response = await client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise FetchError(f"HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_BYTES:
                            raise FetchError(f"larger than {MAX_BYTES} bytes")
                finally:
                    await response.aclose()
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}") from exc
        try:
            jwks = orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise FetchError("not JSON") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise FetchError('no "keys" array')
        return jwks, ttl_of(response.headers.get("cache-control"))


def _has_kid(jwks: dict[str, Any], kid: str) -> bool:
    return any(isinstance(k, dict) and k.get("kid") == kid for k in jwks.get("keys", []))
