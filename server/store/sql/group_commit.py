"""Group commit for SQLite: many concurrent writes, one fsync.

Writes queue on the event loop. While one group commits (its fsync runs on a helper thread,
the event loop stays free), the next writes gather; then the writer starts the next
transaction (``BEGIN IMMEDIATE`` on the helper thread: it may wait for another process),
runs every waiting write in its own savepoint on the event loop, and commits them together.
Each write is answered only after the commit of its group, so an acknowledged write is
durable. SQL runs on the event loop thread on purpose: handing every statement to another
thread costs a GIL hand-off each time, which under load costs more than the statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from server.store.base import Unit
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect

T = TypeVar("T")
MAX_GROUP = 64


class GroupWriter:
    def __init__(self, repo: SqlRepository, dialect: SQLiteDialect) -> None:
        self._repo = repo
        self._dialect = dialect
        self._conn = dialect.writer_connection()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        self._pending: list[tuple[Callable[[Unit], Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(self, fn: Callable[[Unit], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                try:
                    await loop.run_in_executor(self._thread, self._dialect.begin, self._conn)
                except BaseException as exc:  # noqa: BLE001 - every waiting write fails
                    self._fail(self._take(), exc)
                    continue
                group = self._take()
                try:
                    outcomes = self._repo.run_jobs(self._conn, [fn for fn, _ in group])
                    await loop.run_in_executor(self._thread, self._dialect.commit, self._conn)
                except BaseException as exc:  # noqa: BLE001 - the commit failed: all fail
                    await loop.run_in_executor(self._thread, self._dialect.rollback, self._conn)
                    self._fail(group, exc)
                    continue
                for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                    if future.done():  # the caller went away; its write stands
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._drainer = None

    def _take(self) -> list[tuple[Callable[[Unit], Any], asyncio.Future[Any]]]:
        group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        return group

    @staticmethod
    def _fail(
        group: list[tuple[Callable[[Unit], Any], asyncio.Future[Any]]], exc: BaseException
    ) -> None:
        for _, future in group:
            if not future.done():
                future.set_exception(exc)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
