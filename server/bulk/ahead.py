"""Search index rows of an import's lines computed ahead, in worker processes, while the single
writer stores the lines before them.

Indexing a version's search parameters is the largest share of the CPU time of an imported
resource; the writer (one thread, one write transaction at a time) is the import's
bottleneck. Worker processes parse the next units' lines and compute their index rows with
the server's own indexer (the same registry, base, zone and sensitivity labels:
``search_service(settings)``), and the store takes those rows (``AheadRows``, its
``RowSource``) **only for the very resource they were computed from**: the resource the
write pipeline finally stores (after its references, rules and amendments) is compared with
the line as read; any difference, and any resource no worker indexed, is indexed by the
writer as usual. The stored rows are therefore exactly those of a normal write.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import orjson

from server.search.rows import IndexRows
from server.settings import Settings
from server.store.base import RowSource

Computed = tuple[str, str, IndexRows] | None  # (type, id, rows) of a line; None: not indexable

AHEAD = 2  # chunks being computed while one is stored
MIN_UNITS = 4  # an import of fewer units is indexed by the writer alone
_indexer: Any = None  # the worker process's indexer (``_start``)


def _start(settings: Settings) -> None:
    global _indexer
    from server.search.service import build_search_service

    _indexer = build_search_service(settings).indexer


def _index(raws: Sequence[bytes]) -> list[Computed]:
    """(type, id, index rows) of each line (in a worker process)."""
    out: list[Computed] = []
    for raw in raws:
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out.append(None)
            continue
        type = resource.get("resourceType") if isinstance(resource, dict) else None
        id = resource.get("id") if isinstance(resource, dict) else None
        if not isinstance(type, str) or not isinstance(id, str):
            out.append(None)
            continue
        try:
            out.append((type, id, _indexer.rows(type, resource)))
        except Exception:  # noqa: BLE001 - the writer indexes it and meets the error there
            out.append(None)
    return out


def default_workers(lines: int, batch: int) -> int:
    """One worker process per core beyond two (the writer's, and one for SQLite's commits, the
    pipeline's threads and everything else: on two shared cores a worker made imports slower,
    ``bench/RESULTS.md``), for an import of at least ``MIN_UNITS`` units (starting a worker
    costs about a second)."""
    if lines < MIN_UNITS * batch:
        return 0
    return max(0, (os.cpu_count() or 1) - 2)


class AheadRows:
    """The store's ``RowSource`` during an import: rows computed ahead for a resource equal to
    the one being stored, else the server's indexer (``inner``)."""

    def __init__(self, inner: RowSource) -> None:
        self.inner = inner
        self._ready: dict[tuple[str, str], tuple[dict[str, Any], IndexRows]] = {}
        self.used = 0

    def offer(self, type: str, id: str, resource: dict[str, Any], rows: IndexRows) -> None:
        """Rows for ``type/id`` as ``resource`` (a copy the pipeline never sees)."""
        self._ready[(type, id)] = (resource, rows)

    def clear(self) -> None:
        self._ready.clear()

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        id = resource.get("id")
        ready = self._ready.pop((type, id), None) if isinstance(id, str) else None
        if ready is not None and ready[0] == resource:
            self.used += 1
            return ready[1]
        return self.inner.rows(type, resource)


class Ahead:
    """A pool of indexing worker processes (none: ``submit`` runs in this process)."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # spawned, not forked: the importing process may already run threads
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start, initargs=(settings,)
            )

    async def run(
        self, chunks: Iterator[list[tuple[int, bytes]]]
    ) -> AsyncIterator[tuple[list[tuple[int, bytes]], list[Computed] | None]]:
        """Each chunk of ``(line number, line)`` with what the workers computed for its lines
        (None without workers); the next ``AHEAD`` chunks are being computed meanwhile."""
        window: deque[tuple[list[tuple[int, bytes]], Future[list[Computed]] | None]] = deque()
        while True:
            while len(window) < AHEAD and (chunk := next(chunks, None)) is not None:
                future = None
                if self._pool is not None:
                    future = self._pool.submit(_index, [raw for _, raw in chunk])
                window.append((chunk, future))
            if not window:
                return
            chunk, future = window.popleft()
            computed = None
            if future is not None:
                computed = await asyncio.wrap_future(future)
            yield chunk, computed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
