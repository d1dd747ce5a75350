"""``calaim-fhir check``: the full check of a store, changing nothing; exit 1 on damage."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import command, sqlite_url
from tests.support import create, fhir_client, patient


def _run(database_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
    return subprocess.run([*command(), "check", "--database-url", database_url, *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def _store(url: str, members: int) -> None:
    with fhir_client(url) as client:
        for n in range(members):
            create(client, patient(f"Member{n}", text={
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{"x" * 2000}</div>'}))


def test_a_sound_sqlite_store_is_ok(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fhir.db")
    _store(url, 20)
    for extra in ((), ("--quick",)):
        done = _run(url, *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok" in done.stderr


def test_damaged_pages_are_found(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    _store(sqlite_url(db), 150)
    size = db.stat().st_size
    before = db.read_bytes()
    with open(db, "r+b") as file:  # one page in the middle, overwritten
        file.seek(size // 2 // 4096 * 4096)
        file.write(b"\xa5" * 4096)
    done = _run(sqlite_url(db))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "damaged" in done.stdout
    assert len(db.read_bytes()) == len(before)  # the check changed nothing


def test_a_zeroed_store_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "fhir.db"
    _store(sqlite_url(db), 2)
    os.truncate(db, 0)
    done = _run(sqlite_url(db))
    assert done.returncode == 1
    assert "empty" in done.stderr and "store-id" in done.stderr
    assert db.stat().st_size == 0


@pytest.mark.postgres
def test_a_sound_postgresql_store_is_ok(postgres_url: str) -> None:
    from tests.support import postgres_database

    with postgres_database(postgres_url) as url:
        _store(url, 5)
        done = _run(url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok" in done.stderr


def test_stored_narratives_that_break_the_rules_are_reported(tmp_path: Path) -> None:
    import sqlite3

    import orjson

    db = tmp_path / "fhir.db"
    url = sqlite_url(db)
    with fhir_client(url) as client:
        pid = create(client, patient("Old"))["id"]
        create(client, patient("Fine", text={
            "status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">ok</div>'}))
    # stored before the rules existed: written into the file directly
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT body FROM resource WHERE id = ?", (pid,)).fetchone()
    body = orjson.loads(row[0])
    body["text"] = {"status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script>a</div>'}
    conn.execute("UPDATE resource SET body = ? WHERE id = ?", (orjson.dumps(body), pid))
    conn.commit()
    conn.close()
    done = _run(url)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if "narrative" in line]
    assert len(lines) == 1 and f"Patient/{pid}" in lines[0] and "script" in lines[0], done.stdout
