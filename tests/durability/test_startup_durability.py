"""The store refuses to start unless acknowledged writes are durable."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from server.errors import ServiceUnavailable
from server.search.service import build_search_service
from server.settings import Settings
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect
from server.store.sql.opening import open_store
from tests.durability.conftest import ServerFactory, patient, sql_rows


def _open(settings: Settings) -> SqlRepository:
    return open_store(settings, build_search_service(settings))


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
    repo = _open(Settings(database_url=f"sqlite:///{path}"))
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
    repo = _open(Settings(database_url=fresh_pg_database))  # control: durable by default
    repo.close()

    name = fresh_pg_database.rsplit("/", 1)[1]
    admin = fresh_pg_database.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off")
                     .format(sql.Identifier(name)))

    with pytest.raises(RuntimeError, match="synchronous_commit=off"):
        _open(Settings(database_url=fresh_pg_database))

    # and the server process refuses to start on it
    server = start_server(fresh_pg_database, ready=False)
    code = server.wait_exit(timeout=30)
    assert code != 0
    assert "synchronous_commit" in server.log(), server.log()


def test_sqlite_store_opens_while_another_process_is_converting_the_new_file(
    tmp_path: Path,
) -> None:
    """A second process opening a new store while the first holds the file's write lock (as it
    does while switching it to WAL) must wait for it, not fail with "database is locked"."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the first process, part-way through its switch
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        dialect = SQLiteDialect(str(path))
        try:
            dialect.check_durability()
            with dialect.reading() as conn:
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            dialect.close()
    finally:
        release.join()
        other.close()


def test_sqlite_store_open_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        dialect = SQLiteDialect(str(path), busy_timeout_ms=200)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="busy"):
            dialect.check_durability()
        assert time.monotonic() - started < 5
        dialect.close()
    finally:
        other.execute("COMMIT")
        other.close()


@pytest.mark.slow
def test_servers_starting_together_on_a_new_store_all_start(
    start_server: ServerFactory, database_url: str
) -> None:
    servers = [start_server(database_url, ready=False) for _ in range(4)]
    for server in servers:
        server.wait_ready()
    for n, server in enumerate(servers):
        with server.client() as client:
            created = client.post("/Patient", json=patient(f"together-{n}"))
            assert created.status_code == 201, created.text
    assert sql_rows(database_url, "SELECT count(*) FROM resource")[0][0] == len(servers)
    assert sql_rows(database_url, "SELECT count(*) FROM schema_version")[0][0] == sql_rows(
        database_url, "SELECT max(version) FROM schema_version"
    )[0][0]
