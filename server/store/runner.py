"""Where blocking store calls run, so the event loop never waits on a database it need not.

SQLite: reads run inline (a WAL read takes microseconds and never waits for the writer);
writes go through group commit (``sql/group_commit.py``): one fsync for every write that
arrived while the previous group committed.

PostgreSQL: reads and writes run on a thread pool sized to the connection pool; each write is
its own transaction (PostgreSQL already shares WAL flushes between concurrent commits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from server.store.base import Reader, Repository, Unit
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect
from server.store.sql.group_commit import GroupWriter

T = TypeVar("T")


class Runner:
    def __init__(self, repo: Repository, threads: int) -> None:
        self._repo = repo
        self._group: GroupWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        dialect = getattr(repo, "sql_dialect", None)
        if isinstance(repo, SqlRepository) and isinstance(dialect, SQLiteDialect):
            self._group = GroupWriter(repo, dialect)
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
            return await self._group.write(fn)
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._write_sync, fn)

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
