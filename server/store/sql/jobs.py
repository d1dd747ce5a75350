"""The ``async_job`` table (migration 3): the state of asynchronous jobs, in the database so that
every worker process sees every job.

Each method is one statement on a connection of its own in autocommit mode
(``Dialect.autocommit``): it commits durably on its own and never joins a group-commit
transaction. On SQLite it waits for the database's write lock like any writer (busy timeout;
a group holds it for milliseconds), on PostgreSQL it takes no lock but its row's. Every state
change is conditional on the state it leaves (``WHERE state = 'running'``), so a cancellation,
a worker finishing and a poller declaring the job stale can race without one undoing another:
the first to commit wins, the others change nothing and learn so (``RETURNING``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import orjson

from server.store.base import Job, JobState
from server.store.sql.dialect import Dialect

_COLUMNS = (
    "id, kind, state, request, principal, unit, done, total, created, updated, expires, owner,"
    " result, status"
)


def _job(row: Any) -> Job:
    return Job(
        id=row[0],
        kind=row[1],
        state=cast(JobState, row[2]),
        request=orjson.loads(row[3]),
        principal=row[4],
        unit=row[5],
        done=int(row[6]),
        total=None if row[7] is None else int(row[7]),
        created=int(row[8]),
        updated=int(row[9]),
        expires=int(row[10]),
        owner=row[11],
        result=None if row[12] is None else bytes(row[12]),
        status=None if row[13] is None else int(row[13]),
    )


class SqlJobs:
    """:class:`server.store.base.JobStore` on one database."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect

    def _changed(self, sql: str, args: Sequence[Any]) -> bool:
        """Run one conditional change; True if it changed a row. (The rows are read to the end:
        SQLite commits an autocommit statement with RETURNING only once it is finished.)"""
        with self._dialect.autocommit() as conn:
            return bool(conn.execute(sql + " RETURNING id", args).fetchall())

    def create(self, job: Job) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                f"INSERT INTO async_job ({_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.kind,
                    job.state,
                    orjson.dumps(job.request).decode(),
                    job.principal,
                    job.unit,
                    job.done,
                    job.total,
                    job.created,
                    job.updated,
                    job.expires,
                    job.owner,
                    job.result,
                    job.status,
                ),
            )

    def get(self, id: str) -> Job | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM async_job WHERE id = ?", (id,)).fetchone()
        return None if row is None else _job(row)

    def state(self, id: str) -> JobState | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute("SELECT state FROM async_job WHERE id = ?", (id,)).fetchone()
        return None if row is None else cast(JobState, row[0])

    def progress(self, id: str, done: int, total: int | None, now: int) -> bool:
        return self._changed(
            "UPDATE async_job SET done = ?, total = ?, updated = ?"
            " WHERE id = ? AND state = 'running'",
            (done, total, now, id),
        )

    def touch(self, ids: Sequence[str], now: int) -> None:
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        with self._dialect.autocommit() as conn:
            conn.execute(
                f"UPDATE async_job SET updated = ? WHERE id IN ({marks}) AND state = 'running'",
                (now, *ids),
            )

    def finish(
        self,
        id: str,
        state: Literal["completed", "failed"],
        result: bytes,
        status: int,
        now: int,
        expires: int,
        *,
        stale_before: int | None = None,
    ) -> bool:
        sql = (
            "UPDATE async_job SET state = ?, result = ?, status = ?, updated = ?, expires = ?"
            " WHERE id = ? AND state = 'running'"
        )
        args: list[Any] = [state, result, status, now, expires, id]
        if stale_before is not None:
            sql += " AND updated < ?"
            args.append(stale_before)
        return self._changed(sql, args)

    def claim(self, id: str, owner: str, now: int, stale_before: int) -> bool:
        return self._changed(
            "UPDATE async_job SET owner = ?, updated = ?"
            " WHERE id = ? AND state = 'running' AND updated < ?",
            (owner, now, id, stale_before),
        )

    def running(self, kind: str, principal: str, heard_since: int) -> int:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                "SELECT count(*) FROM async_job"
                " WHERE kind = ? AND principal = ? AND state = 'running' AND updated >= ?",
                (kind, principal, heard_since),
            ).fetchone()
        return int(row[0])

    def cancel(self, id: str, now: int) -> bool:
        return self._changed(
            "UPDATE async_job SET state = 'cancelled', updated = ?, expires = ?"
            " WHERE id = ? AND state = 'running'",
            (now, now, id),
        )

    def delete(self, id: str) -> bool:
        return self._changed(
            "DELETE FROM async_job WHERE id = ? AND state IN ('completed', 'failed')", (id,)
        )

    def purge(self, now: int) -> int:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM async_job WHERE expires < ? AND state <> 'running' RETURNING id",
                (now,),
            ).fetchall()
        return len(rows)
