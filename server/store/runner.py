"""Where blocking store calls run, so the event loop never waits on a database it need not.

Writes go through group commit (``sql/group_commit.py``): one transaction and one fsync for
every write that arrived while the previous group committed.

Reads: inline where the store's reads are that cheap (``Repository.inline_reads``: SQLite, a
WAL read takes microseconds and never waits for the writer); otherwise (PostgreSQL) on a
thread pool sized to the connection pool. The runner knows the store only by its port
(``base.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

from server.ports import Reader, Unit
from server.store.base import SYSTEM, LockStats, Origin, Repository

T = TypeVar("T")


class Runner:
    def __init__(self, repo: Repository, threads: int) -> None:
        self._repo = repo
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-write")
        self._group = repo.group_writer(self._writes)
        self._pool: ThreadPoolExecutor | None = None
        if not repo.inline_reads:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")

    def reader(self) -> AbstractContextManager[Reader]:
        """A reader on the calling thread (blocking: worker threads only)."""
        return self._repo.reader()

    async def read(self, fn: Callable[[Reader], T]) -> T:
        return await self._on_reader(self._repo.reader, fn)

    async def snapshot(self, fn: Callable[[Reader], T]) -> T:
        """``read``, with every read of ``fn`` in one snapshot where that is cheap (SQLite)."""
        return await self._on_reader(self._repo.snapshot, fn)

    async def _on_reader(
        self, opener: Callable[[], AbstractContextManager[Reader]], fn: Callable[[Reader], T]
    ) -> T:
        def work() -> T:
            with opener() as reader:
                return fn(reader)

        if self._pool is None:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run a short blocking store call (one statement on a connection of its own) where
        the store's reads run: inline on SQLite, on the pool's threads on PostgreSQL."""
        if self._pool is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def write(self, fn: Callable[[Unit], T], origin: Origin = SYSTEM) -> T:
        """Run ``fn`` in a write transaction; return once its changes are durable. ``origin``
        goes with the outbox events of what it writes."""
        return await self._group.write(fn, origin)

    def committed(self) -> asyncio.Event:
        """Set after each commit of this process's writes (an in-process wake-up)."""
        return self._group.committed()

    @property
    def lock_stats(self) -> LockStats:
        return self._group.stats

    def close(self) -> None:
        self._writes.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
