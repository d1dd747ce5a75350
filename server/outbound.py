"""Outbound HTTP from the server (a client's ``jwks_uri``, a subscription's rest-hook endpoint),
with the checks a server-side request needs.

- https only, except http to a loopback address when the caller allows it (tests);
- the host's every resolved address is checked against loopback, private, link-local,
  unique-local, multicast, reserved and cloud metadata ranges (``169.254.169.254`` is
  link-local; an IPv4-mapped IPv6 address is checked as its IPv4 address) unless a configured
  network allows it; the connection then goes to the checked address (the ``Host`` header and
  TLS name stay the URL's), so a second DNS answer cannot redirect it;
- no redirects, connect and read timeouts, a response size cap.

With ``keep_alive`` (rest-hooks), connections are kept open and reused, each only for requests
to the same checked address, host name and scheme it was opened for: every request still
resolves and checks the host first, and a new answer opens a new connection. Those connections
are plain HTTP/1.1 ones (``server/http1.py``): a request takes an idle one whose peer has not
closed it, or opens one; the read timeout bounds the whole exchange.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from server.http1 import Connection, ExchangeError, TooLarge

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
_TLS: ssl.SSLContext | None = None
KEPT_CLIENTS = 64  # distinct (address, host, scheme) kept open at once
KEPT_CONNECTIONS = 16  # connections open at once per (address, host, scheme)


def _tls() -> ssl.SSLContext:
    """One verifying TLS context for every outbound request (building one per request costs
    milliseconds); connections themselves are never shared between requests."""
    global _TLS
    if _TLS is None:
        _TLS = httpx.create_ssl_context()
    return _TLS


class OutboundError(Exception):
    """The request could not be made, or may not be (the reason is for the server's log and
    for an operator: never a secret)."""


def forbidden_address(address: Address, allowed: Sequence[Network]) -> bool:
    """Whether a request may not go to ``address``."""
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


def networks(text: Sequence[str]) -> list[Network]:
    """Parsed CIDR networks (blank entries skipped)."""
    return [ipaddress.ip_network(n.strip(), strict=False) for n in text if n.strip()]


def resolve(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port)})


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: httpx.Headers
    body: bytes


class _Pool:
    """The connections kept open to one (address, host, scheme): ``KEPT_CONNECTIONS`` turns,
    the idle connections last used first."""

    def __init__(self) -> None:
        self.turns = asyncio.Semaphore(KEPT_CONNECTIONS)
        self._idle: list[Connection] = []

    def take(self) -> Connection | None:
        """An idle connection the peer has not closed, or None."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    def give_back(self, connection: Connection) -> None:
        if connection.reusable() and len(self._idle) < KEPT_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


@dataclass(frozen=True, slots=True)
class Outbound:
    """The checks of one kind of outbound request: ``allowed`` networks it may reach besides the
    public internet, http to loopback (tests), its timeouts and response cap."""

    allowed: Sequence[Network] = ()
    allow_http_loopback: bool = False
    resolver: Resolver = resolve
    transport: httpx.AsyncBaseTransport | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    max_bytes: int = 64 * 1024
    keep_alive: bool = False
    _kept: dict[tuple[str, str, str], _Pool] = field(
        default_factory=dict, compare=False, repr=False
    )

    def target(self, url: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """The pinned URL (the checked address in place of the host), the ``Host`` header and
        the TLS extensions of a request to ``url``; raises ``OutboundError``."""
        parts = urlsplit(url)
        host = parts.hostname
        if host is None:
            raise OutboundError("no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, port)]
        except (OSError, ValueError) as exc:
            raise OutboundError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise OutboundError(f"{host} has no address")
        loopback_http = (
            parts.scheme == "http"
            and self.allow_http_loopback
            and all(a.is_loopback for a in addresses)
        )
        if parts.scheme != "https" and not loopback_http:
            raise OutboundError("the URL must use https")
        if not loopback_http:
            bad = [str(a) for a in addresses if forbidden_address(a, self.allowed)]
            if bad:
                raise OutboundError(f"{host} resolves to a refused address ({', '.join(bad)})")
        target = addresses[0]
        netloc = f"[{target}]" if target.version == 6 else str(target)
        pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return pinned, headers, extensions

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Response:
        """One request to ``url`` under the checks (a redirect is a response like any other,
        never followed); raises ``OutboundError``."""
        pinned, host, extensions = self.target(url)
        if self.keep_alive and self.transport is None:
            sni = extensions.get("sni_hostname")
            return await self._kept_request(method, pinned, host, sni, headers, content)
        try:
            async with self._client() as client:
                return await self._exchange(
                    client, method, pinned, host, extensions, headers, content
                )
        except httpx.HTTPError as exc:
            raise OutboundError(f"{type(exc).__name__}") from exc

    async def _kept_request(
        self,
        method: str,
        pinned: str,
        host: dict[str, str],
        sni: str | None,
        headers: Mapping[str, str] | None,
        content: bytes | None,
    ) -> Response:
        """One request on a kept connection to the pinned address, or a new one: at most
        ``KEPT_CONNECTIONS`` at once per (address, host, scheme), the others wait their turn. A
        kept connection the peer closed before answering is replaced once by a new one."""
        parts = urlsplit(pinned)
        key = (f"{parts.scheme}://{parts.netloc}", host["Host"], sni or "")
        pool = self._kept.get(key)
        if pool is None:
            if len(self._kept) >= KEPT_CLIENTS:  # the least recently opened goes
                self._kept.pop(next(iter(self._kept))).close()
            pool = self._kept[key] = _Pool()
        port = parts.port
        assert port is not None  # ``target`` always names it
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        sent = [("Host", host["Host"]), *(headers or {}).items()]
        tls = _tls() if parts.scheme == "https" else None
        async with pool.turns:
            while True:
                connection = pool.take()
                if connection is None:
                    try:
                        connection = await Connection.open(
                            str(parts.hostname), port, tls, sni, self.connect_timeout
                        )
                    except (OSError, TimeoutError) as exc:
                        raise OutboundError(f"cannot connect: {type(exc).__name__}") from exc
                try:
                    status, raw, body = await connection.exchange(
                        method, target, sent, content or b"", self.read_timeout, self.max_bytes
                    )
                except TooLarge as exc:
                    raise OutboundError(str(exc)) from exc
                except ExchangeError as exc:
                    if connection.used and not exc.answered:
                        continue  # closed by the peer while idle: again on a new connection
                    raise OutboundError(str(exc)) from exc
                pool.give_back(connection)
                return Response(status, httpx.Headers(raw), body)

    async def aclose(self) -> None:
        """Close the connections kept open."""
        while self._kept:
            self._kept.pop(next(iter(self._kept))).close()

    def _client(self) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        return httpx.AsyncClient(
            follow_redirects=False, timeout=timeout, transport=self.transport, verify=_tls()
        )

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        method: str,
        pinned: str,
        host: dict[str, str],
        extensions: dict[str, str],
        headers: Mapping[str, str] | None,
        content: bytes | None,
    ) -> Response:
        request = client.build_request(
            method, pinned, headers={**(headers or {}), **host}, content=content
        )
        request.extensions.update(extensions)
        response = await client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise OutboundError(f"response larger than {self.max_bytes} bytes")
        finally:
            await response.aclose()
        return Response(response.status_code, response.headers, bytes(body))
