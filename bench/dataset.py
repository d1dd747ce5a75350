"""A generated benchmark data set on disk: resources as NDJSON files plus one JSON meta file.

The generators (``bench/search/generate.py``, ``bench/eligibility/generate.py``) write with
``write_ndjson``; the loader (``bench/search/load.py``) reads with ``resources``. The meta file
is ``queries.json`` (search) or ``meta.json`` (eligibility); both list ``files`` and ``total``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

LINES_PER_FILE = 100_000
META_NAMES = ("meta.json", "queries.json")


def write_ndjson(
    items: Iterable[dict[str, Any]], out: Path, report_every: int
) -> tuple[list[str], int]:
    """Write ``items`` to ``out/resources-NNNNN.ndjson`` (``LINES_PER_FILE`` per file), after
    removing the files of an earlier run; progress to stderr. Returns the file names in order
    and the number of items written."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("resources-*.ndjson"):
        old.unlink()
    files: list[str] = []
    handle = None
    written = 0
    started = time.monotonic()
    try:
        for item in items:
            if written % LINES_PER_FILE == 0:
                if handle:
                    handle.close()
                files.append(f"resources-{written // LINES_PER_FILE:05d}.ndjson")
                handle = (out / files[-1]).open("wb")
            assert handle is not None
            handle.write(orjson.dumps(item))
            handle.write(b"\n")
            written += 1
            if written % report_every == 0:
                elapsed = time.monotonic() - started
                print(f"generate: {written:,} resources ({elapsed:.0f} s)", file=sys.stderr)
    finally:
        if handle:
            handle.close()
    return files, written


def read_meta(data: Path) -> dict[str, Any]:
    for name in META_NAMES:
        if (data / name).is_file():
            return dict(orjson.loads((data / name).read_bytes()))
    raise SystemExit(f"{data}: no {' or '.join(META_NAMES)}; generate the data set first")


def resources(data: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The data set's resources in file order, the first ``limit`` only when given."""
    n = 0
    for name in read_meta(data)["files"]:
        with (data / name).open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                if limit is not None and n >= limit:
                    return
                n += 1
                yield orjson.loads(line)


def chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
