"""The edge: one pure ASGI layer that every HTTP request passes, in front of the application.

In order, for each request:

1. **Request id and headers** (``logs.request_id``): the id, and on every answer
   ``X-Request-Id``, ``X-Content-Type-Options: nosniff`` and, unless the endpoint chose its own
   caching (the CapabilityStatement does), ``Cache-Control: no-store`` (the answers carry
   patient data); one request log line at the end (``logs.log_request``).
2. **CORS**, only when origins are configured (Starlette's ``CORSMiddleware`` answers
   preflights and adds its headers to every other answer).
3. **Audit** (``audit_layer.py``): an audited request's answer is captured — outside
   authentication, so refusals are recorded too — and its record queued (``batch``) or written
   before the answer leaves (``sync``; the database's error is answered when it cannot be).
4. **Authentication** (``authentication.admit``): the principal, or the refusal answered.
5. **HEAD and gzip** (``transfer.py``), then **routing**: read, create and update by id by their
   endpoints directly, everything else by the FastAPI application (``fastpath.py``).

The limits of the connection (header size and count, the request deadline) are the HTTP
protocol's (``server/serving.py``); the request body's limit is ``api/http.read_body``'s.

``Application`` (what ``create_app`` returns) hands HTTP requests to the edge instead of
FastAPI's own middleware stack, whose layers (error page, body limit, telemetry) the edge's
do not need: an exception no layer answered becomes a 500 OperationOutcome here, logged with
its class and place only.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import audit_layer, fastpath, handlers, transfer
from server.api.authentication import admit
from server.api.http import CORS_METHODS, CORS_REQUEST_HEADERS, CORS_RESPONSE_HEADERS
from server.audit.capture import MAX_BODY, audited
from server.audit.trail import AuditTrail
from server.errors import FhirError
from server.logs import log_request, request_id
from server.settings import Settings

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        self._served = partial(transfer.transfer, partial(fastpath.route, app))
        self._cors = (
            CORSMiddleware(
                self._audited,
                allow_origins=list(settings.allowed_origins),
                allow_methods=list(CORS_METHODS),
                allow_headers=list(CORS_REQUEST_HEADERS),
                expose_headers=list(CORS_RESPONSE_HEADERS),
                max_age=600,
            )
            if settings.allowed_origins  # CORS is off unless origins are configured
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope["headers"])
        log: dict[str, Any] = {"interaction": None, "type": None, "id": None}
        scope["calaim.log"] = log
        scope["calaim.request_id"] = rid
        started = time.perf_counter()
        status = 500
        begun = False
        added = ((b"x-request-id", rid.encode()), _NOSNIFF)

        async def answer(message: Message) -> None:
            nonlocal status, begun
            if message["type"] == "http.response.start":
                status, begun = message["status"], True
                headers = [*message.get("headers", ()), *added]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        try:
            await (self._cors or self._audited)(scope, receive, answer)
        except Exception as exc:  # noqa: BLE001 - answered (and logged) without its message
            await handlers.answer_unexpected(scope, receive, answer, exc, answered=begun)
        finally:
            log_request(rid, scope["method"], log, status, started)

    async def _audited(self, scope: Scope, receive: Receive, send: Send) -> None:
        trail: AuditTrail | None = getattr(scope["app"].state, "audit", None)
        if trail is None or not trail.reads or audit_layer.skipped(scope):
            await self._admitted(scope, receive, send)
            return
        sync = trail.mode == "sync"
        held: list[Message] = []
        body = bytearray()
        status = 500
        gzipped = False
        keep = scope["method"] in ("GET", "HEAD", "POST")

        async def capture(message: Message) -> None:
            nonlocal status, gzipped
            if message["type"] == "http.response.start":
                status = int(message["status"])
                gzipped = any(
                    k == b"content-encoding" and b"gzip" in v for k, v in message["headers"]
                )
            elif message["type"] == "http.response.body" and keep and len(body) <= MAX_BODY:
                uncompressed = message.get(transfer.UNCOMPRESSED)
                if uncompressed is not None:  # the whole answer, as it was before gzip
                    body.extend(uncompressed)
                    gzipped = False
                else:
                    body.extend(message.get("body", b""))
            if sync:
                held.append(message)
            else:
                await send(message)

        await self._admitted(scope, receive, capture)
        if not audited(scope["method"], scope["path"], status):
            for message in held:
                await send(message)
            return
        record = audit_layer.captured(scope, status, bytes(body) if keep else None, gzipped)
        if sync:
            try:
                await asyncio.to_thread(trail.write, record)
            except FhirError as error:  # not recorded: not answered (the database's error)
                await _error(scope, receive, send, error)
                return
            for message in held:
                await send(message)
        else:
            trail.add(record)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = await admit(scope, self.settings)
        if refusal is not None:
            await _error(scope, receive, send, refusal)
            return
        await self._served(scope, receive, send)


async def _error(scope: Scope, receive: Receive, send: Send, error: FhirError) -> None:
    response = await handlers.fhir_error(Request(scope, receive, send), error)
    await response(scope, receive, send)


class Application(FastAPI):
    """The FastAPI application whose HTTP requests enter by the edge (``edge``, set by
    ``create_app``); the lifespan and anything else go to FastAPI as usual."""

    edge: Edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.edge(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling of an HTTP request (its middleware stack and routing)."""
        await super().__call__(scope, receive, send)

