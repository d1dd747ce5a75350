"""The outbox (migration 4): one event per committed version, and its consumers' cursors.

A unit writes its versions' events in their own transaction (``adapter.SqlUnit.finish``),
so an event exists exactly when its version is committed: a refused or rolled-back write leaves
neither. Every write transaction holds the writers' lock (decision 0003) from before its first
sequence number until its commit, so sequence numbers increase in commit order: when event
``n`` is visible, every event below ``n`` that will ever exist is visible too. A consumer
reading ``seq > cursor`` therefore never misses an event, in any process. Any change to the
locking must keep this property, or readers must stop at a committed watermark.

Consumers register a name and store their cursor here, so a consumer restarted in another
process resumes where it stopped. Pruning deletes the events every registered consumer has
passed once they are older than the retention's minimum age (``outbox_retention_days``); with
no consumer registered, age alone decides. It never deletes the newest event: SQLite's serial
(the rowid) continues from the highest row left, so keeping it means a sequence number is
never handed out twice.

Every method other than the unit's insert is one short statement on a connection of its own
that commits on its own (``Dialect.autocommit``), outside the group writer.
"""

from __future__ import annotations

from typing import Any

from server.fhir.instant import now_us
from server.store.base import Event, Origin
from server.store.sql.dialect import Dialect

_COLUMNS = (
    "seq, rtype, id, version, previous, interaction, committed, client, organization, user_id,"
    " request_id, transaction_id"
)


def _event(row: Any) -> Event:
    return Event(
        seq=int(row[0]),
        type=row[1],
        id=row[2],
        version=int(row[3]),
        previous=None if row[4] is None else int(row[4]),
        interaction=row[5],
        committed=int(row[6]),
        origin=Origin(row[7], row[8], row[9], row[10]),
        transaction=row[11],
    )


class SqlOutbox:
    """:class:`server.store.base.Outbox` on one database."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect

    def read(self, after: int, limit: int) -> list[Event]:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT {int(limit)}",
                (after,),
            ).fetchall()
        return [_event(row) for row in rows]

    def of(self, type: str, id: str) -> list[Event]:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE rtype = ? AND id = ? ORDER BY seq",
                (type, id),
            ).fetchall()
        return [_event(row) for row in rows]

    def last(self) -> int:
        with self._dialect.autocommit() as conn:
            row = conn.execute("SELECT MAX(seq) FROM outbox").fetchone()
        return int(row[0] or 0)

    def register(self, consumer: str, start: int | None = None) -> int:
        begin = self.last() if start is None else start
        with self._dialect.autocommit() as conn:
            conn.execute(
                "INSERT INTO outbox_consumer (name, cursor, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (consumer, begin, now_us()),
            )
        found = self.cursor(consumer)
        assert found is not None
        return found

    def cursor(self, consumer: str) -> int | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(
                "SELECT cursor FROM outbox_consumer WHERE name = ?", (consumer,)
            ).fetchone()
        return None if row is None else int(row[0])

    def advance(self, consumer: str, seq: int) -> None:
        with self._dialect.autocommit() as conn:
            conn.execute(
                "UPDATE outbox_consumer SET cursor = ?, updated = ? WHERE name = ? AND cursor < ?",
                (seq, now_us(), consumer, seq),
            )

    def unregister(self, consumer: str) -> bool:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM outbox_consumer WHERE name = ? RETURNING name", (consumer,)
            ).fetchall()
        return bool(rows)

    def prune(self, older_than: int) -> int:
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                "DELETE FROM outbox WHERE committed < ? AND seq <= COALESCE("
                "(SELECT MIN(cursor) FROM outbox_consumer), seq)"
                " AND seq < (SELECT MAX(seq) FROM outbox) RETURNING seq",
                (older_than,),
            ).fetchall()
        return len(rows)
