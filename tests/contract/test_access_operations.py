"""Access policies on operations: ``$ecm-eligibility`` judges the whole record (system reads)
but tells a restricted caller only what its output policy allows; asynchronous jobs belong to
the whole principal, and their stored results are checked through the door when fetched.

The member is ``Patient/p1`` (the callers act for it); every resource of its record carries
the label but one ED Encounter (``e5``), so the label policy hides ``e5`` and the compartment
policy hides nothing of the record (all of it is p1's compartment).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from server.auth.interactions import Interaction
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing
from server.auth.principal import LOCAL, Principal
from server.operations.call import Call
from server.search.parse import parse_criteria
from server.search.query import SearchQuery
from tests.access_scene import CALLER, LABEL, POLICIES, policy_apps
from tests.support import (
    FHIR_JSON,
    Acting,
    TestClient,
    defined_operation,
    extra_operations,
    fhir_client,
    outcome,
    put,
)

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SOPT = "urn:oid:2.16.840.1.113883.3.221.5"
CRITERION = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-criterion"
ATTESTATION = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-attestation"
AS_OF = "2024-08-31"
SECURITY = {"security": [LABEL]}


def _record() -> list[dict[str, Any]]:
    subject = {"reference": "Patient/p1"}
    resources: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "plan", "meta": SECURITY, "name": "Plan"},
        {"resourceType": "Patient", "id": "p1", "meta": SECURITY, "birthDate": "1980-05-05"},
        {
            "resourceType": "Coverage",
            "id": "cov",
            "meta": SECURITY,
            "status": "active",
            "beneficiary": subject,
            "type": {"coding": [{"system": SOPT, "code": "21"}]},
            "payor": [{"reference": "Organization/plan"}],
            "period": {"start": "2020-01-01"},
        },
        {
            "resourceType": "Observation",
            "id": "att",
            "meta": {**SECURITY, "profile": [ATTESTATION]},
            "status": "final",
            "subject": subject,
            "code": {"coding": [{"system": CRITERION, "code": "avoidable-utilization"}]},
            "effectiveDateTime": "2024-08-01",
            "performer": [{"reference": "Organization/plan"}],
            "valueBoolean": True,
        },
    ]
    for n in range(1, 6):
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": f"e{n}",
            "status": "finished",
            "subject": subject,
            "class": {"system": ACT, "code": "EMER"},
            "period": {"start": f"2024-0{2 + n}-10"},
        }
        if n != 5:
            encounter["meta"] = SECURITY
        resources.append(encounter)
    return resources


ACTING = Acting()


@pytest.fixture(scope="module")
def _apps(database_url: str) -> Iterator[dict[str, TestClient]]:
    with policy_apps(database_url, principals=ACTING) as apps:
        yield apps


@pytest.fixture
def apps(_apps: dict[str, TestClient], client: TestClient) -> Iterator[dict[str, TestClient]]:
    """The apps on a store holding p1's record (``client`` empties it first)."""
    for resource in _record():
        response = put(_apps["operator"], resource)
        assert response.status_code == 201, response.text
    ACTING.as_(CALLER)
    yield _apps
    ACTING.as_(LOCAL)


@pytest.fixture(params=["label", "compartment"])
def policy(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _walk(parts: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield part
        yield from _walk(part.get("part", []))


def _evidence(body: dict[str, Any]) -> set[str]:
    return {
        p["valueReference"]["reference"]
        for p in _walk(body.get("parameter", []))
        if p["name"] == "evidence"
    }


def _eligibility(client: TestClient) -> dict[str, Any]:
    response = client.get("/fhir/Patient/p1/$ecm-eligibility", params={"asOf": AS_OF})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_eligibility_judges_the_whole_record_and_omits_hidden_evidence(
    apps: dict[str, TestClient], policy: str
) -> None:
    full = _eligibility(apps["operator"])
    told = _eligibility(apps[policy])
    # the determination rests on all five visits, whoever asks
    for name in ("eligible", "determination"):
        assert [p for p in told["parameter"] if p["name"] == name] == [
            p for p in full["parameter"] if p["name"] == name
        ]
    assert "Encounter/e5" in _evidence(full)
    expected = {
        "label": _evidence(full) - {"Encounter/e5"},
        "compartment": _evidence(full),
    }[policy]
    assert _evidence(told) == expected
    if policy == "label":
        assert "e5" not in str(told)
        # a finding resting on e5 keeps its result and clause, not its explanation
        resting = [
            p["valueString"]
            for finding in _walk(full["parameter"])
            if "Encounter/e5" in _evidence({"parameter": finding.get("part", [])})
            for p in finding.get("part", [])
            if p["name"] == "explanation"
        ]
        assert resting
        told_texts = [p.get("valueString") for p in _walk(told["parameter"])]
        assert not any(text in told_texts for text in resting)
    assert not any(p["name"] == "issues" for p in told["parameter"])


def test_eligibility_of_a_hidden_patient_answers_as_of_a_missing_one(
    apps: dict[str, TestClient], policy: str
) -> None:
    ACTING.as_(Principal("test-app", user="Patient/p3"))  # acts for another patient
    client = apps[policy]
    if policy == "compartment":
        hidden = client.get("/fhir/Patient/p1/$ecm-eligibility", params={"asOf": AS_OF})
        missing = client.get("/fhir/Patient/never/$ecm-eligibility", params={"asOf": AS_OF})
        assert hidden.status_code == missing.status_code == 404
        assert hidden.text.replace("p1", "X") == missing.text.replace("never", "X")
    else:  # the label policy does not depend on whom the caller acts for
        assert (
            client.get("/fhir/Patient/p1/$ecm-eligibility", params={"asOf": AS_OF}).status_code
            == 200
        )


# -- asynchronous jobs ----------------------------------------------------------------------


def _encounters(call: Call) -> dict[str, Any]:
    """A long-running operation that lists the Encounters its caller may read."""
    criteria = parse_criteria("Encounter", [], call.services.search.context)
    page = call.reader.search(SearchQuery(criteria, 100))
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "encounter", "valueReference": {"reference": f"Encounter/{v.id}"}}
            for v in page.items
        ],
    }


LIST_ENCOUNTERS = defined_operation(
    "list-encounters", _encounters, system=True, affects_state=True, long_running=True
)
ASYNC = {"Content-Type": FHIR_JSON, "Prefer": "respond-async"}
NO_INPUT = {"resourceType": "Parameters"}


def _result(client: TestClient, url: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        response = client.get(url)
        if response.status_code != 202:
            return response
        assert time.monotonic() < deadline, "still running"
        time.sleep(0.02)


def _listed(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    result = response.json()["entry"][0]["resource"]
    return [p["valueReference"]["reference"] for p in result.get("parameter", [])]


def test_an_async_result_is_checked_through_the_door_when_fetched(
    apps: dict[str, TestClient], policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = apps[policy]
    with extra_operations(monkeypatch, LIST_ENCOUNTERS):
        submitted = client.post("/fhir/$list-encounters", json=NO_INPUT, headers=ASYNC)
        assert submitted.status_code == 202, submitted.text
        url = submitted.headers["content-location"]
        first = _listed(_result(client, url))
        expected = {
            "label": [f"Encounter/e{n}" for n in range(1, 5)],
            "compartment": [f"Encounter/e{n}" for n in range(1, 6)],
        }[policy]
        assert sorted(first) == expected
        # e1 leaves the caller's view (its label removed, its subject changed)
        e1 = apps["operator"].get("/fhir/Encounter/e1").json()
        del e1["meta"]
        e1["subject"] = {"reference": "Patient/p3"}
        assert put(apps["operator"], e1).status_code == 200
        assert sorted(_listed(client.get(url))) == expected[1:]


def test_an_async_job_belongs_to_the_whole_principal(
    apps: dict[str, TestClient], policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = apps[policy]
    with extra_operations(monkeypatch, LIST_ENCOUNTERS):
        submitted = client.post("/fhir/$list-encounters", json=NO_INPUT, headers=ASYNC)
        url = submitted.headers["content-location"]
        assert _result(client, url).status_code == 200
        # the same client acting for someone else: not its job
        ACTING.as_(Principal(CALLER.id, user="Patient/p3"))
        assert client.get(url).status_code == 404
        assert client.delete(url).status_code == 404
        ACTING.as_(CALLER)
        assert client.get(url).status_code == 200


# -- population mode ------------------------------------------------------------------------

GROUP = {
    "resourceType": "Group",
    "id": "g1",
    "meta": SECURITY,
    "type": "person",
    "actual": True,
    "member": [
        {"entity": {"reference": "Patient/p1"}},
        {"entity": {"reference": "Patient/p2"}},
    ],
}
# p2: in the Group, hidden from both policies (unlabelled, not p1's compartment)
P2 = {"resourceType": "Patient", "id": "p2", "birthDate": "1970-01-01"}


def _part(body: dict[str, Any], name: str) -> Any:
    return next((p for p in _walk(body.get("parameter", [])) if p["name"] == name), None)


def _lists(operator: TestClient) -> list[dict[str, Any]]:
    bundle = operator.get("/fhir/List?_sort=-_lastUpdated").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_a_population_run_covers_the_callers_members_judged_on_the_whole_record(
    apps: dict[str, TestClient], policy: str
) -> None:
    """Population mode for a restricted caller: only the members it may see, each judged on
    the whole record (as member mode), its List written by the server on its behalf; the
    answer names the List only when the caller may read it (neither test policy lets it:
    the List is no labelled resource and in no patient's compartment)."""
    operator = apps["operator"]
    for resource in (GROUP, P2):
        assert put(operator, resource).status_code == 201
    full = _eligibility(operator)
    determination = _part(full, "determination")["valueCode"]
    response = apps[policy].post("/fhir/Group/g1/$ecm-eligibility", json=_as_of())
    assert response.status_code == 200, response.text
    told = response.json()
    assert _part(told, "evaluated")["valueInteger"] == 1  # p1 only: p2 is hidden
    assert _part(told, "list") is None
    assert _part(told, "issues") is None
    assert "Patient/p2" not in response.text
    written = _lists(operator)[0]
    assert [e["item"]["reference"] for e in written.get("entry", [])] == (
        ["Patient/p1"] if determination != "not-eligible" else []
    )
    for entry in written.get("entry", []):
        parts = entry["extension"][0]["extension"]
        assert {"url": "determination", "valueCode": determination} in parts
    # the operator's own run covers both members and names its List
    mine = operator.post("/fhir/Group/g1/$ecm-eligibility", json=_as_of()).json()
    assert _part(mine, "evaluated")["valueInteger"] == 2
    assert _part(mine, "list") is not None


def _as_of() -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "asOf", "valueDate": AS_OF}],
    }


class _NoLists:
    """Refuses creating a List, and nothing else."""

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        refused = interaction == Interaction.CREATE and type == "List"
        return NOTHING if refused else EVERYTHING

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return not (interaction == Interaction.CREATE and facts.type == "List")


def test_a_population_run_needs_the_callers_permission_to_create_its_list(
    apps: dict[str, TestClient], database_url: str
) -> None:
    """The server writes the List on the caller's behalf only if the caller may create a
    List at all: otherwise the run is refused (403) and nothing is stored."""
    operator = apps["operator"]
    for resource in (GROUP, P2):
        assert put(operator, resource).status_code == 201
    policies = [POLICIES["label"], _NoLists()]
    with fhir_client(
        database_url, principals=ACTING, policies=policies, access_safety_net="fail"
    ) as client:
        outcome(client.post("/fhir/Group/g1/$ecm-eligibility", json=_as_of()), 403)
    assert _lists(operator) == []
