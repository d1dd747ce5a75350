"""``patient/`` scopes with a patient context (a launch's ``patient``): the SMART scope policy
narrows each to the patient's compartment, over HTTP on both stores.

The expectations are written by hand from the scene: Patients ``p1`` and ``p2``; Observations
``o1`` (p1, laboratory, performer ``pr1``), ``o2`` (p2, laboratory), ``o3`` (p1,
vital-signs); Practitioners ``pr1`` (referred to by o1) and ``pr2`` (by nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server.auth.principal import LOCAL, Principal
from server.auth.scopes import ScopeSet
from tests.auth.scoped import scoped_app
from tests.support import FHIR_JSON, Acting, TestClient

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def _obs(id: str, patient: str, category: str, performer: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{patient}"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": category,
                    }
                ]
            }
        ],
    }
    if performer:
        body["performer"] = [{"reference": f"Practitioner/{performer}"}]
    return body


SCENE: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1"},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Practitioner", "id": "pr1"},
    {"resourceType": "Practitioner", "id": "pr2"},
    _obs("o1", "p1", "laboratory", "pr1"),
    _obs("o2", "p2", "laboratory"),
    _obs("o3", "p1", "vital-signs"),
]


@pytest.fixture(scope="module")
def acting() -> Acting:
    return Acting()


@pytest.fixture(scope="module")
def client(database_url: str, acting: Acting) -> Iterator[TestClient]:
    with scoped_app(database_url, acting, SCENE) as client:
        yield client


def _as(acting: Acting, scope: str, patient: str | None = "p1") -> None:
    acting.as_(Principal("app", scopes=ScopeSet.of(scope), patient=patient))


def _ids(client: TestClient, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


def test_search_and_read_reach_the_patients_compartment_only(
    client: TestClient, acting: Acting
) -> None:
    _as(acting, "patient/Observation.rs patient/Patient.r")
    assert _ids(client, "/fhir/Observation") == ["o1", "o3"]
    assert client.get("/fhir/Observation/o1").status_code == 200
    hidden = client.get("/fhir/Observation/o2")
    missing = client.get("/fhir/Observation/never")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace("o2", "X") == missing.text.replace("never", "X")
    assert client.get("/fhir/Patient/p1").status_code == 200
    assert client.get("/fhir/Patient/p2").status_code == 404
    # r without s on Patient: no search; no scope on Practitioner at all
    assert client.get("/fhir/Patient").status_code == 403
    assert client.get("/fhir/Practitioner/pr1").status_code == 403


def test_a_wildcard_patient_scope_reaches_what_the_compartment_refers_to(
    client: TestClient, acting: Acting
) -> None:
    _as(acting, "patient/*.rs")
    assert _ids(client, "/fhir/Observation") == ["o1", "o3"]
    assert _ids(client, "/fhir/Patient") == ["p1"]
    assert client.get("/fhir/Practitioner/pr1").status_code == 200
    assert client.get("/fhir/Practitioner/pr2").status_code == 404
    included = _ids(client, "/fhir/Observation?_include=Observation:performer")
    assert included == ["o1", "o3", "pr1"]


def test_writes_stay_inside_the_compartment(client: TestClient, acting: Acting) -> None:
    _as(acting, "patient/Observation.cruds")
    made = client.post(
        "/fhir/Observation", json=_obs("x", "p1", "laboratory"), headers={"Content-Type": FHIR_JSON}
    )
    assert made.status_code == 201, made.text
    other = client.post(
        "/fhir/Observation", json=_obs("y", "p2", "laboratory"), headers={"Content-Type": FHIR_JSON}
    )
    assert other.status_code == 403, other.text
    moved = _obs("o3", "p2", "vital-signs")
    assert client.put("/fhir/Observation/o3", json=moved,
                      headers={"Content-Type": FHIR_JSON}).status_code == 403
    # deleting a hidden resource answers as deleting a missing one, and changes nothing
    hidden = client.delete("/fhir/Observation/o2")
    missing = client.delete("/fhir/Observation/never")
    assert hidden.status_code == missing.status_code
    created = made.json()["id"]
    assert client.delete(f"/fhir/Observation/{created}").status_code in (200, 204)
    acting.as_(LOCAL)
    assert client.get("/fhir/Observation/o2").status_code == 200
    assert client.get(f"/fhir/Observation/{created}").status_code == 410


def test_granular_patient_scope_and_union_with_user_scopes(
    client: TestClient, acting: Acting
) -> None:
    _as(acting, f"patient/Observation.rs?category={LAB}")
    assert _ids(client, "/fhir/Observation") == ["o1"]
    assert client.get("/fhir/Observation/o3").status_code == 404
    _as(acting, "patient/Patient.rs user/Observation.rs")
    assert _ids(client, "/fhir/Observation") == ["o1", "o2", "o3"]
    assert _ids(client, "/fhir/Patient") == ["p1"]


def test_without_a_patient_context_patient_scopes_reach_nothing(
    client: TestClient, acting: Acting
) -> None:
    _as(acting, "patient/*.cruds", patient=None)
    assert client.get("/fhir/Observation").status_code == 403
    assert client.get("/fhir/Patient/p1").status_code == 403
    _as(acting, "patient/Observation.rs", patient="p2")
    assert _ids(client, "/fhir/Observation") == ["o2"]
