"""Where blocking store calls run, so the event loop never waits on a database it need not.

SQLite: reads run inline (a WAL read takes microseconds and never waits for the writer);
writes run on one writer thread (SQLite has one writer at a time anyway, so queueing them
in-process avoids lock polling). PostgreSQL: reads and writes run on a thread pool sized to
the connection pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Runner:
    def __init__(self, dialect: str, threads: int) -> None:
        self._inline_reads = dialect == "sqlite"
        self._writes = ThreadPoolExecutor(
            max_workers=1 if dialect == "sqlite" else threads, thread_name_prefix="store-write"
        )
        self._reads = (
            None
            if self._inline_reads
            else ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store-read")
        )

    async def read(self, fn: Callable[[], T]) -> T:
        if self._reads is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._reads, fn)

    async def write(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writes, fn)

    def close(self) -> None:
        self._writes.shutdown(wait=True)
        if self._reads is not None:
            self._reads.shutdown(wait=True)
