"""``$ecm-eligibility`` over HTTP on both stores: the member modes, their errors, population mode
with its prioritized List, and the asynchronous pattern (``Prefer: respond-async``).

The policy itself (every Population of Focus, exclusion and boundary) is the scenario suite of
``tests/conformance/test_eligibility_scenarios.py``; here: the operation's surface.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.operation_output import check_output
from tests.support import (
    FHIR_JSON,
    TestClient,
    create,
    expressions,
    fhir_client,
    outcome,
    sqlite_url,
)

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SOPT = "urn:oid:2.16.840.1.113883.3.221.5"
CRITERION = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-criterion"
ATTESTATION = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-attestation"
ENTRY = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-entry"
AS_OF = "2024-08-31"
LIST_PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-list"


def _member(
    client: TestClient,
    org: str,
    *,
    ed_visits: int,
    attested: bool | None,
    covered: bool = True,
    birth: str = "1980-05-05",
) -> str:
    patient = create(client, {"resourceType": "Patient", "birthDate": birth})["id"]
    subject = {"reference": f"Patient/{patient}"}
    if covered:
        create(
            client,
            {
                "resourceType": "Coverage",
                "status": "active",
                "beneficiary": subject,
                "type": {"coding": [{"system": SOPT, "code": "21"}]},
                "payor": [{"reference": org}],
                "period": {"start": "2020-01-01"},
            },
        )
    for month in range(ed_visits):
        create(
            client,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "subject": subject,
                "class": {"system": ACT, "code": "EMER"},
                "period": {"start": f"2024-0{3 + month}-10"},
            },
        )
    if attested is not None:
        create(
            client,
            {
                "resourceType": "Observation",
                "meta": {"profile": [ATTESTATION]},
                "status": "final",
                "subject": subject,
                "code": {"coding": [{"system": CRITERION, "code": "avoidable-utilization"}]},
                "effectiveDateTime": "2024-08-01",
                "performer": [{"reference": org}],
                "valueBoolean": attested,
            },
        )
    return str(patient)


@pytest.fixture
def members(client: TestClient) -> dict[str, str]:
    org = "Organization/" + create(client, {"resourceType": "Organization", "name": "Plan"})["id"]
    return {
        "eligible": _member(client, org, ed_visits=5, attested=True),
        "busier": _member(client, org, ed_visits=6, attested=True),
        "attest": _member(client, org, ed_visits=5, attested=None),
        "no": _member(client, org, ed_visits=1, attested=None),
        "uncovered": _member(client, org, ed_visits=5, attested=True, covered=False),
    }


def _params(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    assert body["resourceType"] == "Parameters", body
    out: dict[str, list[dict[str, Any]]] = {}
    for p in body.get("parameter", []):
        out.setdefault(p["name"], []).append(p)
    return out


def _ok(response: Any) -> dict[str, list[dict[str, Any]]]:
    assert response.status_code == 200, response.text[:800]
    return _params(response.json())


def test_instance_get_and_post_agree(client: TestClient, members: dict[str, str]) -> None:
    url = f"/fhir/Patient/{members['eligible']}/$ecm-eligibility"
    got = _ok(client.get(url, params={"asOf": AS_OF}))
    assert got["eligible"][0]["valueBoolean"] is True
    assert got["determination"][0]["valueCode"] == "eligible"
    assert got["asOf"][0]["valueDate"] == AS_OF
    assert got["ruleSetVersion"][0]["valueString"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "asOf", "valueDate": AS_OF}]}
    posted = client.post(url, json=body, headers={"Content-Type": FHIR_JSON})
    assert posted.json() == client.get(url, params={"asOf": AS_OF}).json()


def test_evidence_names_stored_resources(client: TestClient, members: dict[str, str]) -> None:
    got = _ok(
        client.get(f"/fhir/Patient/{members['eligible']}/$ecm-eligibility", params={"asOf": AS_OF})
    )
    pof = next(
        p
        for p in got["pof"]
        if p["part"][0]["valueCoding"]["code"] == "avoidable-utilization-adult"
    )
    refs = [
        q["valueReference"]["reference"]
        for c in pof["part"]
        if c["name"] == "criterion"
        for q in c["part"]
        if q["name"] == "evidence"
    ]
    assert any(r.startswith("Encounter/") for r in refs)
    assert any(r.startswith("Observation/") for r in refs)
    for ref in refs:
        assert client.get(f"/fhir/{ref}").status_code == 200


def test_type_level_with_a_patient_reference(client: TestClient, members: dict[str, str]) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": f"Patient/{members['attest']}"}},
            {"name": "asOf", "valueDate": AS_OF},
        ],
    }
    got = _ok(
        client.post(
            "/fhir/Patient/$ecm-eligibility", json=body, headers={"Content-Type": FHIR_JSON}
        )
    )
    assert got["determination"][0]["valueCode"] == "needs-attestation"
    assert got["eligible"][0]["valueBoolean"] is False


def test_pof_restricts_the_answer(client: TestClient, members: dict[str, str]) -> None:
    got = _ok(
        client.get(
            f"/fhir/Patient/{members['eligible']}/$ecm-eligibility",
            params={"asOf": AS_OF, "pof": "avoidable-utilization"},
        )
    )
    codes = {p["part"][0]["valueCoding"]["code"] for p in got["pof"]}
    assert codes == {"avoidable-utilization-adult", "avoidable-utilization-youth"}


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ({"asOf": "2024-13-01"}, "asOf"),
        ({"asOf": "2024-08"}, "asOf"),
        ({"pof": "not-a-pof"}, "pof"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_inputs_are_400(
    client: TestClient, members: dict[str, str], query: dict[str, str], expression: str
) -> None:
    response = client.get(f"/fhir/Patient/{members['eligible']}/$ecm-eligibility", params=query)
    assert expression in expressions(outcome(response, 400))


def test_unknown_patient_is_404(client: TestClient, members: dict[str, str]) -> None:
    outcome(client.get("/fhir/Patient/nobody/$ecm-eligibility"), 404)
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/nobody"}}],
    }
    response = client.post(
        "/fhir/Patient/$ecm-eligibility", json=body, headers={"Content-Type": FHIR_JSON}
    )
    assert "patient" in expressions(outcome(response, 404))


def test_type_level_needs_patient_or_bundle(client: TestClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [{"name": "asOf", "valueDate": AS_OF}]}
    outcome(
        client.post(
            "/fhir/Patient/$ecm-eligibility", json=body, headers={"Content-Type": FHIR_JSON}
        ),
        400,
    )


def _inline(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "bundle",
                "resource": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [
                        {
                            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
                            "resource": r,
                        }
                        for i, r in enumerate(resources)
                    ],
                },
            },
            {"name": "asOf", "valueDate": AS_OF},
        ],
    }


def test_inline_bundle_stores_nothing(client: TestClient) -> None:
    before = client.get("/fhir/Encounter", params={"_summary": "count"}).json()["total"]
    subject = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "birthDate": "2010-01-01"}]
    resources += [
        {
            "resourceType": "Encounter",
            "status": "finished",
            "subject": subject,
            "class": {"system": ACT, "code": "EMER"},
            "period": {"start": f"2024-0{3 + i}-01"},
        }
        for i in range(3)
    ]
    got = _ok(
        client.post(
            "/fhir/Patient/$ecm-eligibility",
            json=_inline(resources),
            headers={"Content-Type": FHIR_JSON},
        )
    )
    pof = next(
        p
        for p in got["pof"]
        if p["part"][0]["valueCoding"]["code"] == "avoidable-utilization-youth"
    )
    assert pof["part"][1]["valueCode"] == "needs-attestation"
    assert got["baseline"][0]["part"][0]["valueCode"] == "insufficient-data"
    assert got["determination"][0]["valueCode"] == "insufficient-data"
    refs = {
        q["valueReference"]["reference"]
        for c in pof["part"]
        if c["name"] == "criterion"
        for q in c["part"]
        if q["name"] == "evidence"
    }
    assert refs and all(r.startswith("urn:uuid:") for r in refs)
    after = client.get("/fhir/Encounter", params={"_summary": "count"}).json()["total"]
    assert after == before


# inline Bundles refused (400), with the expression the outcome names
BAD_INLINE_BUNDLES = [
    ([], "bundle"),
    ([{"resourceType": "Patient"}, {"resourceType": "Patient"}], "bundle"),
    ([{"resourceType": "Patient", "birthDate": "yesterday"}], "bundle.entry[0].resource"),
]


@pytest.mark.parametrize(("resources", "expression"), BAD_INLINE_BUNDLES)
def test_bad_inline_bundles_are_400(
    client: TestClient, resources: list[dict[str, Any]], expression: str
) -> None:
    response = client.post(
        "/fhir/Patient/$ecm-eligibility",
        json=_inline(resources),
        headers={"Content-Type": FHIR_JSON},
    )
    assert any(e.startswith(expression) for e in expressions(outcome(response, 400)))


def test_patient_and_bundle_together_are_400(client: TestClient, members: dict[str, str]) -> None:
    body = _inline([{"resourceType": "Patient"}])
    body["parameter"].append(
        {"name": "patient", "valueReference": {"reference": f"Patient/{members['no']}"}}
    )
    response = client.post(
        "/fhir/Patient/$ecm-eligibility", json=body, headers={"Content-Type": FHIR_JSON}
    )
    assert "patient" in expressions(outcome(response, 400))


def _definition(client: TestClient, id: str) -> dict[str, Any]:
    response = client.get(f"/fhir/OperationDefinition/{id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_capabilities_advertise_both_definitions(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    system = {o["definition"] for o in rest.get("operation", []) if o["name"] == "ecm-eligibility"}
    assert any(d.endswith("/ecm-eligibility-population") for d in system)
    by_type = {
        r["type"]: {
            o["definition"] for o in r.get("operation", []) if o["name"] == "ecm-eligibility"
        }
        for r in rest["resource"]
    }
    assert any(d.endswith("/OperationDefinition/ecm-eligibility") for d in by_type["Patient"])
    assert any(d.endswith("/ecm-eligibility-population") for d in by_type["Group"])


def _list_entries(
    client: TestClient, got: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, int, str]]:
    ref = got["list"][0]["valueReference"]["reference"]
    listed = client.get(f"/fhir/{ref}").json()
    checked = client.post("/fhir/List/$validate", json=listed, headers={"Content-Type": FHIR_JSON})
    assert checked.status_code == 200
    assert [i for i in checked.json().get("issue", []) if i["severity"] in ("error", "fatal")] == []
    assert listed["meta"]["profile"] == [LIST_PROFILE]
    assert listed["orderedBy"]["coding"][0]["code"] == "priority"
    out = []
    for entry in listed.get("entry", []):
        ext = next(e for e in entry["extension"] if e["url"] == ENTRY)
        parts = {p["url"]: p for p in ext["extension"]}
        out.append(
            (
                entry["item"]["reference"].removeprefix("Patient/"),
                parts["rank"]["valueInteger"],
                parts["determination"]["valueCode"],
            )
        )
    return out


def _summary(got: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {p["name"]: p["valueInteger"] for p in got["summary"][0]["part"]}


def _group_run(client: TestClient, patients: list[str]) -> Any:
    """``Group/[id]/$ecm-eligibility`` on ``asOf`` over a new Group of ``patients``."""
    group = create(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{id}"}} for id in patients],
        },
    )
    return client.post(
        f"/fhir/Group/{group['id']}/$ecm-eligibility",
        json={"resourceType": "Parameters", "parameter": [{"name": "asOf", "valueDate": AS_OF}]},
        headers={"Content-Type": FHIR_JSON},
    )


def test_group_run_writes_a_prioritized_list(client: TestClient, members: dict[str, str]) -> None:
    response = _group_run(client, list(members.values()))
    got = _ok(response)
    assert check_output(_definition(client, "ecm-eligibility-population"), response.json()) == []
    assert _summary(got) == {
        "evaluated": 5,
        "eligible": 2,
        "needsAttestation": 1,
        "insufficientData": 1,
        "notEligible": 1,
        "listed": 3,
        "careCoordinationReview": 0,
    }
    assert _list_entries(client, got) == [
        (members["busier"], 1, "eligible"),
        (members["eligible"], 2, "eligible"),
        (members["attest"], 3, "needs-attestation"),
    ]


def test_members_in_plan_case_management_are_listed_for_review(client: TestClient) -> None:
    """Seed 003 VI.C.1.i: a member who meets a POF while in the plan's Basic or Complex Case
    Management stays excluded (not-eligible) but is listed after the others, flagged for Care
    Coordination review; one whom nothing else qualifies is not listed."""
    org = "Organization/" + create(client, {"resourceType": "Organization", "name": "Plan"})["id"]
    eligible = _member(client, org, ed_visits=5, attested=True)
    managed = _member(client, org, ed_visits=6, attested=True)
    idle = _member(client, org, ed_visits=1, attested=None)
    for patient in (managed, idle):
        create(
            client,
            {
                "resourceType": "EpisodeOfCare",
                "status": "active",
                "patient": {"reference": f"Patient/{patient}"},
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://calaim-fhir.org/fhir/CodeSystem/ecm-program",
                                "code": "plan-case-management",
                            }
                        ]
                    }
                ],
                "period": {"start": "2024-01-01"},
            },
        )
    response = _group_run(client, [eligible, managed, idle])
    got = _ok(response)
    assert check_output(_definition(client, "ecm-eligibility-population"), response.json()) == []
    summary = _summary(got)
    assert (summary["notEligible"], summary["listed"], summary["careCoordinationReview"]) == (
        2,
        2,
        1,
    )
    assert _list_entries(client, got) == [(eligible, 1, "eligible"), (managed, 2, "not-eligible")]
    listed = client.get(f"/fhir/{got['list'][0]['valueReference']['reference']}").json()
    parts = {p["url"]: p for p in listed["entry"][1]["extension"][0]["extension"]}
    assert parts["review"]["valueCoding"]["code"] == "care-coordination-review"
    assert parts["pof"]["valueCoding"]["code"] == "avoidable-utilization-adult"
    assert "Care Coordination review" in listed["entry"][1]["flag"]["text"]


def test_population_mode_refuses_get(client: TestClient, members: dict[str, str]) -> None:
    group = create(client, {"resourceType": "Group", "type": "person", "actual": True})
    outcome(client.get(f"/fhir/Group/{group['id']}/$ecm-eligibility"), 405)
    outcome(client.get("/fhir/$ecm-eligibility"), 405)


def test_system_run_takes_every_covered_member(client: TestClient, members: dict[str, str]) -> None:
    got = _ok(
        client.post(
            "/fhir/$ecm-eligibility",
            json={
                "resourceType": "Parameters",
                "parameter": [{"name": "asOf", "valueDate": AS_OF}],
            },
            headers={"Content-Type": FHIR_JSON},
        )
    )
    assert _summary(got)["evaluated"] == 4  # the member without Coverage is not a member
    assert [m for m, _, _ in _list_entries(client, got)] == [
        members["busier"],
        members["eligible"],
        members["attest"],
    ]


def test_async_run_is_polled_to_a_batch_response(
    client: TestClient, members: dict[str, str]
) -> None:
    response = client.post(
        "/fhir/$ecm-eligibility",
        json={"resourceType": "Parameters", "parameter": [{"name": "asOf", "valueDate": AS_OF}]},
        headers={"Content-Type": FHIR_JSON, "Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    location = response.headers["Content-Location"]
    assert "/_async/" in location
    path = location[location.index("/fhir/") :]
    deadline = time.monotonic() + 30
    while True:
        polled = client.get(path)
        if polled.status_code != 202:
            break
        assert "X-Progress" in polled.headers and "Retry-After" in polled.headers
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    assert polled.status_code == 200, polled.text
    bundle = polled.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "batch-response"
    entry = bundle["entry"][0]
    assert entry["response"]["status"].startswith("200")
    got = _params(entry["resource"])
    assert _summary(got)["listed"] == 3
    assert client.delete(path).status_code == 202
    outcome(client.get(path), 404)


def test_unknown_job_is_404(client: TestClient) -> None:
    outcome(client.get("/fhir/_async/no-such-job"), 404)
    outcome(client.delete("/fhir/_async/no-such-job"), 404)


def test_an_unknown_complex_social_factor_valueset_is_a_clear_500(tmp_path: Any) -> None:
    """A plan setting naming a ValueSet the server lacks fails every call with an
    OperationOutcome naming the setting, not a bare server error."""
    url = sqlite_url(tmp_path / "fhir.db")
    with fhir_client(
        url, eligibility_complex_social_factor_valueset="http://example.org/ValueSet/none"
    ) as other:
        patient = create(other, {"resourceType": "Patient", "birthDate": "1980-01-01"})["id"]
        response = other.get(f"/fhir/Patient/{patient}/$ecm-eligibility")
        assert response.status_code == 500
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert "CALAIM_FHIR_ELIGIBILITY_COMPLEX_SOCIAL_FACTOR_VALUESET" in str(body)
