"""The operations table as rules of their own (``server/auth/operation_rules.py``), over HTTP
on both stores, with the SMART scope policy deciding: each expectation below is written by
hand from the table in ``docs/security.md``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.auth.principal import Principal
from server.auth.scopes import ScopeSet
from tests.auth.scoped import scoped_app
from tests.support import FHIR_JSON, Acting, TestClient

AS_OF = "2026-01-15"
OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}


@pytest.fixture(scope="module")
def acting() -> Acting:
    return Acting()


@pytest.fixture(scope="module")
def client(database_url: str, acting: Acting) -> Iterator[TestClient]:
    scene = (
        {"resourceType": "Patient", "id": "p1", "birthDate": "1990-01-01"},
        {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
         "member": [{"entity": {"reference": "Patient/p1"}}]},
    )
    with scoped_app(database_url, acting, scene) as client:
        yield client


def _as(acting: Acting, scope: str) -> None:
    acting.as_(Principal("app", organization="Organization/o1", scopes=ScopeSet.of(scope)))


def _eligibility(client: TestClient) -> int:
    return client.get("/fhir/Patient/p1/$ecm-eligibility", params={"asOf": AS_OF}).status_code


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ("system/Patient.r", 200),  # its own entry: r on Patient, nothing on what it reads
        ("system/Patient.rs", 200),
        ("system/Patient.s", 403),
        ("system/Observation.rs system/Condition.rs system/Coverage.rs", 403),
        ("system/*.rs", 200),
    ],
)
def test_member_eligibility_needs_read_on_patient_alone(
    client: TestClient, acting: Acting, scope: str, status: int
) -> None:
    _as(acting, scope)
    assert _eligibility(client) == status


def test_a_refusal_names_what_is_missing(client: TestClient, acting: Acting) -> None:
    _as(acting, "system/Observation.rs")
    response = client.get("/fhir/Patient/p1/$ecm-eligibility", params={"asOf": AS_OF})
    assert response.status_code == 403
    text = response.json()["issue"][0]["diagnostics"]
    assert "read" in text and "Patient" in text


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ("system/Observation.c", 200),
        ("system/Observation.r", 200),
        ("system/Patient.cruds", 403),
    ],
)
def test_validate_needs_nothing_beyond_the_type(
    client: TestClient, acting: Acting, scope: str, status: int
) -> None:
    _as(acting, scope)
    response = client.post(
        "/fhir/Observation/$validate", json=OBSERVATION, headers={"Content-Type": FHIR_JSON}
    )
    assert response.status_code == status, response.text
    if status == 403:
        assert "The operation needs" in response.text


@pytest.mark.parametrize(
    "scope", ["system/Patient.r system/List.c", "system/Patient.s", "system/Group.rs"]
)
def test_population_eligibility_needs_search_on_patient_and_create_on_list(
    client: TestClient, acting: Acting, scope: str
) -> None:
    _as(acting, scope)
    response = client.post(
        "/fhir/Group/g1/$ecm-eligibility",
        json={"resourceType": "Parameters",
              "parameter": [{"name": "asOf", "valueDate": AS_OF}]},
        headers={"Content-Type": FHIR_JSON},
    )
    assert response.status_code == 403, response.text
    assert "The operation needs" in response.text  # its own entry refused it, not a read


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ("system/Patient.r", 403),
        ("system/Patient.r system/Task.cu system/CareTeam.cu", 403),  # no EpisodeOfCare
        ("system/Patient.r system/Task.c system/CareTeam.cu system/EpisodeOfCare.cu", 403),
        ("system/Task.cu system/CareTeam.cu system/EpisodeOfCare.cu", 403),  # no Patient
    ],
)
def test_assignment_needs_read_on_patient_and_create_update_on_its_records(
    client: TestClient, acting: Acting, scope: str, status: int
) -> None:
    _as(acting, scope)
    response = client.post(
        "/fhir/Patient/p1/$ecm-assign",
        json={"resourceType": "Parameters", "parameter": []},
        headers={"Content-Type": FHIR_JSON},
    )
    assert response.status_code == status
    assert "needs" in response.json()["issue"][0]["diagnostics"]


def test_assignment_entry_admits_the_plans_scopes(client: TestClient, acting: Acting) -> None:
    # the entry, plus reading what the operation reads through the door
    _as(acting, "system/*.rs system/Task.cu system/CareTeam.cu system/EpisodeOfCare.cu")
    response = client.post(
        "/fhir/Patient/p1/$ecm-assign",
        json={"resourceType": "Parameters", "parameter": []},
        headers={"Content-Type": FHIR_JSON},
    )
    # past the table: the operation itself answers (no authorized referral for p1 here)
    assert response.status_code != 403, response.text
