"""Where blocking store calls run, so the event loop never waits on a database it need not.

SQLite: reads run inline (a WAL read takes microseconds and never waits for the writer).
Writes go to one writer thread that commits them in groups: it takes every write waiting in
its queue, runs each in its own savepoint inside one transaction, and commits once — one fsync
for the whole group (SQLite has one writer at a time anyway; an fsync costs about a
millisecond). Every write is answered only after the commit of its group.

PostgreSQL: reads and writes run on a thread pool sized to the connection pool; each write is
its own transaction (PostgreSQL already shares WAL flushes between concurrent commits).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from server.store.base import Reader, Repository, Unit

T = TypeVar("T")
MAX_GROUP = 64


class _GroupCommitter:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._queue: queue.SimpleQueue[tuple[Callable[[Unit], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Unit], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
            try:
                outcomes = self._repo.run_group([fn for fn, _ in group])
            except BaseException as exc:  # noqa: BLE001 - the commit failed: every job fails
                for _, future in group:
                    future.set_exception(exc)
                continue
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class Runner:
    def __init__(self, repo: Repository, threads: int) -> None:
        self._repo = repo
        self._group: _GroupCommitter | None = None
        self._pool: ThreadPoolExecutor | None = None
        if repo.dialect == "sqlite":
            self._group = _GroupCommitter(repo)
        else:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")

    def _read_sync(self, fn: Callable[[Reader], T]) -> T:
        with self._repo.reader() as reader:
            return fn(reader)

    def _write_sync(self, fn: Callable[[Unit], T]) -> T:
        with self._repo.unit() as unit:
            return fn(unit)

    async def read(self, fn: Callable[[Reader], T]) -> T:
        if self._pool is None:
            return self._read_sync(fn)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read_sync, fn)

    async def write(self, fn: Callable[[Unit], T]) -> T:
        """Run ``fn`` in a write transaction; return once its changes are durable."""
        if self._group is not None:
            return await asyncio.wrap_future(self._group.submit(fn))
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._write_sync, fn)

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
