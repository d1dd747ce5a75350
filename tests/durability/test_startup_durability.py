"""The store refuses to start unless acknowledged writes are durable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from server.settings import Settings
from server.store import open_store
from server.store.sql.dialect import SQLiteDialect
from tests.durability.conftest import ServerFactory


def test_sqlite_dialect_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    dialect = SQLiteDialect(str(path))
    try:
        dialect.check_durability()  # passes on a file database
        with dialect.reading() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        dialect.close()


def test_sqlite_store_opens_durable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    repo = open_store(Settings(database_url=f"sqlite:///{path}"))
    try:
        dialect = repo.sql_dialect  # type: ignore[attr-defined]
        assert isinstance(dialect, SQLiteDialect)
        # the connections writes go through: the group writer's and the per-thread one
        for conn in (dialect.writer_connection(), dialect._connection()):
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        repo.close()
    plain = sqlite3.connect(path)
    try:  # WAL is a property of the file: it stays after the store is closed
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


@pytest.mark.postgres
def test_postgres_store_refuses_synchronous_commit_off(
    fresh_pg_database: str, start_server: ServerFactory
) -> None:
    repo = open_store(Settings(database_url=fresh_pg_database))  # control: durable by default
    repo.close()

    name = fresh_pg_database.rsplit("/", 1)[1]
    admin = fresh_pg_database.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off")
                     .format(sql.Identifier(name)))

    with pytest.raises(RuntimeError, match="synchronous_commit=off"):
        open_store(Settings(database_url=fresh_pg_database))

    # and the server process refuses to start on it
    server = start_server(fresh_pg_database, ready=False)
    code = server.wait_exit(timeout=30)
    assert code != 0
    assert "synchronous_commit" in server.log(), server.log()
