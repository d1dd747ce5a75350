"""Writes whose commit does not wait for the disk (``Dialect.writing(durable=False)``,
``autocommit(durable=False)``: the subscription deliverer's outcomes and leases): committed
and visible to other connections at once, on the same writers' lock, and every other write
on the connection durable again afterwards."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import Dialect, SQLiteDialect, open_dialect


@pytest.fixture
def dialect(fresh_store_url: str) -> Iterator[Dialect]:
    dialect = open_dialect(fresh_store_url)
    repo = SqlRepository(dialect)
    repo.migrate()
    with dialect.autocommit() as conn:
        conn.execute("CREATE TABLE relaxed_probe (k TEXT PRIMARY KEY, v INTEGER)")
    yield dialect
    repo.close()


def _value(dialect: Dialect, key: str) -> int | None:
    with dialect.reading() as conn:
        row = conn.execute("SELECT v FROM relaxed_probe WHERE k = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def test_a_non_durable_transaction_commits_and_the_connection_is_durable_again(
    dialect: Dialect,
) -> None:
    with dialect.writing(durable=False) as conn:
        conn.execute("INSERT INTO relaxed_probe (k, v) VALUES (?, ?)", ("a", 1))
    with dialect.autocommit(durable=False) as conn:
        conn.execute("INSERT INTO relaxed_probe (k, v) VALUES (?, ?)", ("b", 2))
    assert (_value(dialect, "a"), _value(dialect, "b")) == (1, 2)
    dialect.check_durability()  # the store still refuses to run without durable commits
    if isinstance(dialect, SQLiteDialect):
        with dialect.writing() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        with dialect.autocommit() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_failed_non_durable_transaction_changes_nothing(dialect: Dialect) -> None:
    with pytest.raises(RuntimeError), dialect.writing(durable=False) as conn:
        conn.execute("INSERT INTO relaxed_probe (k, v) VALUES (?, ?)", ("c", 3))
        raise RuntimeError("abandoned")
    assert _value(dialect, "c") is None
    with dialect.writing() as conn:  # the next durable write on the same connection
        conn.execute("INSERT INTO relaxed_probe (k, v) VALUES (?, ?)", ("d", 4))
        if isinstance(dialect, SQLiteDialect):
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert _value(dialect, "d") == 4


def test_a_non_durable_write_waits_for_the_writers_lock(tmp_path: Path) -> None:
    """SQLite: the same ``BEGIN IMMEDIATE`` as any write: another writer's lock held past the
    busy timeout is a 503, and nothing is written."""
    from server.errors import ServiceUnavailable

    path = str(tmp_path / "lock.db")
    dialect = SQLiteDialect(path, busy_timeout_ms=20)
    repo = SqlRepository(dialect)
    repo.migrate()
    with dialect.autocommit() as conn:
        conn.execute("CREATE TABLE relaxed_probe (k TEXT PRIMARY KEY, v INTEGER)")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ServiceUnavailable), dialect.writing(durable=False) as conn:
            conn.execute("INSERT INTO relaxed_probe (k, v) VALUES (?, ?)", ("e", 5))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _value(dialect, "e") is None
    repo.close()
