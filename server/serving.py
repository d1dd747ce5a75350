"""The HTTP connection limits uvicorn's protocol lacks: header size and count, and time.

``LimitedHttpTools`` is uvicorn's httptools protocol (``serve`` runs it) with three limits
from the settings, checked before the application sees the request:

- the request line and headers together at most ``max_header_bytes`` (counted as the bytes
  arrive, so a 64 MB header is refused after the first ``max_header_bytes``, never held):
  431, or 414 when the URL alone is too long;
- at most ``max_headers`` header fields: 431;
- the whole request, from its first byte (or the connection's opening) to the last byte of
  its body, within ``request_timeout_seconds``: 408, unless the application has already
  begun its answer.

Each refusal is an OperationOutcome with ``Connection: close``, and the connection is closed.
The request body's own limit (after decompression of a gzip body) is the application's
(``api/http.read_body``).
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from http import HTTPStatus
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.fhir.outcome import Issue, operation_outcome
from server.settings import Settings

logger = logging.getLogger("calaim_fhir.request")


@cache
def _limits() -> tuple[int, int, float]:
    settings = Settings()
    return settings.max_header_bytes, settings.max_headers, settings.request_timeout_seconds


class _Refused(httptools.HttpParserError):
    """Stops the parser: the request was answered and the connection is closing."""


def refusal(status: int, code: str, diagnostics: str) -> bytes:
    """The raw HTTP answer of a refused request: an OperationOutcome, connection closed."""
    body = orjson.dumps(operation_outcome([Issue("error", code, diagnostics)]))
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/fhir+json\r\n"
        f"content-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size and count limits and a request
    deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_bytes, self._max_headers, self._timeout = _limits()
        self._in_head = True  # between requests or reading a request's line and headers
        self._head_bytes = 0
        self._header_count = 0
        self._head_size = 0
        self._heads = 0  # request heads parsed on this connection
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_head:
            super().data_received(data)
            return
        self._head_bytes += len(data)
        heads = self._heads
        super().data_received(data)
        # still in the head this chunk began in, past the limit (a head that ended within
        # the chunk was measured by the parser callbacks)
        if self._in_head and heads == self._heads and self._head_bytes > self._max_bytes:
            if not self._refused:
                self._refuse(431, "The request's headers are larger than the server accepts")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # uvicorn's answer to a parser error, unless we answered
            self._refused = True
            self._stop_clock()
            self._answer(refusal(400, "structure", "Invalid HTTP request"))

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = 0
        self._head_size = 0  # the header fields' bytes, as parsed
        self._start_clock()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._max_bytes:
            self._refuse(414, "The request URL is longer than the server accepts")
            raise _Refused()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._header_count > self._max_headers:
            self._refuse(431, f"The request has more than {self._max_headers} header fields")
            raise _Refused()
        if self._head_size > self._max_bytes:
            self._refuse(431, "The request's headers are larger than the server accepts")
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_clock()
        self._in_head = True
        super().on_message_complete()

    # -- the request deadline --------------------------------------------------------------

    def _start_clock(self) -> None:
        self._stop_clock()
        self._deadline = self.loop.call_later(self._timeout, self._timed_out)

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self._in_head:
            if self._head_bytes == 0 and (cycle is None or cycle.response_complete):
                self.transport.close()  # a connection that never sent a request
                return
        elif cycle is None or not cycle.more_body:
            return  # the request is complete: the application is answering it
        elif cycle.response_started:
            self.transport.close()  # answered before its body ended: cut the body short
            return
        logger.warning("request timed out: its end did not arrive within %s s", self._timeout)
        self._refused = True
        self._answer(
            refusal(408, "timeout", f"The request did not arrive within {self._timeout} s")
        )

    def _refuse(self, status: int, diagnostics: str) -> None:
        self._refused = True
        self._stop_clock()
        logger.warning("request refused: %d %s", status, diagnostics)
        self._answer(refusal(status, "too-costly", diagnostics))

    def _answer(self, raw: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(raw)
            self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's receive() sees the end
            self.cycle.message_event.set()
