"""Over HTTP, an operation runs where and as its OperationDefinition says: change the definition
and the routes (levels, GET or POST only), the parameter parsing, the CapabilityStatement and the
OpenAPI description follow; ``$everything`` is one such operation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from server.fhir.conformance import CANONICAL_BASE, PROFILES, load_conformance
from server.openapi_export import export
from server.operations import registry
from tests.support import (
    FHIR_JSON,
    TestClient,
    all_pages,
    create,
    expressions,
    operations_table,
    outcome,
    patient,
)

PARAMETERS = {"Content-Type": FHIR_JSON}
Edit = Callable[[dict[str, Any]], None]
Redefine = Callable[[str, Edit], registry.Operations]


@pytest.fixture
def redefine(client: TestClient, tmp_path: Path) -> Iterator[Redefine]:
    """``redefine(id, edit)``: the client's server runs the operations of a copy of profiles/
    whose OperationDefinition ``id`` was changed by ``edit`` (router and CapabilityStatement);
    answers that table (for the OpenAPI description, ``export(table)``)."""
    with ExitStack() as stack:

        def apply(id: str, edit: Edit) -> registry.Operations:
            copy = tmp_path / f"profiles-{len(list(tmp_path.iterdir()))}"
            shutil.copytree(PROFILES, copy)
            path = copy / "operations" / f"OperationDefinition-{id}.json"
            spec = json.loads(path.read_text(encoding="utf-8"))
            edit(spec)
            path.write_text(json.dumps(spec), encoding="utf-8")
            table = registry.Operations(registry.build(load_conformance(copy)))
            stack.enter_context(operations_table(client, table))
            return table

        yield apply


def _parameters(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


def _operations_of(client: TestClient, type: str | None) -> dict[str, str]:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    if type is None:
        entries = rest.get("operation", [])
    else:
        (resource,) = [r for r in rest["resource"] if r["type"] == type]
        entries = resource.get("operation", [])
    return {o["name"]: o["definition"] for o in entries}


def _validate_only_on_patient_types(spec: dict[str, Any]) -> None:
    spec.update(resource=["Patient"], instance=False)
    spec["parameter"] = [p for p in spec["parameter"] if p["name"] != "profile"]


VALIDATE_URL = "http://calaim-fhir.org/fhir/OperationDefinition/Resource-validate"


def test_levels_and_types_follow_the_definition(client: TestClient, redefine: Redefine) -> None:
    member = create(client, patient("Def"))
    assert client.get(f"/fhir/Patient/{member['id']}/$validate").status_code == 200
    redefine("Resource-validate", _validate_only_on_patient_types)
    answer = client.post("/fhir/Patient/$validate", json=patient("New"), headers=PARAMETERS)
    assert answer.status_code == 200 and answer.json()["resourceType"] == "OperationOutcome"
    body = outcome(client.get(f"/fhir/Patient/{member['id']}/$validate"), 404)
    assert "$validate" in body["issue"][0]["diagnostics"]
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    outcome(client.post("/fhir/Observation/$validate", json=observation, headers=PARAMETERS), 404)


def test_parameters_follow_the_definition(client: TestClient, redefine: Redefine) -> None:
    profiled = _parameters(
        {"name": "resource", "resource": patient("P")},
        {"name": "profile", "valueUri": f"{CANONICAL_BASE}/StructureDefinition/ecm-member"},
    )
    assert client.post("/fhir/Patient/$validate", json=profiled).status_code == 200
    redefine("Resource-validate", _validate_only_on_patient_types)
    body = outcome(client.post("/fhir/Patient/$validate", json=profiled), 400)
    assert expressions(body) == ["Parameters.parameter[1]"]
    assert "profile" in body["issue"][0]["diagnostics"]
    body = outcome(client.get("/fhir/Patient/$validate?profile=x"), 400)
    assert expressions(body) == ["profile"]


def test_a_definition_that_affects_state_refuses_get(
    client: TestClient, redefine: Redefine
) -> None:
    assert client.get("/fhir/ValueSet/$expand?url=http://example.org/none").status_code == 404
    redefine("ValueSet-expand", lambda spec: spec.update(affectsState=True))
    response = client.get("/fhir/ValueSet/$expand?url=http://example.org/none")
    outcome(response, 405)
    assert response.headers["allow"] == "POST"
    body = _parameters({"name": "url", "valueUri": "http://example.org/none"})
    outcome(client.post("/fhir/ValueSet/$expand", json=body), 404)  # runs, finds no ValueSet


def test_the_capability_statement_follows_the_definition(
    client: TestClient, redefine: Redefine
) -> None:
    assert _operations_of(client, "Observation")["validate"] == VALIDATE_URL
    redefine("Resource-validate", _validate_only_on_patient_types)
    assert _operations_of(client, "Patient")["validate"] == VALIDATE_URL
    assert "validate" not in _operations_of(client, "Observation")
    redefine("Task-transitions", lambda spec: spec.update(system=True))
    assert "transitions" in _operations_of(client, None)


def test_the_openapi_description_follows_the_definition(redefine: Redefine) -> None:
    paths = export()["paths"]
    assert {"/fhir/{type}/$validate", "/fhir/{type}/{id}/$validate"} <= set(paths)
    table = redefine("Resource-validate", _validate_only_on_patient_types)
    paths = export(table)["paths"]
    assert "/fhir/Patient/$validate" in paths
    assert "/fhir/{type}/$validate" not in paths
    assert not any(p.endswith("{id}/$validate") for p in paths)
    item = paths["/fhir/Patient/$validate"]
    query = {p["name"] for p in item["get"]["parameters"] if p["in"] == "query"}
    assert "profile" not in query and "mode" in query
    schema = item["post"]["requestBody"]["content"][FHIR_JSON]["schema"]["oneOf"][0]
    assert schema["properties"]["parameter"]["items"]["properties"]["name"]["enum"] == [
        "mode",
        "resource",
    ]


# -- $everything, an operation like the others ---------------------------------------------


EVERYTHING_URL = "http://calaim-fhir.org/fhir/OperationDefinition/Patient-everything"


def test_everything_is_advertised_from_its_definition(client: TestClient) -> None:
    assert _operations_of(client, "Patient")["everything"] == EVERYTHING_URL
    assert "everything" not in _operations_of(client, "Observation")
    paths = export()["paths"]
    item = paths["/fhir/Patient/{id}/$everything"]
    query = {p["name"] for p in item["get"]["parameters"] if p["in"] == "query"}
    assert {"start", "end", "_since", "_type", "_count"} <= query
    assert "/fhir/Patient/$everything" not in paths


def test_everything_takes_only_its_defined_parameters(client: TestClient) -> None:
    member = create(client, patient("E"))
    url = f"/fhir/Patient/{member['id']}/$everything"
    body = outcome(client.get(f"{url}?bogus=1"), 400)
    assert expressions(body) == ["bogus"]
    body = outcome(client.get(f"{url}?start=yesterday"), 400)
    assert expressions(body) == ["start"]
    body = outcome(client.get(f"{url}?start=2024-01-01&start=2024-02-01"), 400)
    assert expressions(body) == ["start"]
    body = outcome(client.post(url, json=_parameters({"name": "bogus", "valueString": "x"})), 400)
    assert expressions(body) == ["Parameters.parameter[0]"]


def test_everything_runs_only_on_a_patient_instance(client: TestClient) -> None:
    member = create(client, patient("L"))
    outcome(client.get("/fhir/Patient/$everything"), 404)
    outcome(client.get("/fhir/$everything"), 404)
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    created = create(client, observation)
    outcome(client.get(f"/fhir/Observation/{created['id']}/$everything"), 404)
    outcome(client.get("/fhir/Patient/never/$everything"), 404)
    client.delete(f"/fhir/Patient/{member['id']}")
    outcome(client.get(f"/fhir/Patient/{member['id']}/$everything"), 410)


def test_everything_by_post_pages_like_get(client: TestClient) -> None:
    member = create(client, patient("P"))
    for n in range(3):
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"o{n}"},
            "subject": {"reference": f"Patient/{member['id']}"},
        }
        create(client, observation)
    url = f"/fhir/Patient/{member['id']}/$everything"
    posted = client.post(url, json=_parameters({"name": "_count", "valueInteger": 2}))
    got = client.get(f"{url}?_count=2")
    assert posted.status_code == got.status_code == 200
    for bundle in (posted.json(), got.json()):
        assert bundle["type"] == "searchset" and len(bundle["entry"]) == 2
    ids = [e["resource"]["id"] for e in all_pages(client, f"{url}?_count=2") if "resource" in e]
    assert len(ids) == 4 and member["id"] in ids


def _bundle(kind: str, *requests: tuple[str, str]) -> dict[str, Any]:
    entries = [{"request": {"method": method, "url": url}} for method, url in requests]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_a_batch_runs_operations_that_get_may_call(client: TestClient) -> None:
    member = create(client, patient("B"))
    pid = member["id"]
    batch = _bundle(
        "batch",
        ("GET", f"Patient/{pid}/$everything?_count=5"),
        ("GET", f"Patient/{pid}/$validate"),
        ("GET", f"Patient/{pid}/$everything?bogus=1"),
        ("GET", f"Patient/{pid}/$ecm-assign"),  # changes data: by POST
        ("POST", f"Patient/{pid}/$validate"),
        ("GET", "Patient/$everything"),
        ("GET", "Patient/never/$everything"),
        ("PUT", f"Patient/{pid}/$validate"),  # an operation is called by GET or POST
        ("POST", "$ecm-eligibility"),  # long-running: on its own URL
    )
    answer = client.post("/fhir", json=batch, headers=PARAMETERS)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    statuses = [e["response"]["status"].split()[0] for e in entries]
    assert statuses == ["200", "200", "400", "405", "200", "404", "404", "405", "400"]
    assert entries[4]["resource"]["resourceType"] == "OperationOutcome"
    issues = entries[8]["response"]["outcome"]["issue"]
    assert [e for i in issues for e in i["expression"]] == ["Bundle.entry[8].url"]
    bundle = entries[0]["resource"]
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [pid]
    assert entries[1]["resource"]["resourceType"] == "OperationOutcome"
    issues = entries[2]["response"]["outcome"]["issue"]
    assert any("bogus" in e for i in issues for e in i.get("expression", [])), issues


def test_a_post_entry_passes_its_resource_as_the_operations_input(client: TestClient) -> None:
    bad = {"resourceType": "Patient", "gender": "bogus"}
    for kind in ("batch", "transaction"):
        entries = [
            {"resource": bad, "request": {"method": "POST", "url": "Patient/$validate"}},
            {
                "resource": {"resourceType": "Parameters",
                             "parameter": [{"name": "resource", "resource": patient("V")}]},
                "request": {"method": "POST", "url": "Patient/$validate"},
            },
        ]
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        answer = client.post("/fhir", json=bundle, headers=PARAMETERS)
        assert answer.status_code == 200, answer.text
        first, second = (e["resource"] for e in answer.json()["entry"])
        assert any(i["severity"] == "error" and "Patient.gender" in i.get("expression", [])
                   for i in first["issue"]), first
        assert not any(i["severity"] == "error" for i in second["issue"]), second


def test_a_transaction_runs_a_read_only_operation_with_its_writes(client: TestClient) -> None:
    member = create(client, patient("T"))
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "t"},
        "subject": {"reference": f"Patient/{member['id']}"},
    }
    bundle = _bundle("transaction", ("GET", f"Patient/{member['id']}/$everything"))
    create_entry = {"resource": observation, "request": {"method": "POST", "url": "Observation"}}
    bundle["entry"].append(create_entry)
    answer = client.post("/fhir", json=bundle, headers=PARAMETERS)
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["entry"]
    assert first["response"]["status"].startswith("200")
    assert first["resource"]["type"] == "searchset"
    assert second["response"]["status"].startswith("201")
