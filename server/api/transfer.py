"""HTTP transfer conveniences clients assume: ``HEAD`` and gzip.

* ``HEAD`` on any URL answers what ``GET`` answers — status and headers
  (``Content-Length``, ``ETag``, ``Last-Modified``) — without the body (RFC 9110 §9.3.2), so
  reads, searches, ``/metadata`` and every other GET support it.
* gzip: a response of at least ``GZIP_MINIMUM`` bytes to a request whose
  ``Accept-Encoding`` accepts gzip is compressed (``Content-Encoding: gzip``, ``Vary:
  Accept-Encoding``). Never a response marked ``Cache-Control: no-store`` (token and other
  secret-bearing answers: compressing secrets next to attacker-chosen text is what BREACH
  exploits), nor one already encoded.
"""

from __future__ import annotations

import gzip
from functools import partial

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

GZIP_MINIMUM = 4096  # bytes; below this compression is not worth the CPU
# the key of a compressed body message that also carries the body as it was before
# compression, for the layers outside (the audit capture reads the answer's entities)
UNCOMPRESSED = "calaim.uncompressed"


async def transfer(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve an HTTP request by ``app`` with HEAD and gzip as described above: what the edge
    (``edge.py``) runs; both wrap ``send`` only for the requests they apply to."""
    if scope["method"] == "HEAD":
        app = partial(_head, app)
    if _accepts_gzip(scope):
        await _gzipped(app, GZIP_MINIMUM, scope, receive, send)
    else:
        await app(scope, receive, send)


class Transfer:
    """HEAD and gzip as one ASGI layer of its own (``transfer``), for applications other than
    the server's, whose edge runs ``transfer`` itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await transfer(self.app, scope, receive, send)


async def _head(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    async def without_body(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    await app({**scope, "method": "GET"}, receive, without_body)


def _accepts_gzip(scope: Scope) -> bool:
    accepted = ""
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            accepted = value.decode("latin-1")
            break
    if not accepted:
        return False
    for part in accepted.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip()
            return q not in ("0", "0.0", "0.00", "0.000")
    return False


async def _gzipped(app: ASGIApp, minimum: int, scope: Scope, receive: Receive, send: Send) -> None:
    start: Message | None = None
    chunks: list[bytes] = []
    passing = False  # streaming through unchanged

    async def buffered(message: Message) -> None:
        nonlocal start, passing
        if message["type"] == "http.response.start":
            headers = Headers(raw=message.get("headers", []))
            no_store = "no-store" in headers.get("cache-control", "").lower()
            if no_store or "content-encoding" in headers:
                passing = True
                await send(message)
            else:
                start = message
            return
        if passing or message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        await _finish(send, start, b"".join(chunks), minimum)

    await app(scope, receive, buffered)


async def _finish(send: Send, start: Message, body: bytes, minimum: int) -> None:
    headers = MutableHeaders(raw=list(start.get("headers", [])))
    message: Message = {"type": "http.response.body", "body": body, "more_body": False}
    if len(body) >= minimum:
        message["body"] = gzip.compress(body, compresslevel=6)
        message[UNCOMPRESSED] = body
        headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(message["body"]))
        headers.append("Vary", "Accept-Encoding")
    await send({**start, "headers": headers.raw})
    await send(message)
