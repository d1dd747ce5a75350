"""Rest-hook connections are kept open and reused only for the same checked address, host
name and scheme they were opened for (server/outbound.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from server.outbound import Outbound, OutboundError


@contextmanager
def keep_alive_receiver() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """An HTTP/1.1 receiver on 127.0.0.1; records (Host header, client port) per request."""
    seen: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((str(self.headers.get("Host")), int(self.client_address[1])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1]), seen
    finally:
        server.shutdown()
        server.server_close()


def test_connections_are_reused_only_for_the_same_host_and_address() -> None:
    with keep_alive_receiver() as (port, seen):
        outbound = Outbound(
            allow_http_loopback=True,
            resolver=lambda host, p: ["127.0.0.1"],  # both names resolve to the receiver
            keep_alive=True,
        )

        async def run() -> None:
            try:
                for host in ("hooks.test", "hooks.test", "other.test", "hooks.test"):
                    got = await outbound.request("POST", f"http://{host}:{port}/", content=b"{}")
                    assert got.status == 200
            finally:
                await outbound.aclose()

        asyncio.run(run())
        hosts = [h for h, _ in seen]
        ports = [p for _, p in seen]
        assert hosts == [f"{h}:{port}" for h in ("hooks.test", "hooks.test", "other.test",
                                                  "hooks.test")]
        assert ports[0] == ports[1] == ports[3]  # one connection for hooks.test
        assert ports[2] != ports[0]  # never shared with another host name


def test_a_kept_connection_does_not_skip_the_address_check() -> None:
    answers = ["127.0.0.1"]
    with keep_alive_receiver() as (port, seen):
        outbound = Outbound(resolver=lambda host, p: list(answers), keep_alive=True,
                            allow_http_loopback=True)

        async def run() -> None:
            try:
                await outbound.request("POST", f"http://hooks.test:{port}/", content=b"{}")
                answers[:] = ["10.0.0.7"]  # the name now resolves into a private network
                with pytest.raises(OutboundError):
                    await outbound.request("POST", f"http://hooks.test:{port}/", content=b"{}")
            finally:
                await outbound.aclose()

        asyncio.run(run())
        assert len(seen) == 1
