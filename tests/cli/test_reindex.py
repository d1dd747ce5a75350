"""``calaim-fhir reindex``: a SearchParameter added after data was stored becomes searchable."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from server.auth.policies import LabelPolicy
from server.auth.principal import Principal
from server.search.service import build_search_service
from server.settings import Settings
from server.store.sql import reindex
from server.store.sql.opening import open_store
from tests.cli.conftest import ROOT, command, sqlite_url
from tests.support import BASE, fhir_client, outcome

DESCRIPTION = {
    "resourceType": "SearchParameter",
    "id": "Task-description",
    "url": "http://calaim-fhir.org/fhir/SearchParameter/Task-description",
    "name": "TaskDescription",
    "status": "active",
    "description": "Tasks by their description text",
    "code": "description",
    "base": ["Task"],
    "type": "string",
    "expression": "Task.description",
}


def _task(text: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "description": text,
    }


def _parameters(folder: Path, *extra: dict[str, Any]) -> Path:
    shutil.copytree(ROOT / "profiles" / "searchparameters", folder)
    for definition in extra:
        (folder / f"SearchParameter-{definition['id']}.json").write_text(json.dumps(definition))
    return folder


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def test_a_new_parameter_is_pending_until_reindexed(tmp_path: Path) -> None:
    database = sqlite_url(tmp_path / "store.db")
    before = _parameters(tmp_path / "before")
    with fhir_client(database, search_parameters_dir=str(before)) as client:
        old = {client.post("/fhir/Task", json=_task(t)).json()["id"] for t in ("Call back", "Ride")}

    after = _parameters(tmp_path / "after", DESCRIPTION)
    with fhir_client(database, search_parameters_dir=str(after)) as client:
        # indexed on write from now on, but not searchable nor advertised before a reindex
        new = client.post("/fhir/Task", json=_task("Callback about housing")).json()["id"]
        body = outcome(client.get("/fhir/Task", params={"description": "call"}), 400)
        assert "description" in json.dumps(body)
        statement = client.get("/fhir/metadata").json()
        task = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
        assert "description" not in {p["name"] for p in task["searchParam"]}

    env = {**os.environ, "CALAIM_FHIR_SEARCH_PARAMETERS_DIR": str(after)}
    done = subprocess.run(
        [*command(), "reindex", "--database-url", database, "--batch", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "3 resource(s) reindexed" in done.stderr
    again = subprocess.run(
        [*command(), "reindex", "--database-url", database], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and "nothing to do" in again.stderr

    with fhir_client(database, search_parameters_dir=str(after)) as client:
        found = client.get("/fhir/Task", params={"description": "call"})
        assert found.status_code == 200, found.text
        old_call = {
            i for i in old if client.get(f"/fhir/Task/{i}").json()["description"] == "Call back"
        }
        assert _ids(found.json()) == old_call | {new}
        statement = client.get("/fhir/metadata").json()
        task = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
        assert "description" in {p["name"] for p in task["searchParam"]}


def test_an_interrupted_reindex_resumes_where_it_stopped(tmp_path: Path) -> None:
    database = sqlite_url(tmp_path / "store.db")
    before = _parameters(tmp_path / "before")
    with fhir_client(database, search_parameters_dir=str(before)) as client:
        for n in range(7):
            assert client.post("/fhir/Task", json=_task(f"Visit {n}")).status_code == 201

    after = _parameters(tmp_path / "after", DESCRIPTION)
    settings = Settings(database_url=database, base_url=BASE, search_parameters_dir=str(after))
    search = build_search_service(settings)
    registry = search.registry
    repo = open_store(settings, search)
    try:
        assert registry.pending == {DESCRIPTION["url"]}
        seen: list[int] = []

        def stop_after_two_batches(done: int, total: int) -> None:
            seen.append(done)
            if len(seen) == 2:
                raise KeyboardInterrupt

        try:
            reindex.reindex(repo, registry, batch=3, progress=stop_after_two_batches)
        except KeyboardInterrupt:
            pass
        assert seen == [3, 6]
        assert registry.pending == {DESCRIPTION["url"]}  # not searchable while half done

        rest: list[tuple[int, int]] = []
        count = reindex.reindex(repo, registry, batch=3, progress=lambda d, t: rest.append((d, t)))
        assert count == 1  # only the resource the first run had not reached
        assert rest[0] == (7, 7) and registry.pending == frozenset()
    finally:
        repo.close()

    with fhir_client(database, search_parameters_dir=str(after)) as client:
        found = client.get("/fhir/Task", params={"description": "visit", "_count": "50"})
        assert found.status_code == 200, found.text
        assert len(_ids(found.json())) == 7


def test_a_store_from_before_search_indexing_serves_id_and_metadata(tmp_path: Path) -> None:
    database = sqlite_url(tmp_path / "store.db")
    with fhir_client(database) as client:
        created = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    # a store written before the index existed: no parameter state recorded
    import sqlite3

    with sqlite3.connect(tmp_path / "store.db") as conn:
        conn.execute("DELETE FROM search_param_state")
    with fhir_client(database) as client:
        assert client.get("/fhir/metadata").status_code == 200
        found = client.get("/fhir/Patient", params={"_id": created})
        assert found.status_code == 200 and _ids(found.json()) == {created}
        outcome(client.get("/fhir/Patient", params={"family": "x"}), 400)


LABEL = {"system": "urn:test:access", "code": "shared"}
LABELLED = LabelPolicy(LABEL["system"], LABEL["code"])


def _restricted(request: object) -> Principal:
    return Principal("app")


def test_versions_stored_before_access_facts_are_hidden_until_reindexed(tmp_path: Path) -> None:
    """A store from before migration 7 has no access facts: the per-resource decision keeps
    those versions from restricted principals until ``reindex`` fills the facts in."""
    label, policy, restricted = LABEL, LABELLED, _restricted
    database = sqlite_url(tmp_path / "store.db")
    with fhir_client(database) as client:
        for name in ("Ana", "Ben"):
            patient = {
                "resourceType": "Patient",
                "meta": {"security": [label]},
                "name": [{"family": name}],
            }
            assert client.post("/fhir/Patient", json=patient).status_code == 201
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute("UPDATE resource SET labels = NULL, owners = NULL")
    conn.execute("UPDATE resource_history SET labels = NULL, owners = NULL")
    conn.commit()
    conn.close()
    with fhir_client(database, principals=restricted, policies=[policy]) as client:
        assert client.get("/fhir/Patient").json().get("entry", []) == []

    done = subprocess.run(
        [*command(), "reindex", "--database-url", database, "--batch", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Access facts filled in for 4 stored version(s)" in done.stderr

    with fhir_client(
        database, principals=restricted, policies=[policy], access_safety_net="fail"
    ) as client:
        found = client.get("/fhir/Patient?_count=1")
        families = [e["resource"]["name"][0]["family"] for e in found.json()["entry"]]
        assert len(families) == 1
        assert len(client.get("/fhir/Patient/_history").json()["entry"]) == 2


def test_reindex_gives_a_deletion_the_facts_of_the_version_it_deleted(tmp_path: Path) -> None:
    """A deletion stored without access facts gets those of the version it deleted: a caller
    who could see that version is then told it is gone (410), not that it never was."""
    label, policy, restricted = LABEL, LABELLED, _restricted
    database = sqlite_url(tmp_path / "store.db")
    with fhir_client(database) as client:
        for id, labelled in (("kept", True), ("other", False)):
            patient: dict[str, object] = {"resourceType": "Patient", "id": id}
            if labelled:
                patient["meta"] = {"security": [label]}
            assert client.put(f"/fhir/Patient/{id}", json=patient).status_code == 201
            assert client.delete(f"/fhir/Patient/{id}").status_code in (200, 204)
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute("UPDATE resource SET labels = NULL, owners = NULL")
    conn.execute("UPDATE resource_history SET labels = NULL, owners = NULL")
    conn.commit()
    conn.close()
    done = subprocess.run(
        [*command(), "reindex", "--database-url", database],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with fhir_client(
        database, principals=restricted, policies=[policy], access_safety_net="fail"
    ) as client:
        assert client.get("/fhir/Patient/kept").status_code == 410
        assert client.get("/fhir/Patient/other").status_code == 404
    conn = sqlite3.connect(tmp_path / "store.db")
    rows = conn.execute(
        "SELECT id, version, labels FROM resource_history ORDER BY id, version"
    ).fetchall()
    conn.close()
    assert rows == [
        ("kept", 1, "urn:test:access|shared"),
        ("kept", 2, "urn:test:access|shared"),
        ("other", 1, ""),
        ("other", 2, ""),
    ]
