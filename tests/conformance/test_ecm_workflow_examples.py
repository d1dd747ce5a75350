"""Every path of examples/ecm-workflow/ loads step by step into a fresh server.

Each folder is one path of the ECM referral intake (docs/ecm-workflow.md): transaction Bundles
named in step order and ``workflow.expected.json`` (who acts in each step in real use, and what
the stored resources must say after the last step, written by hand from seed 003 VI.D.5-7
and VI.G.3; ``search``: what the server wrote under ids of its own, found by a query).
Loaded as the local operator after ``examples/resources`` but its Tasks and ServiceRequests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operation_output import check_output
from tests.support import (
    TestClient,
    clear_store,
    example_directory_bundle,
    fhir_client,
    sqlite_url,
)

ROOT = Path(__file__).resolve().parents[2] / "examples"
OPERATIONS = ROOT.parent / "profiles" / "operations"
PATHS = sorted(p for p in (ROOT / "ecm-workflow").iterdir() if p.is_dir())
CHANNEL = "http://calaim-fhir.org/fhir/StructureDefinition/referral-channel"
SOURCE = "http://calaim-fhir.org/fhir/StructureDefinition/referral-source-type"
DUPLICATE_OF = "http://calaim-fhir.org/fhir/StructureDefinition/referral-duplicate-of"


@pytest.fixture(scope="module")
def _client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    url = sqlite_url(tmp_path_factory.mktemp("ecm-workflow") / "fhir.db")
    with fhir_client(url) as client:
        yield client, url


def _resources() -> dict[str, Any]:
    return example_directory_bundle(frozenset({"Task", "ServiceRequest"}))


def _extension(resource: dict[str, Any], url: str) -> Any:
    found = [e for e in resource.get("extension") or () if e["url"] == url]
    return found[0] if found else None


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_an_ecm_workflow_path_loads_step_by_step(
    _client: tuple[TestClient, str], path: Path
) -> None:
    client, url = _client
    clear_store(url)
    assert client.post("/fhir", json=_resources()).status_code == 200
    expected = json.loads((path / "workflow.expected.json").read_text())
    files = sorted(p.name for p in path.glob("*.json") if not p.name.endswith(".expected.json"))
    assert files == [step["file"] for step in expected["steps"]]
    steps = {step["file"]: step for step in expected["steps"]}
    for name in files:
        # a Bundle, or an operation's Parameters (``$ecm-screen`` cannot be a Bundle entry)
        url = "/fhir/" + steps[name].get("operation", "")
        response = client.post(url.rstrip("/"), json=json.loads((path / name).read_text()))
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:600]}"
        if "answer" in steps[name]:
            operation = steps[name]["operation"].rsplit("$", 1)[1]
            definition = json.loads((OPERATIONS / f"OperationDefinition-Task-{operation}.json")
                                    .read_text())
            assert check_output(definition, response.json()) == []
            answer = {p["name"]: p for p in response.json()["parameter"]}
            for param, value in steps[name]["answer"].items():
                assert {k: v for k, v in answer[param].items() if k != "name"} == value, param
    stored = {ref: client.get(f"/fhir/{ref}").json() for ref in expected["expect"]}
    for ref, want in expected["expect"].items():
        got = stored[ref]
        if "status" in want:
            assert got["status"] == want["status"], ref
            assert got["businessStatus"]["coding"][0]["code"] == want["businessStatus"], ref
            assert got["lastModified"], ref
        if want.get("due"):
            period = got["restriction"]["period"]
            assert period["start"] and period["end"] >= period["start"][:10], ref
        if "authoredOn" in want:
            assert got["authoredOn"] == want["authoredOn"], ref
        if "channel" in want:
            channel = _extension(got, CHANNEL)["valueCodeableConcept"]["coding"][0]["code"]
            assert channel == want["channel"], ref
            source = _extension(got, SOURCE)["valueCodeableConcept"]["coding"][0]["code"]
            assert source == want["source"], ref
        if "duplicateOf" in want:
            link = _extension(got, DUPLICATE_OF)["valueReference"]["reference"]
            assert link == want["duplicateOf"], ref
        if "sameDueAs" in want:
            other = client.get(f"/fhir/{want['sameDueAs']}").json()
            assert got["restriction"] == other["restriction"], ref
        if "versions" in want:
            assert got["meta"]["versionId"] == str(want["versions"]), ref
        if want.get("noOutput"):
            assert "output" not in got and "contained" not in got, ref
    # what the server wrote itself (ids of its own): found by search, elements compared
    for query, want in expected.get("search", {}).items():
        found = [e["resource"] for e in client.get(f"/fhir/{query}").json().get("entry") or ()]
        assert len(found) == want["total"], query
        for key, value in want.items():
            if key != "total":
                assert found[0][key] == value, f"{query}: {key}"
