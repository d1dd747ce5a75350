"""Infrastructure failures answer with an OperationOutcome by cause (a full disk 507, a lost
connection 503 with Retry-After) and lose nothing."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import psycopg
import pytest

from server.app import create_app
from server.settings import Settings
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect
from tests.support import Loopback

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class FullDiskDialect(SQLiteDialect):
    """SQLite whose file may not grow: every connection caps the page count at its size now,
    so a write needing a new page fails with SQLite's own 'database or disk is full'."""

    def _open(self) -> sqlite3.Connection:
        conn = super()._open()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn


def _patient(size: int) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": "F" * size}]}


def test_disk_full_is_507_with_the_reason_and_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "full.db")
    setup = SqlRepository(SQLiteDialect(path))
    setup.migrate()
    setup.close()
    store = SqlRepository(FullDiskDialect(path))
    settings = Settings(database_url=f"sqlite:///{path}", auth="off")
    with TestClient(Loopback(create_app(settings, store=store))) as client:
        response = client.post("/fhir/Patient", json=_patient(200_000))
        # retrying cannot help until an operator frees space: 507, saying why
        assert response.status_code == 507, response.text
        assert "retry-after" not in response.headers
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "exception"
        assert "disk is full" in outcome["issue"][0]["diagnostics"]
        history = client.get("/fhir/Patient/_history").json()
        assert "entry" not in history
    store.close()


def _terminate_connections(database_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )


@pytest.mark.postgres
def test_database_connections_lost_is_503_then_recovers(fresh_pg_database: str) -> None:
    settings = Settings(database_url=fresh_pg_database, pg_pool_size=1, auth="off")
    with TestClient(Loopback(create_app(settings))) as client:
        assert client.post("/fhir/Patient", json=_patient(3)).status_code == 201
        _terminate_connections(fresh_pg_database)
        for response in (
            client.get("/fhir/Patient"),
            client.post("/fhir/Patient", json=_patient(4)),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"]
            assert response.json()["resourceType"] == "OperationOutcome"
        # the database itself is still there: the server reconnects on the next requests
        created = client.post("/fhir/Patient", json=_patient(5))
        assert created.status_code == 201, created.text
        assert client.get(f"/fhir/Patient/{created.json()['id']}").status_code == 200
