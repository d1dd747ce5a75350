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


@contextmanager
def raw_receiver(answer: Any) -> Iterator[tuple[int, list[bytes]]]:
    """A socket server on 127.0.0.1: ``answer(connection, request_bytes)`` per request read
    (a request is taken as complete once its headers and ``{}`` body are in)."""
    import socket

    requests: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while not stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n{}" in buffer:
                    request, _, buffer = buffer.partition(b"\r\n\r\n{}")
                    requests.append(request)
                    if not answer(conn, request):
                        return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1]), requests
    finally:
        stop.set()
        listener.close()


def test_a_connection_the_receiver_closed_is_replaced_and_the_request_sent_once() -> None:
    def answer_and_close(conn: Any, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return False  # closed after each answer, without saying so

    with raw_receiver(answer_and_close) as (port, requests):
        outbound = Outbound(allow_http_loopback=True, keep_alive=True)

        async def run() -> list[int]:
            try:
                statuses = []
                for _ in range(3):
                    got = await outbound.request("POST", f"http://127.0.0.1:{port}/", content=b"{}")
                    statuses.append(got.status)
                    await asyncio.sleep(0.05)  # the close reaches the client while idle
                return statuses
            finally:
                await outbound.aclose()

        assert asyncio.run(run()) == [200, 200, 200]
        assert len(requests) == 3  # each notification sent once


def test_an_answer_over_the_cap_or_too_late_is_an_error() -> None:
    def large(conn: Any, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048)
        return True

    def silent(conn: Any, request: bytes) -> bool:
        return True  # never answers

    async def refused(outbound: Outbound, port: int, reason: str) -> None:
        try:
            with pytest.raises(OutboundError, match=reason):
                await outbound.request("POST", f"http://127.0.0.1:{port}/", content=b"{}")
        finally:
            await outbound.aclose()

    with raw_receiver(large) as (port, _):
        capped = Outbound(allow_http_loopback=True, keep_alive=True, max_bytes=1024)
        asyncio.run(refused(capped, port, "larger than 1024"))
    with raw_receiver(silent) as (port, requests):
        slow = Outbound(allow_http_loopback=True, keep_alive=True, read_timeout=0.3)
        asyncio.run(refused(slow, port, "timed out"))
        assert len(requests) == 1  # a timeout is not re-sent on another connection
