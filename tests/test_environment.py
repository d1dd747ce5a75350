"""Checks of the test infrastructure itself (the PostgreSQL cluster from scripts/test)."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.postgres


def _show(conn: psycopg.Connection, setting: str) -> str:
    row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def test_postgres_cluster_is_durable_and_utf8(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, connect_timeout=10) as conn:
        assert _show(conn, "fsync") == "on"
        assert _show(conn, "synchronous_commit") == "on"
        assert _show(conn, "server_encoding") == "UTF8"
        assert int(_show(conn, "max_connections")) >= 200


def test_fresh_pg_database_is_empty_and_separate(postgres_url: str, fresh_pg_database: str) -> None:
    assert fresh_pg_database != postgres_url
    with psycopg.connect(fresh_pg_database, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None and row[0].startswith("calaim_t_")
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY)")
        conn.execute("INSERT INTO probe VALUES (1)")
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (1,)
