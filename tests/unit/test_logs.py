"""The request log's handler and ids: lines logged on the event loop are written together after
the loop's pass, none is lost or reordered; ids are unique and safe client ids are kept."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest

from server.logs import BatchedStreamHandler, configure, log_request, request_id
from server.logs import logger as request_logger


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO, list[str]]]:
    stream = io.StringIO()
    writes: list[str] = []
    real_write = stream.write

    def write(text: str) -> int:
        writes.append(text)
        return real_write(text)

    stream.write = write  # type: ignore[method-assign]
    handler = BatchedStreamHandler()
    handler.setStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("calaim_fhir.test_logs")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, stream, writes
    log.handlers[:] = []


def test_lines_of_one_loop_pass_are_written_together_in_order(
    logger: tuple[logging.Logger, io.StringIO, list[str]],
) -> None:
    log, stream, writes = logger

    async def main() -> str:
        for i in range(5):
            log.info("line %d", i)
        pending = stream.getvalue()
        await asyncio.sleep(0)  # the loop's pass ends: the batch is written
        return pending

    assert asyncio.run(main()) == ""
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(5))
    assert len(writes) == 1


def test_lines_logged_off_the_loop_are_written_at_once(
    logger: tuple[logging.Logger, io.StringIO, list[str]],
) -> None:
    log, stream, _ = logger
    log.info("now")
    assert stream.getvalue() == "now\n"


def test_a_flush_writes_what_is_pending(
    logger: tuple[logging.Logger, io.StringIO, list[str]],
) -> None:
    log, stream, _ = logger
    other = io.StringIO()

    async def main() -> None:
        log.info("first")
        log.handlers[0].setStream(other)  # type: ignore[attr-defined]
        log.info("second")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.getvalue() == "first\n"
    assert other.getvalue() == "second\n"


def test_request_ids_are_unique_and_safe_client_ids_kept() -> None:
    ids = {request_id([]) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert request_id([(b"x-request-id", b"client-abc.123")]) == "client-abc.123"
    assert request_id([(b"x-request-id", b"bad id\n")]) not in ("bad id\n", "")


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """The request log as ``configure`` sets it up, its handler writing to a string."""
    root = logging.getLogger("calaim_fhir")
    saved = (root.handlers[:], root.level, root.propagate)
    configure("INFO")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], _, root.propagate = saved
    root.setLevel(saved[1])


def _request_line() -> None:
    log = {"interaction": "read", "type": "Patient", "id": "p1"}
    log_request("rid-1", "GET", log, 200, time.perf_counter())


def test_the_request_line_is_the_same_whichever_way_it_is_written(
    configured: io.StringIO,
) -> None:
    parent = logging.getLogger("calaim_fhir")
    # only configure's handler (pytest attaches its capturing handlers during the test)
    parent.handlers[:] = [h for h in parent.handlers if isinstance(h, BatchedStreamHandler)]
    made = 0
    factory = logging.getLogRecordFactory()

    def counted(*args: object, **kwargs: object) -> logging.LogRecord:
        nonlocal made
        made += 1
        return factory(*args, **kwargs)

    logging.setLogRecordFactory(counted)
    try:
        _request_line()  # configure's handler alone: written without a LogRecord
    finally:
        logging.setLogRecordFactory(factory)
    assert made == 0
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    request_logger.addFilter(keep)  # anything attached gets the record as usual
    try:
        _request_line()
    finally:
        request_logger.removeFilter(keep)
    first, second = (json.loads(line) for line in configured.getvalue().splitlines())
    assert len(seen) == 1 and json.loads(seen[0].getMessage()) == second
    for line in (first, second):
        assert line.pop("duration_ms") >= 0
    assert first == second == {
        "request_id": "rid-1",
        "method": "GET",
        "interaction": "read",
        "type": "Patient",
        "id": "p1",
        "status": 200,
    }


def test_no_request_line_below_its_level(configured: io.StringIO) -> None:
    logging.getLogger("calaim_fhir").setLevel(logging.WARNING)
    _request_line()
    assert configured.getvalue() == ""
