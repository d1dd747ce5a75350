"""Fetching a client's jwks_uri: https only, resolved addresses checked (loopback, private,
link-local, metadata) unless configured, no redirects, a size cap, a TTL from Cache-Control
within [5 min, 24 h], an unknown kid refetched at most once a minute per client; and a
client registered by jwks_uri getting a token over HTTP."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from server.auth.jwks_fetch import FetchError, JwksFetcher, ttl_of
from server.cli import app as cli
from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import TestClient, fhir_client

JWKS = {"keys": [{"kty": "EC", "kid": "k1", "crv": "P-384", "x": "x", "y": "y"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fetcher(handler: Any, addresses: list[str], clock: Clock | None = None,
            **options: Any) -> tuple[JwksFetcher, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        result: httpx.Response = handler(request)
        return result

    return JwksFetcher(resolver=lambda host, port: addresses, clock=clock or Clock(),
                       transport=httpx.MockTransport(record), **options), seen


def ok(request: httpx.Request, cache: str = "") -> httpx.Response:
    return httpx.Response(200, json=JWKS, headers={"Cache-Control": cache} if cache else {})


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.8", "192.168.1.1", "172.16.0.1",
                                     "169.254.169.254", "::1", "fd00::1", "fe80::1",
                                     "::ffff:10.0.0.1", "0.0.0.0"])
def test_refused_addresses(address: str) -> None:
    fetch, seen = fetcher(ok, [address])
    with pytest.raises(FetchError, match="refused address"):
        asyncio.run(fetch.fetch("https://keys.example/jwks"))
    assert seen == []


def test_one_bad_address_among_several_refuses() -> None:
    fetch, seen = fetcher(ok, ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(FetchError):
        asyncio.run(fetch.fetch("https://keys.example/jwks"))


def test_a_configured_network_is_allowed_and_the_connection_goes_to_the_checked_address(
) -> None:
    fetch, seen = fetcher(ok, ["10.20.0.5"], allowed_networks=["10.20.0.0/16"])
    jwks, ttl = asyncio.run(fetch.fetch("https://keys.internal/jwks"))
    assert jwks == JWKS and ttl == 300
    assert seen[0].url.host == "10.20.0.5"
    assert seen[0].headers["host"] == "keys.internal"


def test_https_only_except_loopback_when_configured() -> None:
    fetch, _ = fetcher(ok, ["93.184.216.34"])
    with pytest.raises(FetchError, match="https"):
        asyncio.run(fetch.fetch("http://keys.example/jwks"))
    fetch, _ = fetcher(ok, ["127.0.0.1"])
    with pytest.raises(FetchError):
        asyncio.run(fetch.fetch("http://localhost:9/jwks"))
    fetch, _ = fetcher(ok, ["127.0.0.1"], allow_http_loopback=True)
    assert asyncio.run(fetch.fetch("http://localhost:9/jwks"))[0] == JWKS


def test_no_redirects_and_a_size_cap() -> None:
    fetch, _ = fetcher(lambda r: httpx.Response(302, headers={"Location": "http://169.254.169.254/"}),
                       ["93.184.216.34"])
    with pytest.raises(FetchError, match="302"):
        asyncio.run(fetch.fetch("https://keys.example/jwks"))
    big = {"keys": [{"kid": "x" * 100_000}]}
    fetch, _ = fetcher(lambda r: httpx.Response(200, json=big), ["93.184.216.34"])
    with pytest.raises(FetchError, match="larger"):
        asyncio.run(fetch.fetch("https://keys.example/jwks"))


def test_cache_ttl_is_cache_control_within_5_minutes_and_24_hours() -> None:
    assert ttl_of(None) == 300
    assert ttl_of("max-age=10") == 300
    assert ttl_of("public, max-age=3600") == 3600
    assert ttl_of("max-age=9999999") == 86_400


def test_cached_until_the_ttl_and_an_unknown_kid_refetches_once_a_minute() -> None:
    clock = Clock()
    fetch, seen = fetcher(lambda r: ok(r, "max-age=600"), ["93.184.216.34"], clock)
    url = "https://keys.example/jwks"
    assert asyncio.run(fetch.keys("c1", url, "k1")) == JWKS
    clock.now += 500
    asyncio.run(fetch.keys("c1", url, "k1"))
    assert len(seen) == 1  # fresh: from the cache
    asyncio.run(fetch.keys("c1", url, "unknown"))
    assert len(seen) == 2  # unknown kid: refetched
    for _ in range(5):
        asyncio.run(fetch.keys("c1", url, "unknown"))
    clock.now += 30
    asyncio.run(fetch.keys("c1", url, "unknown"))
    assert len(seen) == 2  # at most once a minute
    clock.now += 31
    asyncio.run(fetch.keys("c1", url, "unknown"))
    assert len(seen) == 3
    clock.now += 601
    asyncio.run(fetch.keys("c1", url, "k1"))
    assert len(seen) == 4  # stale: refetched


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    served: dict[str, Any] = {"jwks": {"keys": []}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            body = json.dumps(served["jwks"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", served
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_registered_by_jwks_url_gets_a_token(
    database_url: str, local: TestClient, jwks_server: tuple[str, dict[str, Any]],
    tmp: Path
) -> None:
    url, served = jwks_server
    partner = Partner("ES384")
    served["jwks"] = partner.jwks()
    result = CliRunner().invoke(cli, ["client", "add", "--name", "by url", "--scope",
                                      "system/Patient.rs", "--jwks-url", url, "--organization",
                                      ORGANIZATION, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    partner.client_id = json.loads(result.stdout)["client_id"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with fhir_client(database_url, auth="smart", jwks_allow_http_loopback=True) as smart:
        ok = smart.post("/fhir/auth/token", headers=form,
                        data=token_form(partner.assertion(TOKEN_URL), "system/Patient.rs"))
        assert ok.status_code == 200, ok.text
        # a jku equal to the registered URL is fine; any other is refused
        same = partner.assertion(TOKEN_URL, headers={"jku": url})
        assert smart.post("/fhir/auth/token", headers=form,
                          data=token_form(same, "system/Patient.rs")).status_code == 200
    with fhir_client(database_url, auth="smart") as strict:  # loopback http not allowed
        refused = strict.post("/fhir/auth/token", headers=form,
                              data=token_form(partner.assertion(TOKEN_URL), "system/Patient.rs"))
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
