"""The SQLite store's file at start-up: a missing, zeroed, truncated, damaged or swapped
database file where a store was is refused with a clear message, never served as a new,
empty store; a new store is created only where there was none. Damaged pages met while
serving are a 500 that says so (``driver_errors.py``) and fail the health check
(``GET /health``), as does a file or marker damaged while served; ``calaim-fhir check``
finds damaged pages (``tests/cli/test_check.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from server.store.sql.store_file import MARKER_SUFFIX, StoreRefused
from tests.support import create, fhir_client, outcome, patient, sqlite_url


def _store(path: Path, members: int = 3) -> None:
    with fhir_client(sqlite_url(path)) as client:
        for n in range(members):
            create(client, patient(f"Member{n}"))


def _refused(path: Path, *words: str) -> None:
    with pytest.raises(StoreRefused) as refused:
        with fhir_client(sqlite_url(path)):
            pass
    message = str(refused.value)
    for word in words:
        assert word in message, message


def test_a_new_store_gets_a_marker_and_restarts(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    _store(db)
    marker = Path(str(db) + MARKER_SUFFIX)
    assert marker.read_text().strip()
    with fhir_client(sqlite_url(db)) as client:
        assert client.get("/fhir/Patient?_summary=count").json()["total"] == 3
    assert marker.read_text().strip()  # unchanged, still there


@pytest.mark.parametrize("damage", ["zeroed", "missing"])
def test_a_zeroed_or_missing_database_that_had_data_is_refused(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "fhir.db"
    _store(db)
    if damage == "zeroed":
        os.truncate(db, 0)
    else:
        db.unlink()
    _refused(db, "empty" if damage == "zeroed" else "missing", MARKER_SUFFIX, "backup")
    assert not db.exists() or db.stat().st_size == 0  # nothing was created in its place


def test_a_deliberate_fresh_start_needs_the_marker_removed(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    _store(db)
    os.truncate(db, 0)
    Path(str(db) + MARKER_SUFFIX).unlink()
    with fhir_client(sqlite_url(db)) as client:
        assert client.get("/fhir/Patient?_summary=count").json()["total"] == 0


def test_a_truncated_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    _store(db, members=60)
    size = db.stat().st_size
    os.truncate(db, size // 2 // 4096 * 4096)
    _refused(db, "truncated", "pages")


def test_a_database_with_a_damaged_header_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    _store(db)
    with open(db, "r+b") as file:
        file.write(b"\x00" * 100)
    _refused(db, "not a SQLite database")


def test_another_stores_file_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "fhir.db", tmp_path / "b" / "fhir.db"
    _store(first)
    _store(second)
    shutil.copyfile(second, first)
    _refused(first, "names store", "not the database that was here")


def test_damaged_pages_met_while_serving_are_a_500_that_says_so(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    big = "x" * 3000
    with fhir_client(sqlite_url(db)) as client:
        for n in range(200):
            create(client, patient(f"Member{n}", text={
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{big}</div>'}))
    size = db.stat().st_size
    with open(db, "r+b") as file:  # garbage over the last quarter of the pages
        file.seek(size * 3 // 4 // 4096 * 4096)
        file.write(os.urandom(size - file.tell()))
    # no background work on the store (the subscription deliverer) that could meet the damage
    # first: the health check itself reads no data pages
    with fhir_client(sqlite_url(db), subscriptions=False) as client:
        assert client.get("/health").status_code == 200  # the damage is not met yet
        response = client.get("/fhir/Patient?_count=1000")
        body = outcome(response, 500)
        assert "damaged" in body["issue"][0]["diagnostics"]
        # from then on the health check fails, saying why
        health = outcome(client.get("/health"), 503)
        assert "damage was met while serving" in health["issue"][0]["diagnostics"]


def test_the_health_check_passes_on_a_sound_store(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    with fhir_client(sqlite_url(db)) as client:
        create(client, patient("Member"))
        response = client.get("/health")
        assert response.status_code == 200
        assert response.json()["issue"][0]["severity"] == "information"


@pytest.mark.parametrize("damage", ["header", "marker", "swapped marker"])
def test_the_health_check_fails_on_a_store_damaged_while_served(
    tmp_path: Path, damage: str
) -> None:
    db = tmp_path / "fhir.db"
    marker = Path(str(db) + MARKER_SUFFIX)
    with fhir_client(sqlite_url(db)) as client:
        create(client, patient("Member"))
        if damage == "header":
            with open(db, "r+b") as file:
                file.write(b"\x00" * 100)
            expected = "not a SQLite database"
        elif damage == "marker":
            marker.unlink()
            expected = "marker"
        else:
            marker.write_text("another-store\n")
            expected = "names store another-store"
        diagnostics = [i["diagnostics"] for i in outcome(client.get("/health"), 503)["issue"]]
        assert any(expected in d for d in diagnostics), diagnostics


def test_processes_starting_a_new_store_at_once_agree_on_its_identity(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for round in range(5):
        db = tmp_path / f"r{round}" / "fhir.db"

        def start(_: int, db: Path = db) -> int:
            with fhir_client(sqlite_url(db)) as client:
                return client.get("/fhir/metadata").status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(start, range(4))) == [200] * 4
        leftovers = [p.name for p in db.parent.iterdir() if p.name.endswith(".tmp")]
        assert not leftovers
        _store(db, 1)
