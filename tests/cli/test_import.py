"""``calaim-fhir import``: NDJSON in two passes (references resolve whatever the file order and
the cycles), rejected lines and unresolved references summarised, resume after an
interruption, and the import -> ``$export`` -> import round trip."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from server.bulk import importer
from server.settings import Settings
from tests.cli.conftest import ROOT, sqlite_url
from tests.cli.test_load import invoke
from tests.support import (
    BASE,
    FHIR_JSON,
    TABLES,
    TestClient,
    fhir_client,
    postgres_database,
)

BULK = ROOT / "tests" / "fixtures" / "synthea-bulk"
P1 = "ec5ab37a-4bfa-5b91-a6c7-14646a8fc5a5"
RELATED = "7d0a3c52-1f5e-5b0e-9a51-3c2f7b9e4d10"
PARENT = "3f1e7c2a-8b4d-5e6f-9a0b-1c2d3e4f5a6b"
CHILD = "892e8ce8-a7e8-55e5-9179-516c57b34642"


def _fixture_lines() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in BULK.glob("*.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                resource = json.loads(line)
                out[f"{resource['resourceType']}/{resource['id']}"] = resource
    return out


def _summary(result: Any) -> str:
    return " ".join(result.stderr.split())


def test_the_synthea_fixture_imports_with_no_rejection_and_no_unresolved_reference(
    tmp_path: Path, fresh_store_url: str
) -> None:
    url = fresh_store_url
    result = invoke("import", "--database-url", url, "--state", str(tmp_path / "s.json"), str(BULK))
    assert result.exit_code == 0, result.output
    lines = _fixture_lines()
    summary = _summary(result)
    assert f"{len(lines)} line(s): {len(lines)} stored" in summary
    assert "0 rejected, 0 unresolved reference(s)" in summary
    assert not (tmp_path / "s.json").exists()  # finished: no resume state left
    with fhir_client(url) as client:
        for key in lines:
            assert client.get(f"/fhir/{key}").status_code == 200, key
        child = client.get(f"/fhir/Encounter/{CHILD}").json()
        assert child["partOf"] == {"reference": f"Encounter/{PARENT}"}
        patient = client.get(f"/fhir/Patient/{P1}").json()
        assert patient["link"][0]["other"]["reference"] == f"RelatedPerson/{RELATED}"
        assert patient["generalPractitioner"][0]["reference"].startswith("Practitioner/")
        found = client.get(f"/fhir/RelatedPerson?patient={P1}").json()
        assert [e["resource"]["id"] for e in found["entry"]] == [RELATED]


def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    good = {"resourceType": "Patient", "id": "good", "gender": "female"}
    lines = [
        orjson.dumps(good).decode(),
        "{not json",
        '{"resourceType":"Patient","gender":"male"}',
        '{"resourceType":"Patient","id":"bad-gender","gender":"robot"}',
        '{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},'
        '"subject":{"reference":"Patient/nobody"}}',
        '{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},'
        '"performer":[{"reference":"Practitioner?identifier=urn:x|none"}]}',
    ]
    (folder / "data.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_rejected_lines_and_unresolved_references_are_listed_with_their_reasons(
    tmp_path: Path, fresh_store_url: str
) -> None:
    url = fresh_store_url
    folder = _bad_folder(tmp_path)
    result = invoke("import", "--database-url", url, "--state", str(tmp_path / "s"), str(folder))
    assert result.exit_code == 1, result.output
    out = _summary(result)
    assert "6 line(s): 2 stored" in out and "4 rejected, 1 unresolved reference(s)" in out
    assert "invalid JSON" in out
    assert "no id" in out
    assert "robot" in out
    assert "Conditional reference" in out and "matches no resource" in out
    assert "Patient/nobody" in out
    with fhir_client(url) as client:
        assert client.get("/fhir/Patient/good").status_code == 200
        assert client.get("/fhir/Observation/o1").status_code == 200
        assert client.get("/fhir/Patient/bad-gender").status_code == 404


def test_an_interrupted_import_resumes_where_it_stopped(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fhir.db")
    files = sorted(BULK.glob("*.ndjson"))
    state = tmp_path / "state.json"
    settings = Settings(database_url=url, auth="off")
    advanced: list[int] = []

    class Stop(Exception):
        pass

    def advance(n: int) -> None:
        advanced.append(n)
        if len(advanced) == 3:
            raise Stop()

    with pytest.raises(Stop):
        importer.run(
            files, settings, batch=5, state_file=state, progress=importer.Progress(advance=advance)
        )
    assert state.exists()
    report = importer.run(files, settings, batch=5, state_file=state)
    lines = _fixture_lines()
    assert report.skipped == sum(advanced)  # what the first run stored is not read again
    assert report.skipped > 0
    assert report.stored == len(lines) - report.skipped
    assert report.rejected == [] and report.unresolved_count == 0
    assert not state.exists()
    with fhir_client(url) as client:
        for key in lines:
            body = client.get(f"/fhir/{key}").json()
            assert body["meta"]["versionId"] == "1", key  # each stored once


def _export(client: TestClient, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """A system $export, its files saved into ``folder``; the resources by type."""
    response = client.get("/fhir/$export", headers={"Prefer": "respond-async", "Accept": FHIR_JSON})
    assert response.status_code == 202, response.text
    status = "/fhir" + response.headers["content-location"].split("/fhir", 1)[1]
    deadline = time.monotonic() + 30
    while (answer := client.get(status)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text
    folder.mkdir()
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in answer.json()["output"]:
        name = entry["url"].rsplit("/", 1)[1]
        body = client.get("/fhir" + entry["url"].split("/fhir", 1)[1]).content
        (folder / name).write_bytes(body)
        out.setdefault(entry["type"], []).extend(orjson.loads(x) for x in body.splitlines())
    return out


def _content(found: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The resources without their version and stamp (a new store writes its own)."""
    out: dict[str, dict[str, Any]] = {}
    for rows in found.values():
        for resource in rows:
            meta = {
                k: v
                for k, v in resource.get("meta", {}).items()
                if k not in ("versionId", "lastUpdated")
            }
            kept = {k: v for k, v in resource.items() if k != "meta"}
            if meta:
                kept["meta"] = meta
            out[f"{resource['resourceType']}/{resource['id']}"] = kept
    return out


def test_import_export_import_round_trip_is_equal(tmp_path: Path) -> None:
    first, second = sqlite_url(tmp_path / "one.db"), sqlite_url(tmp_path / "two.db")
    result = invoke("import", "--database-url", first, "--state", str(tmp_path / "a"), str(BULK))
    assert result.exit_code == 0, result.output
    settings = {"export_dir": str(tmp_path / "exports"), "export_min_poll_seconds": 0}
    with fhir_client(first, **settings) as client:
        exported = _export(client, tmp_path / "out1")
    assert len(_content(exported)) == len(_fixture_lines())
    result = invoke(
        "import", "--database-url", second, "--state", str(tmp_path / "b"), str(tmp_path / "out1")
    )
    assert result.exit_code == 0, result.output
    assert "0 rejected, 0 unresolved reference(s)" in _summary(result)
    with fhir_client(second, **settings) as client:
        again = _export(client, tmp_path / "out2")
    assert _content(again) == _content(exported)
    shutil.rmtree(tmp_path / "exports", ignore_errors=True)


def test_a_line_left_waiting_for_its_conditional_target_is_retried_after_a_resume(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "fhir.db")
    system = "urn:test:orgs"
    lines = [
        {
            "resourceType": "Organization",
            "id": "org1",
            "identifier": [{"system": system, "value": "1"}],
        },
        {  # its conditional target is a later line of the second pass
            "resourceType": "Observation",
            "id": "obs",
            "status": "final",
            "code": {"text": "x"},
            "performer": [{"reference": f"Organization?identifier={system}|2"}],
        },
        {
            "resourceType": "Organization",
            "id": "org2",
            "identifier": [{"system": system, "value": "2"}],
            "partOf": {"reference": f"Organization?identifier={system}|1"},
        },
    ]
    data = tmp_path / "mixed.ndjson"
    data.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    state = tmp_path / "state.json"
    settings = Settings(database_url=url, auth="off")
    calls: list[int] = []

    class Stop(Exception):
        pass

    def advance(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:  # org1, then obs (left for a retry), then org2: stop there
            raise Stop()

    with pytest.raises(Stop):
        importer.run(
            [data], settings, batch=1, state_file=state, progress=importer.Progress(advance=advance)
        )
    report = importer.run([data], settings, batch=1, state_file=state)
    assert report.rejected == []
    assert report.stored == 1 and report.skipped == 3
    with fhir_client(url) as client:
        observation = client.get("/fhir/Observation/obs").json()
        assert observation["performer"] == [{"reference": "Organization/org2"}]


_INDEX_TABLES = tuple(table for table in TABLES if table.startswith("search_"))


def _stored_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row and the current resource rows (without their stamps and sequence
    numbers), sorted: what a store keeps of its resources, whichever way they were written."""
    statements = {table: f"SELECT * FROM {table}" for table in _INDEX_TABLES}
    statements["resource"] = (
        "SELECT rtype, id, version, deleted, labels, owners, body FROM resource"
    )
    out: dict[str, list[tuple[Any, ...]]] = {}
    fetched: dict[str, list[tuple[Any, ...]]] = {}
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            for name, sql in statements.items():
                cursor = conn.execute(sql)
                fetched[name] = _without_seq(cursor.fetchall(), cursor.description)
        finally:
            conn.close()
    else:
        with psycopg.connect(url) as pg:
            for name, sql in statements.items():
                cursor = pg.execute(sql)
                fetched[name] = _without_seq(cursor.fetchall(), cursor.description)
    for name, rows in fetched.items():
        if name == "resource":  # the body without its stamp
            rows = [
                (*row[:6], {**orjson.loads(row[6]), "meta": {"versionId": row[2]}}) for row in rows
            ]
        out[name] = sorted(rows, key=repr)
    return out


def _without_seq(rows: list[Any], description: Any) -> list[tuple[Any, ...]]:
    """``rows`` without their ``seq`` column, if they have one: an index row's ``seq`` is its
    resource's insertion order (decision 0030), the order of the writes, left out as the
    resource rows' own sequence numbers are."""
    names = [column[0] for column in description]
    if "seq" not in names:
        return [tuple(row) for row in rows]
    at = names.index("seq")
    return [(*row[:at], *row[at + 1 :]) for row in rows]


@contextmanager
def _another_store(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh store of the same kind as ``url``."""
    if url.startswith("sqlite:///"):
        yield sqlite_url(tmp_path / "other.db")
    else:
        with postgres_database(request.getfixturevalue("postgres_url")) as other:
            yield other


def test_an_imported_resource_is_stored_and_indexed_exactly_as_one_written_by_put(
    tmp_path: Path, fresh_store_url: str, request: pytest.FixtureRequest
) -> None:
    """The same lines imported (index rows computed ahead by a worker process, in units of
    5, conditional references resolved in pass 2) and PUT one by one over HTTP give the same
    resource rows and the same search index rows."""
    files = sorted(BULK.glob("*.ndjson"))
    settings = Settings(database_url=fresh_store_url, base_url=BASE, auth="off")
    report = importer.run(files, settings, batch=5, state_file=None, workers=1)
    assert report.rejected == [] and report.stored == len(_fixture_lines())
    with _another_store(fresh_store_url, tmp_path, request) as other:
        with fhir_client(other) as client:
            waiting = [
                orjson.loads(line)
                for path in files
                for line in path.read_bytes().splitlines()
                if line.strip()
            ]
            while waiting:  # a conditional reference's target first
                left = []
                for resource in waiting:
                    key = f"{resource['resourceType']}/{resource['id']}"
                    answer = client.put(f"/fhir/{key}", json=resource)
                    if answer.status_code >= 400:
                        left.append(resource)
                assert len(left) < len(waiting), [r["id"] for r in left]
                waiting = left
        imported, written = _stored_rows(fresh_store_url), _stored_rows(other)
    assert sum(len(imported[table]) for table in _INDEX_TABLES) > 500
    for name in imported:
        assert imported[name] == written[name], name
