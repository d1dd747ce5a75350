"""Group commit: many concurrent writes, one transaction, one fsync.

Writes queue on the event loop. While one group commits, the next writes gather; then the
writer runs every waiting write in its own savepoint inside one transaction and commits them
together. Each write is answered only after the commit of its group, so an acknowledged write
is durable, and a failing write rolls back to its savepoint alone (a write the database
aborted for a concurrent transaction, a serialization failure or a deadlock, runs again in it,
up to ``CONFLICT_RETRIES`` times; a group aborted as a whole, at its commit, runs again the
same way).

The writes run on the event loop thread on purpose: handing every statement to another
thread costs a GIL hand-off each time, which under load costs more than the statement (SQLite
runs in-process; PostgreSQL's writer connection is in pipeline mode, so a write waits for no
round trip unless it reads a result). The transaction starts there too when no other writer
holds the lock; otherwise the wait happens on a helper thread, and so does the commit (the
fsync), so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from server.errors import TransactionConflict
from server.ports import Unit
from server.store.base import LockStats, Origin
from server.store.sql.adapter import CONFLICT_RETRIES, SqlRepository

T = TypeVar("T")
logger = logging.getLogger("calaim_fhir.store")
MAX_GROUP = 64
_Pending = tuple[Callable[[Unit], Any], Origin, "asyncio.Future[Any]"]


class GroupWriter:
    """``server.store.base.GroupWrites`` on one database."""

    def __init__(self, repo: SqlRepository, pool: ThreadPoolExecutor) -> None:
        self._repo = repo
        self._dialect = repo.sql_dialect
        self._conn = self._dialect.writer_connection()
        self._thread = pool
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self.stats = LockStats()
        self._committed: asyncio.Event | None = None

    def committed(self) -> asyncio.Event:
        """An event set after every group's commit (then cleared for the next): an in-process
        wake-up for outbox consumers. Consumers still read the outbox by sequence; a missed
        wake-up only delays them until their next poll."""
        if self._committed is None:
            self._committed = asyncio.Event()
        return self._committed

    async def write(self, fn: Callable[[Unit], T], origin: Origin) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, origin, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._run_group()
        finally:
            self._drainer = None

    async def _run_group(self) -> None:
        loop = asyncio.get_running_loop()
        dialect, conn = self._dialect, self._conn
        try:
            if not dialect.try_begin(conn):  # another writer holds the lock: wait off the loop
                await loop.run_in_executor(self._thread, dialect.begin, conn)
        except BaseException as exc:  # noqa: BLE001 - every waiting write fails
            self._fail(self._take(), exc)
            return
        locked = time.perf_counter_ns()
        group = self._take()
        for attempt in range(1, CONFLICT_RETRIES + 2):
            try:
                outcomes = self._repo.run_jobs(conn, [(fn, origin) for fn, origin, _ in group])
                await loop.run_in_executor(self._thread, dialect.commit, conn)
                self.stats.add(len(group), time.perf_counter_ns() - locked)
                break
            except BaseException as exc:  # noqa: BLE001 - the group failed: all its writes fail
                try:
                    await loop.run_in_executor(self._thread, dialect.rollback, conn)
                except Exception:  # noqa: BLE001 - begin() resets the connection before the next group
                    logger.warning("rollback after a failed write group failed")
                if isinstance(exc, TransactionConflict) and attempt <= CONFLICT_RETRIES:
                    # aborted for a concurrent transaction, nothing written: run it again
                    logger.warning("write group retried after a transaction conflict (%d)", attempt)
                    try:
                        await loop.run_in_executor(self._thread, dialect.begin, conn)
                        continue
                    except BaseException as again:  # noqa: BLE001
                        exc = again
                self._fail(group, exc)
                return
        self._settle(group, outcomes)
        if self._committed is not None:
            self._committed.set()
            self._committed.clear()

    @staticmethod
    def _settle(group: list[_Pending], outcomes: list[tuple[bool, Any]]) -> None:
        for (_, _, future), (ok, value) in zip(group, outcomes, strict=True):
            if future.done():  # the caller went away; its write stands
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _take(self) -> list[_Pending]:
        group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        return group

    @staticmethod
    def _fail(group: list[_Pending], exc: BaseException) -> None:
        for _, _, future in group:
            if not future.done():
                future.set_exception(exc)
