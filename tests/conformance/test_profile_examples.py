"""Every file of examples/resources and examples/invalid is a test over HTTP.

* ``examples/resources/``: valid instances (at least one per profile). Written together in one
  transaction (PUT, so they keep their ids and reference each other), each answers 2xx, reads
  back unchanged, and ``$validate`` reports no error for it.
* ``examples/invalid/``: each file breaks one rule; its sidecar ``<name>.expected.json`` is
  ``{"status": ..., "issues": [{"severity", "code", "expression"}]}``. Written on a server that
  holds the valid examples (so references resolve), the write answers ``status`` with at least
  those issues (matched as a subset), and nothing changes; ``$validate`` answers 200 with the
  same issues.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import FHIR_JSON, TestClient, fhir_client, outcome, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
VALID = sorted((ROOT / "examples" / "resources").glob("*.json"))
INVALID = sorted(
    p
    for p in (ROOT / "examples" / "invalid").glob("*.json")
    if not p.name.endswith(".expected.json")
)
PROFILES = sorted((ROOT / "profiles" / "structuredefinitions").glob("StructureDefinition-*.json"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _sidecar(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = _load(path.with_name(path.stem + ".expected.json"))
    return data


def _transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("examples")
    with fhir_client(sqlite_url(folder / "fhir.db")) as client:
        response = client.post(
            "/fhir",
            json=_transaction([_load(p) for p in VALID]),
            headers={"Content-Type": FHIR_JSON},
        )
        assert response.status_code == 200, response.text[:3000]
        yield client


def test_every_profile_has_a_valid_and_an_invalid_example() -> None:
    claimed = {url for p in VALID for url in _load(p).get("meta", {}).get("profile", [])}
    broken = {url for p in INVALID for url in _load(p).get("meta", {}).get("profile", [])}
    for path in PROFILES:
        url = _load(path)["url"]
        assert url in claimed, f"no valid example claims {url}"
        assert url in broken, f"no invalid example claims {url}"


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_example(loaded: TestClient, path: Path) -> None:
    resource = _load(path)
    assert path.name == f"{resource['resourceType']}-{resource['id']}.json"
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    stored = loaded.get(url).json()
    server_owned = {"meta", "lastModified"} if resource["resourceType"] == "Task" else {"meta"}
    for key, value in resource.items():
        if key not in server_owned:  # Task.lastModified is stamped by the server
            assert stored[key] == value, key
    body = outcome(
        loaded.post(f"{url}/$validate", json=resource, headers={"Content-Type": FHIR_JSON}), 200
    )
    errors = [i for i in body["issue"] if i["severity"] in ("error", "fatal")]
    assert errors == []


def _matches(wanted: dict[str, Any], issues: list[dict[str, Any]]) -> bool:
    for issue in issues:
        if all(
            (issue.get("expression") or [None])[0] == value
            if key == "expression"
            else issue.get(key) == value
            for key, value in wanted.items()
        ):
            return True
    return False


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_example(loaded: TestClient, path: Path) -> None:
    resource = _load(path)
    expected = _sidecar(path)
    type = resource["resourceType"]
    before = loaded.get(f"/fhir/{type}?_summary=count").json()["total"]
    id = resource.get("id")
    previous = loaded.get(f"/fhir/{type}/{id}") if id else None
    headers = {"Content-Type": FHIR_JSON}
    if id:
        response = loaded.put(f"/fhir/{type}/{id}", json=resource, headers=headers)
    else:
        response = loaded.post(f"/fhir/{type}", json=resource, headers=headers)
    body = outcome(response, expected["status"])
    for wanted in expected["issues"]:
        assert _matches(wanted, body["issue"]), f"{wanted} not in {body['issue']}"
    # a rejected write changes nothing
    assert loaded.get(f"/fhir/{type}?_summary=count").json()["total"] == before
    if previous is not None:
        again = loaded.get(f"/fhir/{type}/{id}")
        assert again.status_code == previous.status_code
        if previous.status_code == 200:
            assert again.json() == previous.json()
    # $validate: 200 with the same issues
    validated = outcome(loaded.post(f"/fhir/{type}/$validate", json=resource, headers=headers), 200)
    for wanted in expected["issues"]:
        assert _matches(wanted, validated["issue"]), f"{wanted} not in {validated['issue']}"
