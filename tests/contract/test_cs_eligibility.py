"""``$cs-eligibility`` over HTTP on both stores: the modes, the inputs and their errors.

The criteria of each Community Support (every branch, boundary and reading) are the scenario
suite of ``tests/conformance/test_cs_eligibility_scenarios.py``; here: the operation's surface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.contract.test_eligibility import BAD_INLINE_BUNDLES, _inline
from tests.operation_output import check_output
from tests.support import FHIR_JSON, TestClient, create, expressions, outcome

SOPT = "urn:oid:2.16.840.1.113883.3.221.5"
LOINC = "http://loinc.org"
CS = "http://calaim-fhir.org/fhir/CodeSystem/community-supports"
DEFINITION = (
    Path(__file__).resolve().parents[2]
    / "profiles"
    / "operations"
    / "OperationDefinition-cs-eligibility.json"
)
AS_OF = "2024-10-15"


def _act_score(subject: dict[str, str], score: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "82668-5"}]},
        "subject": subject,
        "effectiveDateTime": "2024-09-01",
        "valueInteger": score,
    }


@pytest.fixture
def member(client: TestClient) -> str:
    """An adult with Medi-Cal managed care and an Asthma Control Test score of 17."""
    org = create(client, {"resourceType": "Organization", "name": "Plan"})["id"]
    patient = create(client, {"resourceType": "Patient", "birthDate": "1980-05-05"})["id"]
    subject = {"reference": f"Patient/{patient}"}
    create(
        client,
        {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": subject,
            "type": {"coding": [{"system": SOPT, "code": "21"}]},
            "payor": [{"reference": f"Organization/{org}"}],
            "period": {"start": "2020-01-01"},
        },
    )
    create(client, _act_score(subject, 17))
    return str(patient)


def _services(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert body["resourceType"] == "Parameters", body
    out: dict[str, dict[str, Any]] = {}
    for p in body["parameter"]:
        if p["name"] == "service":
            parts = {q["name"]: q for q in p["part"] if q["name"] != "criterion"}
            out[parts["code"]["valueCoding"]["code"]] = {
                "result": parts["result"]["valueCode"],
                "determination": parts["determination"]["valueCode"],
                "criteria": [q for q in p["part"] if q["name"] == "criterion"],
            }
    return out


def _post(client: TestClient, path: str, parameters: list[dict[str, Any]]) -> Any:
    return client.post(
        path,
        json={"resourceType": "Parameters", "parameter": parameters},
        headers={"Content-Type": FHIR_JSON},
    )


def _asked(*services: str) -> list[dict[str, Any]]:
    return [{"name": "asOf", "valueDate": AS_OF}] + [
        {"name": "service", "valueCode": s} for s in services
    ]


def test_instance_get_and_post_agree(client: TestClient, member: str) -> None:
    path = f"/fhir/Patient/{member}/$cs-eligibility"
    got = client.get(f"{path}?asOf={AS_OF}&service=asthma-remediation&service=sobering-centers")
    assert got.status_code == 200, got.text[:800]
    posted = _post(client, path, _asked("asthma-remediation", "sobering-centers"))
    assert posted.status_code == 200
    assert got.json() == posted.json()
    services = _services(got.json())
    assert list(services) == ["asthma-remediation", "sobering-centers"]
    assert services["asthma-remediation"]["result"] == "met"
    assert services["asthma-remediation"]["determination"] == "eligible"
    assert services["sobering-centers"]["determination"] == "needs-attestation"
    assert check_output(orjson.loads(DEFINITION.read_bytes()), got.json()) == []


def test_type_level_with_a_patient_reference(client: TestClient, member: str) -> None:
    reference = {"name": "patient", "valueReference": {"reference": f"Patient/{member}"}}
    response = _post(
        client, "/fhir/Patient/$cs-eligibility", [reference, *_asked("asthma-remediation")]
    )
    assert response.status_code == 200, response.text[:800]
    assert _services(response.json())["asthma-remediation"]["result"] == "met"


def test_a_service_asked_twice_is_answered_once(client: TestClient, member: str) -> None:
    response = client.get(
        f"/fhir/Patient/{member}/$cs-eligibility",
        params=[
            ("asOf", AS_OF),
            ("service", "asthma-remediation"),
            ("service", "asthma-remediation"),
        ],
    )
    names = [p["name"] for p in response.json()["parameter"]]
    assert names.count("service") == 1


def test_the_default_day_is_today(client: TestClient, member: str) -> None:
    response = client.get(f"/fhir/Patient/{member}/$cs-eligibility?service=respite-services")
    assert response.status_code == 200
    as_of = next(p for p in response.json()["parameter"] if p["name"] == "asOf")
    assert len(as_of["valueDate"]) == 10


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ({"asOf": AS_OF}, "service"),
        ({"service": "massage-therapy"}, "service"),
        ({"service": "asthma-remediation", "asOf": "2024-10"}, "asOf"),
        ({"service": "asthma-remediation", "asOf": "yesterday"}, "asOf"),
        ({"service": "asthma-remediation", "pof": "homelessness"}, "pof"),
    ],
)
def test_bad_inputs_are_400(
    client: TestClient, member: str, query: dict[str, str], expression: str
) -> None:
    response = client.get(f"/fhir/Patient/{member}/$cs-eligibility", params=query)
    assert expression in expressions(outcome(response, 400))


def test_a_bad_second_service_names_its_place(client: TestClient, member: str) -> None:
    response = client.get(
        f"/fhir/Patient/{member}/$cs-eligibility",
        params=[("service", "sobering-centers"), ("service", "nope")],
    )
    assert "service[1]" in expressions(outcome(response, 400))


def test_unknown_patient_is_404(client: TestClient) -> None:
    outcome(client.get("/fhir/Patient/nobody/$cs-eligibility?service=sobering-centers"), 404)
    reference = {"name": "patient", "valueReference": {"reference": "Patient/nobody"}}
    response = _post(
        client, "/fhir/Patient/$cs-eligibility", [reference, *_asked("day-habilitation")]
    )
    assert "patient" in expressions(outcome(response, 404))


def test_a_deleted_patient_is_gone(client: TestClient, member: str) -> None:
    assert client.delete(f"/fhir/Patient/{member}").status_code in (200, 204)
    outcome(client.get(f"/fhir/Patient/{member}/$cs-eligibility?service=sobering-centers"), 410)


def test_type_level_needs_patient_or_bundle(client: TestClient) -> None:
    response = _post(client, "/fhir/Patient/$cs-eligibility", _asked("sobering-centers"))
    assert "patient" in expressions(outcome(response, 400))


def test_patient_must_reference_a_patient(client: TestClient) -> None:
    reference = {"name": "patient", "valueReference": {"reference": "Organization/x"}}
    response = _post(
        client, "/fhir/Patient/$cs-eligibility", [reference, *_asked("respite-services")]
    )
    assert "patient" in expressions(outcome(response, 400))


def test_instance_takes_neither_patient_nor_bundle(client: TestClient, member: str) -> None:
    reference = {"name": "patient", "valueReference": {"reference": f"Patient/{member}"}}
    response = _post(
        client, f"/fhir/Patient/{member}/$cs-eligibility", [reference, *_asked("respite-services")]
    )
    outcome(response, 400)


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``bundle`` parameter of ``$ecm-eligibility``'s inline tests (its ``asOf`` dropped)."""
    parameter: dict[str, Any] = _inline(resources)["parameter"][0]
    return parameter


def test_inline_bundle_stores_nothing(client: TestClient) -> None:
    before = client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"]
    subject = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
    resources = [{"resourceType": "Patient", "birthDate": "1990-01-01"}, _act_score(subject, 12)]
    response = _post(
        client, "/fhir/Patient/$cs-eligibility", [_bundle(resources), *_asked("asthma-remediation")]
    )
    assert response.status_code == 200, response.text[:800]
    asthma = _services(response.json())["asthma-remediation"]
    assert (asthma["result"], asthma["determination"]) == ("met", "insufficient-data")
    assert client.get("/fhir/Observation", params={"_summary": "count"}).json()["total"] == before


@pytest.mark.parametrize(("resources", "expression"), BAD_INLINE_BUNDLES)
def test_bad_inline_bundles_are_400(
    client: TestClient, resources: list[dict[str, Any]], expression: str
) -> None:
    response = _post(
        client, "/fhir/Patient/$cs-eligibility", [_bundle(resources), *_asked("sobering-centers")]
    )
    assert any(e.startswith(expression) for e in expressions(outcome(response, 400)))


def test_patient_and_bundle_together_are_400(client: TestClient, member: str) -> None:
    reference = {"name": "patient", "valueReference": {"reference": f"Patient/{member}"}}
    response = _post(
        client,
        "/fhir/Patient/$cs-eligibility",
        [_bundle([{"resourceType": "Patient"}]), reference, *_asked("sobering-centers")],
    )
    assert "patient" in expressions(outcome(response, 400))


def test_only_patient_member_modes_exist(client: TestClient) -> None:
    group = create(client, {"resourceType": "Group", "type": "person", "actual": True})["id"]
    assert client.post(f"/fhir/Group/{group}/$cs-eligibility").status_code >= 400
    assert client.post("/fhir/$cs-eligibility").status_code >= 400


def test_capabilities_advertise_the_definition(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert any(
        o["name"] == "cs-eligibility"
        and o["definition"].endswith("/OperationDefinition/cs-eligibility")
        for o in patient.get("operation", [])
    )
    definition = client.get("/fhir/OperationDefinition/cs-eligibility")
    assert definition.status_code == 200
    assert definition.json()["code"] == "cs-eligibility"
