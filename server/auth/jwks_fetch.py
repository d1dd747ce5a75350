"""Fetching a client's registered ``jwks_uri``, with the checks a server-side fetch needs.

- the outbound checks of ``server/outbound.py``: https only (http on a loopback address only
  when ``jwks_allow_http_loopback`` is set: tests), the resolved addresses checked unless a
  configured network (``jwks_private_networks``) allows them, a pinned connection, no
  redirects, a timeout, a size cap;
- cached per client with a TTL from ``Cache-Control: max-age`` clamped to [5 min, 24 h]
  (5 min without one); a ``kid`` the cached set lacks refetches at most once a minute per
  client.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from server.outbound import Outbound, OutboundError, Resolver, networks, resolve

MIN_TTL = 300.0
MAX_TTL = 86_400.0
REFETCH_SECONDS = 60.0
MAX_BYTES = 64 * 1024
TIMEOUT = 5.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class FetchError(Exception):
    """The JWKS could not be fetched, or may not be (the reason is for the server's log)."""


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


class JwksFetcher:
    def __init__(
        self,
        *,
        allowed_networks: Sequence[str] = (),
        allow_http_loopback: bool = False,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._outbound = Outbound(
            networks(allowed_networks),
            allow_http_loopback,
            resolver,
            transport,
            connect_timeout=TIMEOUT,
            read_timeout=TIMEOUT,
            max_bytes=MAX_BYTES,
        )
        self._clock = clock
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
        try:
            response = await self._outbound.request(
                "GET", url, headers={"Accept": "application/json"}
            )
        except OutboundError as exc:
            raise FetchError(str(exc)) from exc
        if response.status != 200:
            raise FetchError(f"HTTP {response.status}")
        body = response.body
        try:
            jwks = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FetchError("not JSON") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise FetchError('no "keys" array')
        return jwks, ttl_of(response.headers.get("cache-control"))


def _has_kid(jwks: dict[str, Any], kid: str) -> bool:
    return any(isinstance(k, dict) and k.get("kid") == kid for k in jwks.get("keys", []))
