"""Structured request logs: request id, interaction, type, id, status and duration only.

The same middleware adds the headers every answer carries: ``X-Request-Id``,
``X-Content-Type-Options: nosniff`` and, unless the endpoint chose its own caching (the
CapabilityStatement does), ``Cache-Control: no-store``: the answers carry patient data.

No PHI reaches the log: request and response bodies, query strings and headers are never
logged, and uvicorn's access log (which prints query strings) is turned off by the CLI.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.fhir.resource_types import is_supported

logger = logging.getLogger("calaim_fhir.request")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")
_SAFE_ID = re.compile(r"[A-Za-z0-9\-._]{1,64}")  # fullmatch: no trailing newline


def configure(level: str = "INFO") -> None:
    """One JSON line per request on stderr. The records carry no caller, thread or process
    fields (the logging module's documented optimisations), which a request line never uses."""
    logging._srcfile = None  # no stack walk per record to find the caller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("calaim_fhir")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def error_place(exc: BaseException) -> str:
    """``file:line`` where ``exc`` was raised: what a log may say about an unexpected error
    besides its class (its message and locals may carry resource content)."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"


class RequestLogMiddleware:
    """Pure ASGI middleware: assigns the request id and writes one JSON line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SAFE_ID.fullmatch(candidate):
                    request_id = candidate
                break
        if not request_id:
            request_id = uuid.uuid4().hex
        log: dict[str, Any] = {"interaction": None, "type": None, "id": None}
        scope["calaim.log"] = log
        scope["calaim.request_id"] = request_id
        started = time.perf_counter()
        status = 500
        added = [(b"x-request-id", request_id.encode()), _NOSNIFF]

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), *added]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if logger.isEnabledFor(logging.INFO):
                type_, id_ = log["type"], log["id"]
                record = {
                    "request_id": request_id,
                    "method": scope["method"],
                    "interaction": log["interaction"],
                    # type and id are the URL's: the type only when it is a supported resource
                    # type (any other word might be a name typed in the wrong place)
                    "type": type_ if type_ and is_supported(type_) else None,
                    "id": id_ if id_ and _SAFE_ID.fullmatch(id_) else None,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
                logger.info(orjson.dumps(record).decode())
