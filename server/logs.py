"""Structured request logs: request id, interaction, type, id, status and duration only, one
line per request written by the edge (``api/edge.py``), lines of one event-loop pass written
together (``BatchedStreamHandler``).

No PHI reaches the log: request and response bodies, query strings and headers are never
logged, and uvicorn's access log (which prints query strings) is turned off by the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import time
from typing import Any

import orjson

from server.fhir.resource_types import is_supported

logger = logging.getLogger("calaim_fhir.request")
_PLAIN = logging.Formatter("%(message)s")
_SAFE_ID = re.compile(r"[A-Za-z0-9\-._]{1,64}")  # fullmatch: no trailing newline


def configure(level: str = "INFO") -> None:
    """One JSON line per request on stderr. The records carry no caller, thread or process
    fields (the logging module's documented optimisations), which a request line never uses."""
    logging._srcfile = None  # no stack walk per record to find the caller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedStreamHandler()
    handler.setFormatter(_PLAIN)
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


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's id: the client's ``X-Request-Id`` when it is safe to echo and log (letters,
    digits, ``-._``, at most 64), else a new one, unique across processes: a random prefix per
    process and a counter (no system call per request, as ``uuid4`` makes)."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_ID.fullmatch(candidate):
                return candidate
            break
    return f"{_ids.prefix}{next(_ids.counter):016x}"


class _Ids:
    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reseed)


def log_request(
    request_id: str, method: str, log: dict[str, Any], status: int, started: float
) -> None:
    """The request's line: its id, method, interaction, type and id (as ``note`` recorded them
    in ``log``), status and duration — nothing else, so no PHI."""
    if logger.isEnabledFor(logging.INFO):
        type_, id_ = log["type"], log["id"]
        record = {
            "request_id": request_id,
            "method": method,
            "interaction": log["interaction"],
            # type and id are the URL's: the type only when it is a supported resource type
            # (any other word might be a name typed in the wrong place)
            "type": type_ if type_ and is_supported(type_) else None,
            "id": id_ if id_ and _SAFE_ID.fullmatch(id_) else None,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        line = orjson.dumps(record).decode()
        sink = _sink()
        if sink is None:
            logger.info(line)
        else:
            sink.write_line(line)


def _sink() -> BatchedStreamHandler | None:
    """The handler ``configure`` installed, when it alone would write the request line, as it
    is: the line then goes to it without a ``LogRecord`` (a tenth of a read's CPU). Anything
    else attached (a handler, a filter, another format) gets the record as usual."""
    parent = logger.parent
    if logger.handlers or logger.filters or not logger.propagate or parent is None:
        return None
    handlers = parent.handlers
    if len(handlers) != 1 or parent.filters or parent.propagate:
        return None
    handler = handlers[0]
    if (
        type(handler) is not BatchedStreamHandler
        or handler.formatter is not _PLAIN
        or handler.filters
        or handler.level > logging.INFO
    ):
        return None
    return handler


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` whose lines logged on an event loop's thread are written together:
    each record is formatted at once, and the lines of one pass of the loop are written by one
    write and one flush, from a callback the loop runs after those already ready (before it
    next waits for I/O). Lines logged elsewhere (threads, commands) are written at once. A
    flush (``logging.shutdown``, a stream swap) writes what is pending first."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - as logging's own handlers do
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Write one formatted line (without its terminator), batched as ``emit`` does."""
        line += self.terminator
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line)
        if loop is None:
            self.flush()

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            pending, self._pending = self._pending, []
            try:
                if pending:
                    self.stream.write("".join(pending))
                if hasattr(self.stream, "flush"):
                    self.stream.flush()
            except (OSError, ValueError):  # the stream is gone: the lines with it
                pass
