"""Numbered events stored as runs (migration 13): each subscription's numbers stay gap-free and
in order, read back per window; subscriptions that matched the same events share one stored
list; pruning goes by runs; a store numbered one row per event moves over unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.store.base import Event, Matching, Numbered, Origin, new_state
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import Dialect, open_dialect
from server.store.sql.schema import MIGRATIONS, POSTGRESQL_ONLY
from server.store.sql.subscriptions import CONSUMER


def _event(seq: int, id: str = "t1", version: int = 1) -> Event:
    return Event(seq, "Task", id, version, None, "create", 1_000 * seq, Origin(), f"u{seq}")


@pytest.fixture
def repo(database: str) -> Iterator[SqlRepository]:
    repository = SqlRepository(open_dialect(database, pool_size=2))
    repository.migrate()
    with repository.sql_dialect.writing() as conn:
        conn.execute(
            "INSERT INTO outbox_consumer (name, cursor, updated) VALUES (?, 0, 0)", (CONSUMER,)
        )
    try:
        yield repository
    finally:
        repository.close()


def _numbers(found: list[Numbered]) -> list[tuple[int, int]]:
    return [(n.number, n.seq) for n in found]


def _count(dialect: Dialect, table: str) -> int:
    with dialect.autocommit() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_numbers_are_gap_free_per_subscription_and_read_back_by_window(
    repo: SqlRepository,
) -> None:
    subs = repo.subscriptions
    first = [_event(1), _event(2, "t2"), _event(3, "t1", 2)]

    def batch_one(m: Matching) -> None:
        for id in ("a", "b", "c"):
            m.upsert(new_state(id, "local", None, None, "http://x", 0, status="active"))
        m.number([(s, e) for e in first for s in ("a", "b")] + [("c", first[1])])

    assert subs.commit_batch(0, first, batch_one)
    second = [_event(4), _event(5, "t3")]
    assert subs.commit_batch(
        3, second, lambda m: m.number([("a", second[0]), ("c", second[1]), ("a", second[1])])
    )
    assert not subs.commit_batch(3, second, lambda m: m.number([("a", second[0])]))

    assert _numbers(subs.events("a", 0, None, 100)) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert _numbers(subs.events("b", 0, None, 100)) == [(1, 1), (2, 2), (3, 3)]
    assert _numbers(subs.events("c", 0, None, 100)) == [(1, 2), (2, 5)]
    # windows across and inside runs, bounded by until and limit
    assert _numbers(subs.events("a", 2, 4, 100)) == [(3, 3), (4, 4)]
    assert _numbers(subs.events("a", 1, None, 2)) == [(2, 2), (3, 3)]
    assert _numbers(subs.events("a", 4, None, 100)) == [(5, 5)]
    assert subs.events("a", 5, None, 100) == []
    assert subs.events("a", 0, 0, 100) == []
    third = subs.events("a", 2, 3, 1)[0]
    assert (third.type, third.id, third.version, third.committed) == ("Task", "t1", 2, 3_000)
    states = {s.id: s.events for s in subs.states()}
    assert states == {"a": 5, "b": 3, "c": 2}
    # a and b matched the same events of the first batch: one stored list for both
    assert _count(repo.sql_dialect, "subscription_run") == 5
    assert _count(repo.sql_dialect, "subscription_match") == 4


def test_pruning_removes_delivered_runs_and_lists_no_run_names(repo: SqlRepository) -> None:
    subs = repo.subscriptions
    events = [_event(1), _event(2)]

    def numbered(m: Matching) -> None:
        for id in ("a", "b"):
            m.upsert(new_state(id, "local", None, None, "http://x", 0, status="active"))
        m.number([(s, e) for e in events for s in ("a", "b")])

    assert subs.commit_batch(0, events, numbered)
    with repo.sql_dialect.writing() as conn:
        conn.execute("UPDATE subscription_state SET delivered = 2 WHERE id = 'a'")
        conn.execute("UPDATE subscription_state SET delivered = 1 WHERE id = 'b'")
    assert subs.prune_events(before=1_500) == 0  # the run's last event is newer
    assert subs.prune_events(before=10_000) == 2  # a's run; b's is not all delivered
    assert subs.events("a", 0, None, 10) == []
    assert _numbers(subs.events("b", 0, None, 10)) == [(1, 1), (2, 2)]
    assert _count(repo.sql_dialect, "subscription_match") == 1  # b's run still names it
    with repo.sql_dialect.writing() as conn:
        conn.execute("UPDATE subscription_state SET delivered = 2 WHERE id = 'b'")
    assert subs.prune_events(before=10_000) == 2
    assert _count(repo.sql_dialect, "subscription_match") == 0


def test_a_store_numbered_per_event_moves_over_as_runs(database: str) -> None:
    dialect = open_dialect(database, pool_size=2)
    with dialect.writing() as conn:
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        for number, statements in enumerate(MIGRATIONS[:12], start=1):
            for statement in statements:
                if statement.startswith(POSTGRESQL_ONLY) and dialect.name != "postgresql":
                    continue
                conn.execute(statement.format(**dialect.types))
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (number,)
            )
        conn.execute(
            "INSERT INTO outbox_consumer (name, cursor, updated) VALUES (?, 7, 0)", (CONSUMER,)
        )
        conn.execute(
            "INSERT INTO subscription_state (id, owner, status, events, delivered, handshake,"
            " attempts, next_attempt, lease_until, endpoint, created)"
            " VALUES ('s1', 'local', 'active', 3, 1, 0, 0, 0, 0, 'http://x', 0)"
        )
        for number, seq, rid, version in ((1, 2, "t-1", 1), (2, 5, "t-1", 2), (3, 7, "t.2", 1)):
            conn.execute(
                "INSERT INTO subscription_event (subscription, number, seq, rtype, rid, version,"
                " committed) VALUES ('s1', ?, ?, 'Task', ?, ?, ?)",
                (number, seq, rid, version, 1_000 * seq),
            )
    repo = SqlRepository(dialect)
    try:
        repo.migrate()
        subs = repo.subscriptions
        assert subs.events("s1", 0, None, 10) == [
            Numbered(1, 2, "Task", "t-1", 1, 2_000),
            Numbered(2, 5, "Task", "t-1", 2, 5_000),
            Numbered(3, 7, "Task", "t.2", 1, 7_000),
        ]
        assert _numbers(subs.events("s1", 1, 2, 10)) == [(2, 5)]
        nxt = [_event(8, "t3")]
        assert subs.commit_batch(7, nxt, lambda m: m.number([("s1", nxt[0])]))
        assert _numbers(subs.events("s1", 2, None, 10)) == [(3, 7), (4, 8)]
        with dialect.autocommit() as conn:
            tables = {
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    if dialect.name == "sqlite"
                    else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                ).fetchall()
            }
        assert "subscription_event" not in tables
    finally:
        repo.close()
