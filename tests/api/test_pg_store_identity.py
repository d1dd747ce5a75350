"""A PostgreSQL store's identity: the database's comment names the store it holds, so a
database whose store tables were dropped or emptied, or hold another store, is refused at
start-up with a clear message instead of being served as a new, empty store."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from server.store.sql.store_file import StoreRefused
from tests.support import create, fhir_client, patient

pytestmark = pytest.mark.postgres


def _comment(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return None if row is None else row[0]


def _run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def _store(url: str) -> None:
    with fhir_client(url) as client:
        create(client, patient("Member"))


def _refused(url: str, *words: str) -> None:
    with pytest.raises(StoreRefused) as refused:
        with fhir_client(url):
            pass
    for word in words:
        assert word in str(refused.value), str(refused.value)


def test_a_new_store_marks_its_database_and_restarts(fresh_pg_database: str) -> None:
    _store(fresh_pg_database)
    comment = _comment(fresh_pg_database)
    assert comment is not None and comment.startswith("calaim-fhir store ")
    with fhir_client(fresh_pg_database) as client:
        assert client.get("/fhir/Patient?_summary=count").json()["total"] == 1
    assert _comment(fresh_pg_database) == comment


def test_a_database_whose_store_tables_were_dropped_is_refused(fresh_pg_database: str) -> None:
    _store(fresh_pg_database)
    _run(fresh_pg_database, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    _refused(fresh_pg_database, "tables are gone or empty", "COMMENT ON DATABASE")
    with psycopg.connect(fresh_pg_database, autocommit=True) as conn:  # nothing was created
        assert conn.execute("SELECT to_regclass('resource')").fetchone() == (None,)


def test_a_database_holding_another_stores_tables_is_refused(fresh_pg_database: str) -> None:
    _store(fresh_pg_database)
    _run(fresh_pg_database, "UPDATE store_identity SET id = '00000000-0000-4000-8000-000000000000'")
    _refused(fresh_pg_database, "not the tables that were here")


def test_a_deliberate_fresh_start_needs_the_mark_removed(fresh_pg_database: str) -> None:
    _store(fresh_pg_database)
    name = fresh_pg_database.rsplit("/", 1)[1]
    _run(
        fresh_pg_database,
        "DROP SCHEMA public CASCADE",
        "CREATE SCHEMA public",
        sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(name)).as_string(None),
    )
    with fhir_client(fresh_pg_database) as client:
        assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0
