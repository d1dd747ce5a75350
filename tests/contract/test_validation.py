"""Profile validation on every write, and ``$validate``, over HTTP on both stores."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import FHIR_JSON, TestClient, expressions, outcome

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = ROOT / "examples" / "resources"
SYNTHEA = ROOT / "tests" / "fixtures" / "synthea-us-core.json"
OUR = "http://calaim-fhir.org/fhir/StructureDefinition/"
HEADERS = {"Content-Type": FHIR_JSON}


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESOURCES / name).read_text(encoding="utf-8"))
    return data


def _load_all(client: TestClient) -> None:
    entries = []
    for path in sorted(RESOURCES.glob("*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        entries.append(
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = client.post("/fhir", json=bundle, headers=HEADERS)
    assert response.status_code == 200, response.text[:2000]


def _count(client: TestClient, type: str) -> int:
    total: int = client.get(f"/fhir/{type}?_summary=count").json()["total"]
    return total


def test_synthea_us_core_data_is_stored_with_warnings(client: TestClient) -> None:
    bundle = json.loads(SYNTHEA.read_text(encoding="utf-8"))
    response = client.post(
        "/fhir", json=bundle, headers={**HEADERS, "Prefer": "return=OperationOutcome"}
    )
    assert response.status_code == 200, response.text[:2000]
    for entry in response.json()["entry"]:
        assert entry["response"]["status"].startswith("201")
        issues = entry["response"]["outcome"]["issue"]
        warnings = [i for i in issues if i["severity"] == "warning"]
        assert warnings and all(i["code"] == "not-supported" for i in warnings)
        assert any("meta.profile[0]" in e for i in warnings for e in i["expression"])


def test_unknown_foreign_profile_can_be_an_error(make_client: Any) -> None:
    with make_client(unknown_profile="error") as strict:
        patient = {
            "resourceType": "Patient",
            "meta": {"profile": ["http://example.org/StructureDefinition/other"]},
        }
        body = outcome(strict.post("/fhir/Patient", json=patient, headers=HEADERS), 422)
        assert expressions(body) == ["Patient.meta.profile[0]"]
        assert _count(strict, "Patient") == 0


def test_unknown_profile_of_this_server_is_an_error(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "meta": {"profile": [OUR + "ecm-nobody"]}}
    body = outcome(client.post("/fhir/Patient", json=patient, headers=HEADERS), 422)
    assert body["issue"][0]["code"] == "not-supported"
    assert _count(client, "Patient") == 0


def test_warnings_come_back_with_prefer_operation_outcome(client: TestClient) -> None:
    patient = {
        "resourceType": "Patient",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
    }
    plain = client.post("/fhir/Patient", json=patient, headers=HEADERS)
    assert plain.status_code == 201 and plain.json()["resourceType"] == "Patient"
    response = client.post(
        "/fhir/Patient", json=patient, headers={**HEADERS, "Prefer": "return=OperationOutcome"}
    )
    body = outcome(response, 201)
    severities = [i["severity"] for i in body["issue"]]
    assert severities == ["information", "warning"]
    assert body["issue"][1]["expression"] == ["Patient.meta.profile[0]"]


def test_every_issue_is_listed_and_nothing_changes(client: TestClient) -> None:
    _load_all(client)
    task = _example("Task-ecm-referral-task-example.json")
    before = client.get("/fhir/Task/ecm-referral-task-example").json()
    broken = copy.deepcopy(task)
    del broken["focus"]
    del broken["authoredOn"]
    broken["intent"] = "plan"
    body = outcome(
        client.put("/fhir/Task/ecm-referral-task-example", json=broken, headers=HEADERS), 422
    )
    found = expressions(body)
    assert {"Task.focus", "Task.authoredOn", "Task.intent"} <= set(found), found
    assert client.get("/fhir/Task/ecm-referral-task-example").json() == before


def test_server_rule_applies_a_profile_nobody_claimed(client: TestClient) -> None:
    _load_all(client)
    referral = _example("ServiceRequest-ecm-referral-example.json")
    referral.pop("meta")
    referral.pop("id")
    del referral["authoredOn"]
    body = outcome(client.post("/fhir/ServiceRequest", json=referral, headers=HEADERS), 422)
    assert "ServiceRequest.authoredOn" in expressions(body)
    assert any("ecm-referral" in i["diagnostics"] for i in body["issue"])
    # and the Task rule follows focus to the referral
    task = _example("Task-ecm-referral-task-example.json")
    task.pop("meta")
    task.pop("id")
    task["intent"] = "plan"
    body = outcome(client.post("/fhir/Task", json=task, headers=HEADERS), 422)
    assert "Task.intent" in expressions(body)


def test_server_rules_can_be_turned_off(make_client: Any) -> None:
    with make_client(require_profiles=False) as lax:
        referral = _example("ServiceRequest-ecm-referral-example.json")
        referral.pop("meta")
        referral.pop("id")
        del referral["authoredOn"]
        assert lax.post("/fhir/ServiceRequest", json=referral, headers=HEADERS).status_code == 201


def test_a_patch_that_breaks_a_profile_is_refused(client: TestClient) -> None:
    _load_all(client)
    before = client.get("/fhir/Task/ecm-referral-task-example").json()
    patch = [{"op": "replace", "path": "/status", "value": "rejected"}]
    response = client.patch(
        "/fhir/Task/ecm-referral-task-example",
        json=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    body = outcome(response, 422)
    assert any(i["code"] == "invariant" for i in body["issue"]), body
    assert all(i["diagnostics"].startswith("After patching") for i in body["issue"])
    assert client.get("/fhir/Task/ecm-referral-task-example").json() == before


def test_a_transaction_reports_every_entry_and_writes_nothing(client: TestClient) -> None:
    referral = _example("ServiceRequest-ecm-referral-example.json")
    del referral["authoredOn"]
    task = _example("Task-ecm-referral-task-example.json")
    task["intent"] = "plan"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": referral,
                "request": {"method": "PUT", "url": f"ServiceRequest/{referral['id']}"},
            },
            {"resource": task, "request": {"method": "PUT", "url": f"Task/{task['id']}"}},
        ],
    }
    body = outcome(client.post("/fhir", json=bundle, headers=HEADERS), 422)
    found = expressions(body)
    assert "Bundle.entry[0].resource.authoredOn" in found
    assert "Bundle.entry[1].resource.intent" in found
    assert _count(client, "ServiceRequest") == 0 and _count(client, "Task") == 0


def test_references_resolve_inside_a_transaction(client: TestClient) -> None:
    task = _example("Task-ecm-referral-task-example.json")
    referral = _example("ServiceRequest-ecm-referral-example.json")
    referral["code"] = {"text": "not ECM"}  # the referral breaks ecm-referral ...
    referral.pop("meta")
    referral["category"] = [{"text": "other"}]  # ... and is no ECM referral any more
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": referral,
                "request": {"method": "PUT", "url": f"ServiceRequest/{referral['id']}"},
            },
            {"resource": task, "request": {"method": "PUT", "url": f"Task/{task['id']}"}},
        ],
    }
    body = outcome(client.post("/fhir", json=bundle, headers=HEADERS), 422)
    assert "Bundle.entry[1].resource.focus" in expressions(body)


# -- $validate --------------------------------------------------------------------------------


def _validate(client: TestClient, url: str, body: Any) -> Any:
    return client.post(url, json=body, headers=HEADERS)


def test_validate_answers_200_for_valid_and_invalid(client: TestClient) -> None:
    patient = _example("Patient-ecm-member-example.json")
    ok = outcome(_validate(client, "/fhir/Patient/$validate", patient), 200)
    assert [i["severity"] for i in ok["issue"]] == ["information"]
    del patient["birthDate"]
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": patient}],
    }
    bad = outcome(_validate(client, "/fhir/Patient/$validate", params), 200)
    assert "Patient.birthDate" in expressions(bad)
    assert _count(client, "Patient") == 0


def test_validate_with_a_profile_parameter(client: TestClient) -> None:
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient"}},
            {"name": "profile", "valueUri": OUR + "ecm-member"},
        ],
    }
    body = outcome(_validate(client, "/fhir/Patient/$validate", params), 200)
    assert "Patient.birthDate" in expressions(body)
    params["parameter"][1]["valueUri"] = OUR + "nothing-like-it"
    outcome(_validate(client, "/fhir/Patient/$validate", params), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "bogus"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "nope", "valueString": "x"}]},
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "resource",
                    "resource": {"resourceType": "Task", "status": "draft", "intent": "order"},
                }
            ],
        },
    ],
)
def test_validate_refuses_bad_parameters(client: TestClient, body: Any) -> None:
    outcome(_validate(client, "/fhir/Patient/$validate", body), 400)


def test_validate_an_instance(client: TestClient) -> None:
    outcome(client.get("/fhir/Patient/nobody/$validate"), 404)
    _load_all(client)
    stored = outcome(client.get("/fhir/Patient/ecm-member-example/$validate"), 200)
    assert [i["severity"] for i in stored["issue"]] == ["information"]
    member = _example("Patient-ecm-member-example.json")
    member["id"] = "someone-else"
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": member},
            {"name": "mode", "valueCode": "update"},
        ],
    }
    outcome(_validate(client, "/fhir/Patient/ecm-member-example/$validate", params), 400)
    delete = {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]}
    outcome(_validate(client, "/fhir/Patient/ecm-member-example/$validate", delete), 200)


def test_validate_is_listed_and_unknown_operations_are_404(client: TestClient) -> None:
    outcome(client.post("/fhir/Patient/$no-such-op", json={}, headers=HEADERS), 404)
    outcome(client.get("/fhir/Patient/$validate"), 400)


# -- terminology operations over HTTP ---------------------------------------------------------

POF = "http://calaim-fhir.org/fhir/ValueSet/ecm-population-of-focus"
POF_CS = "http://calaim-fhir.org/fhir/CodeSystem/ecm-population-of-focus"


def test_terminology_operations(client: TestClient) -> None:
    expanded = client.get(f"/fhir/ValueSet/$expand?url={POF}").json()
    codes = {c["code"] for c in expanded["expansion"]["contains"]}
    assert {"homelessness-adult", "child-welfare-youth"} <= codes
    by_id = client.get("/fhir/ValueSet/ecm-population-of-focus-youth/$expand").json()
    assert all(c["code"].endswith("-youth") for c in by_id["expansion"]["contains"])
    checked = client.get(
        f"/fhir/ValueSet/$validate-code?url={POF}&system={POF_CS}&code=homelessness-adult"
    ).json()
    assert {"name": "result", "valueBoolean": True} in checked["parameter"]
    looked = client.get(f"/fhir/CodeSystem/$lookup?system={POF_CS}&code=homelessness-adult")
    assert looked.status_code == 200
    outcome(client.get(f"/fhir/CodeSystem/$lookup?system={POF_CS}&code=nope"), 404)
    translated = client.get(
        "/fhir/ConceptMap/community-supports-to-hcpcs/$translate"
        "?system=http://calaim-fhir.org/fhir/CodeSystem/community-supports&code=medically-tailored-meals"
    ).json()
    assert {"name": "result", "valueBoolean": True} in translated["parameter"]
    r4 = client.get("/fhir/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/request-status").json()
    assert "active" in {c["code"] for c in r4["expansion"]["contains"]}


def _member_with_base_and_profile_errors() -> dict[str, Any]:
    """A Patient claiming the ECM member profile, missing its birthDate (a profile error) and
    with a gender outside the required ValueSet (a base error that leaves it readable)."""
    patient = _example("Patient-ecm-member-example.json")
    patient.pop("id")
    del patient["birthDate"]
    patient["gender"] = "sometimes"
    return patient


def test_validate_reports_base_and_profile_issues_together(client: TestClient) -> None:
    body = outcome(_validate(client, "/fhir/Patient/$validate",
                             _member_with_base_and_profile_errors()), 200)
    found = expressions(body)
    assert "Patient.gender" in found, body  # base: required binding
    assert "Patient.birthDate" in found, body  # profile: ecm-member requires it
    # a structure error (wrong datatype) stops at the base stage: profiles cannot read it
    broken = _member_with_base_and_profile_errors()
    broken["name"] = "not a list"
    body = outcome(_validate(client, "/fhir/Patient/$validate", broken), 200)
    assert "Patient.birthDate" not in expressions(body), body


def test_a_write_reports_base_and_profile_issues_together(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=_member_with_base_and_profile_errors(),
                           headers=HEADERS)
    body = outcome(response, 400)
    found = expressions(body)
    assert "Patient.gender" in found and "Patient.birthDate" in found, body
    assert _count(client, "Patient") == 0
    # in a batch entry too, located under the entry
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{
        "resource": _member_with_base_and_profile_errors(),
        "request": {"method": "POST", "url": "Patient"}}]}
    entry = client.post("/fhir", json=bundle, headers=HEADERS).json()["entry"][0]
    assert entry["response"]["status"].startswith("400")
    found = expressions(entry["response"]["outcome"])
    assert "Bundle.entry[0].resource.gender" in found, found
    assert "Bundle.entry[0].resource.birthDate" in found, found


def test_a_transaction_entry_reports_base_and_profile_issues_together(client: TestClient) -> None:
    good = _example("Patient-ecm-member-example.json")
    good.pop("id")
    broken = _member_with_base_and_profile_errors()
    broken["name"] = "not a list"  # structure: profiles cannot read it
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": good, "request": {"method": "POST", "url": "Patient"}},
        {"resource": _member_with_base_and_profile_errors(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": broken, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**_member_with_base_and_profile_errors(), "id": "second"},
         "request": {"method": "PUT", "url": "Patient/second"}},
    ]}
    body = outcome(client.post("/fhir", json=bundle, headers=HEADERS), 400)
    found = expressions(body)
    for n in (1, 3):  # base (required binding) and profile (ecm-member's birthDate) together
        assert f"Bundle.entry[{n}].resource.gender" in found, body
        assert f"Bundle.entry[{n}].resource.birthDate" in found, body
    assert "Bundle.entry[2].resource.name" in found, body
    assert "Bundle.entry[2].resource.birthDate" not in found, body
    assert not any(e.startswith("Bundle.entry[0]") for e in found), body
    # every issue in entry order, each entry's base issues before its profile issues
    order = [int(e.split("]")[0].split("[")[1]) for e in found]
    assert order == sorted(order), found
    entry1 = [e for e in found if e.startswith("Bundle.entry[1]")]
    assert entry1.index("Bundle.entry[1].resource.gender") < entry1.index(
        "Bundle.entry[1].resource.birthDate")
    assert _count(client, "Patient") == 0


def test_a_patch_result_reports_base_and_profile_issues_together(client: TestClient) -> None:
    member = _example("Patient-ecm-member-example.json")
    assert client.put(f"/fhir/Patient/{member['id']}", json=member,
                      headers=HEADERS).status_code in (200, 201)
    before = client.get(f"/fhir/Patient/{member['id']}").json()
    patch = [{"op": "replace", "path": "/gender", "value": "sometimes"},
             {"op": "remove", "path": "/birthDate"}]
    json_patch = {"Content-Type": "application/json-patch+json"}
    body = outcome(client.patch(f"/fhir/Patient/{member['id']}", json=patch,
                                headers=json_patch), 422)
    found = expressions(body)
    assert "Patient.gender" in found and "Patient.birthDate" in found, body
    assert all(i["diagnostics"].startswith("After patching") for i in body["issue"]), body
    # a patch that breaks the structure stops at the base stage
    broken = [*patch, {"op": "replace", "path": "/name", "value": "not a list"}]
    body = outcome(client.patch(f"/fhir/Patient/{member['id']}", json=broken,
                                headers=json_patch), 422)
    assert "Patient.birthDate" not in expressions(body), body
    # a PATCH entry of a transaction, located under the entry
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(patch).encode()).decode()}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{member['id']}"}}]}
    body = outcome(client.post("/fhir", json=bundle, headers=HEADERS), 422)
    found = expressions(body)
    assert "Bundle.entry[0].Patient.gender" in found, body
    assert "Bundle.entry[0].Patient.birthDate" in found, body
    assert client.get(f"/fhir/Patient/{member['id']}").json() == before
