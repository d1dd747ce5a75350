"""A real HTTP receiver on 127.0.0.1 for notification tests: records every POST (headers and
JSON body) and answers with the status set last (200 by default)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.raw: list[bytes] = []  # the bodies as sent (signatures cover these bytes)
        self.refused = 0  # requests answered with an error status
        self.rejected: list[dict[str, Any]] = []  # their bodies
        self.status = 200
        self.lock = threading.Lock()
        self.url = ""

    def bundles(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.received]

    def wait_refused(self, count: int, seconds: float = 15.0) -> None:
        """Until ``count`` requests have been refused in all (bounded wait)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.refused >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"receiver: only {self.refused} refused requests in {seconds}s")

    def wait_for(
        self, test: Callable[[list[dict[str, Any]]], bool], seconds: float = 15.0
    ) -> list[dict[str, Any]]:
        """The bundles once ``test`` holds for them (bounded wait; fails after ``seconds``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.bundles()
            if test(found):
                return found
            time.sleep(0.02)
        raise AssertionError(f"receiver: condition not met in {seconds}s; got {self.bundles()}")


@contextmanager
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length else b""
            body = orjson.loads(raw) if raw else {}
            status = rec.status
            if status < 300:
                with rec.lock:
                    rec.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    rec.raw.append(raw)
            else:
                with rec.lock:
                    rec.refused += 1
                    rec.rejected.append(body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
