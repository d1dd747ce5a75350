"""Intake from any source (seed 003 VI.D.5) with care relationships on, as they are by default
with authentication on, through HTTP on both stores: a CBO's SMART client refers a member it
does not serve; the referral grants it its referral, its Task and what the default data-class
matrix gives a requester (demographics), never the member's other data, and never a
relationship for another organisation than the plan (decision 0027)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.ecm_scene import concept, example, ok
from tests.support import TestClient, fhir_client, outcome

FHIR_JSON = "application/fhir+json"
BASE = "http://calaim-fhir.org/fhir"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
POF = f"{BASE}/CodeSystem/ecm-population-of-focus"
PLAN = "Organization/intake-plan"
CBO = "Organization/intake-cbo"
NO_ROI = "Organization/intake-cbo-no-roi"
OTHER = "Organization/intake-other-cbo"
MEMBER = "Patient/intake-m1"
CBO_SCOPES = ("system/ServiceRequest.crus system/Task.crus system/Patient.rs "
              "system/Condition.rs")


def _put(local: TestClient, body: dict[str, Any]) -> None:
    ok(local.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body,
                 headers={"Content-Type": FHIR_JSON}), (200, 201))


@pytest.fixture(scope="module")
def scene(local: TestClient) -> None:
    """As the operator: the plan (its Coverage of the member), three community groups (no
    covered entities), the member with a Condition, and the member's release of information
    naming ``CBO`` only."""
    for id, code in (("intake-plan", "pay"), ("intake-cbo", "cg"), ("intake-cbo-no-roi", "cg"),
                     ("intake-other-cbo", "cg")):
        _put(local, {"resourceType": "Organization", "id": id, "name": id,
                     "type": [concept(ORG_TYPE, code)]})
    member = example("Patient-ecm-member-example")
    member.update(id="intake-m1", identifier=[{
        "system": "https://calaim-fhir.org/fhir/sid/medi-cal-cin",
        "type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MA"),
        "value": "97654321B"}])
    _put(local, member)
    _put(local, {"resourceType": "Coverage", "id": "intake-cov", "status": "active",
                 "beneficiary": {"reference": MEMBER}, "payor": [{"reference": PLAN}]})
    _put(local, {"resourceType": "Condition", "id": "intake-c1", "code": {"text": "asthma"},
                 "subject": {"reference": MEMBER}})
    consent = example("Consent-ecm-consent-example")
    consent.update(id="intake-roi", patient={"reference": MEMBER},
                   performer=[{"reference": MEMBER}], organization=[{"reference": PLAN}])
    consent["provision"].update(
        period={"start": "2024-01-01", "end": "2099-12-31"},
        actor=[{"role": concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "IRCP"), "reference": {"reference": CBO}}])
    _put(local, consent)


@pytest.fixture(scope="module")
def tokens(related: TestClient, database_url: str, tmp: Path, scene: None
           ) -> Iterator[dict[str, dict[str, str]]]:
    found: dict[str, dict[str, str]] = {}
    for org in (CBO, NO_ROI, OTHER):
        partner = Partner("ES384")
        partner.register(database_url, tmp, scope=CBO_SCOPES, organization=org)
        response = related.post(TOKEN_URL, data=token_form(partner.assertion(TOKEN_URL),
                                                            CBO_SCOPES))
        token = ok(response, 200)["access_token"]
        found[org] = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    yield found


def _referral(number: str, requester: str, **more: Any) -> dict[str, Any]:
    referral = example("ServiceRequest-ecm-referral-example")
    for element in ("id", "supportingInfo", "performer"):
        referral.pop(element)
    referral.update(identifier=[{"system": "https://calaim-fhir.org/fhir/sid/ecm-referral",
                                 "value": f"REF-INTAKE-{number}"}],
                    subject={"reference": MEMBER}, requester={"reference": requester},
                    authoredOn="2026-11-02T10:00:00-08:00",
                    reasonCode=[concept(POF, "justice-involved-adult")], **more)
    return referral


def _task(focus: str, requester: str, owner: str | None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-referral-task"]},
        "status": "requested", "intent": "order",
        "code": concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": focus}, "for": {"reference": MEMBER},
        "requester": {"reference": requester},
    }
    if owner is not None:
        task["owner"] = {"reference": owner}
    return task


def _transaction(number: str, requester: str, owner: str | None,
                 **more: Any) -> dict[str, Any]:
    url = f"urn:uuid:5b0c7d2e-0000-4000-8000-{int(number):012d}"
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": _referral(number, requester, **more),
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": _task(url, requester, owner),
         "request": {"method": "POST", "url": "Task"}}]}


def _stored(local: TestClient, type: str) -> set[str]:
    bundle = ok(local.get(f"/fhir/{type}?subject={MEMBER}&_count=100"))
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def _refused(response: Any, expression: str) -> None:
    body = outcome(response, 403)
    assert "does not serve" in body["issue"][0]["diagnostics"]
    assert body["issue"][0]["expression"] == [expression]


def test_a_cbo_refers_a_member_it_does_not_serve_and_sees_only_its_referral(
    related: TestClient, local: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    cbo = tokens[CBO]
    # before: nothing of the member
    assert related.get(f"/fhir/{MEMBER}", headers=cbo).status_code == 404
    answer = ok(related.post("/fhir", headers=cbo, json=_transaction("1", CBO, PLAN)), 200)
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    referral, task = (e["response"]["location"].split("/_history")[0] for e in answer["entry"])
    # its referral and Task, acknowledged (VI.D.7.a)
    assert ok(related.get(f"/fhir/{referral}", headers=cbo))["requester"] == {"reference": CBO}
    stored = ok(related.get(f"/fhir/{task}", headers=cbo))
    assert stored["businessStatus"]["coding"][0]["code"] == "received"
    assert stored["owner"] == {"reference": PLAN}
    # the requester kind's data classes: demographics, not the member's Conditions
    assert ok(related.get(f"/fhir/{MEMBER}", headers=cbo))["id"] == "intake-m1"
    assert related.get("/fhir/Condition/intake-c1", headers=cbo).status_code == 404
    conditions = ok(related.get(f"/fhir/Condition?subject={MEMBER}", headers=cbo))
    assert not conditions.get("entry")
    assert ok(related.get(f"/fhir/Condition?subject={MEMBER}&_summary=count",
                          headers=cbo))["total"] == 0
    # its own Task only, not the Condition, through the member's compartment
    everything = ok(related.get(f"/fhir/Task?patient={MEMBER}", headers=cbo))
    assert [e["resource"]["id"] for e in everything["entry"]] == [task.split("/")[1]]
    # the requester corrects its own referral (VI.D.7.b: the referrer edits the content)
    current = ok(related.get(f"/fhir/{referral}", headers=cbo))
    note = [{"text": "phone number corrected"}]
    ok(related.put(f"/fhir/{referral}", headers=cbo, json={**current, "note": note}))
    # the plan's data about the member stays the plan's
    assert related.get("/fhir/Coverage/intake-cov", headers=cbo).status_code in (403, 404)


def test_the_referral_cannot_name_another_organisation_to_widen_access(
    related: TestClient, local: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    cbo, other = tokens[CBO], tokens[OTHER]
    tasks, requests = _stored(local, "Task"), _stored(local, "ServiceRequest")
    # the Task's owner another CBO, not the plan
    _refused(related.post("/fhir", headers=cbo, json=_transaction("2", CBO, OTHER)),
             "Bundle.entry[1].resource.owner")
    # the referral's performer another CBO
    _refused(related.post("/fhir", headers=cbo, json=_transaction(
        "3", CBO, PLAN, performer=[{"reference": OTHER}])),
        "Bundle.entry[0].resource.performer")
    # a referral requested in another organisation's name
    _refused(related.post("/fhir", headers=cbo, json=_transaction("4", OTHER, PLAN)),
             "Bundle.entry[0].resource.requester")
    assert _stored(local, "Task") == tasks
    assert _stored(local, "ServiceRequest") == requests
    # a referral it made, later changed to give another CBO the member: refused, since a
    # requester does not serve the member
    answer = ok(related.post("/fhir", headers=cbo, json=_transaction("5", CBO, None)), 200)
    task = answer["entry"][1]["response"]["location"].split("/_history")[0]
    current = ok(related.get(f"/fhir/{task}", headers=cbo))
    response = related.put(f"/fhir/{task}", headers=cbo,
                           json={**current, "owner": {"reference": OTHER}})
    _refused(response, "Task.owner")
    assert "owner" not in ok(local.get(f"/fhir/{task}"))
    assert related.get(f"/fhir/{MEMBER}", headers=other).status_code == 404


def test_a_referral_for_a_member_nobody_has_answers_like_a_refusal(
    related: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    bundle = _transaction("6", CBO, PLAN)
    for entry in bundle["entry"]:
        field = "subject" if entry["resource"]["resourceType"] == "ServiceRequest" else "for"
        entry["resource"][field] = {"reference": "Patient/intake-nobody"}
    # refused as any referral by an organisation that does not serve the member
    _refused(related.post("/fhir", headers=tokens[CBO], json=bundle),
             "Bundle.entry[0].resource.requester")
    assert related.get("/fhir/Patient/intake-nobody",
                       headers=tokens[CBO]).status_code == 404


def test_a_cbo_without_a_release_of_information_sends_but_cannot_read_back(
    related: TestClient, local: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    """No ROI on file names it, and a community group is no covered entity: its referral is
    taken (writing its own referral discloses nothing), reading it back is not."""
    no_roi = tokens[NO_ROI]
    answer = ok(related.post("/fhir", headers=no_roi, json=_transaction("7", NO_ROI, PLAN)),
                200)
    task = answer["entry"][1]["response"]["location"].split("/_history")[0]
    assert ok(local.get(f"/fhir/{task}"))["requester"] == {"reference": NO_ROI}
    assert related.get(f"/fhir/{task}", headers=no_roi).status_code == 404
    assert related.get(f"/fhir/{MEMBER}", headers=no_roi).status_code == 404


def test_relationships_off_explicitly_leave_the_scopes_alone(
    smart: TestClient, local: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    """``CALAIM_FHIR_ACCESS_RELATIONSHIPS=false`` (the ``smart`` app): a token's scopes alone
    decide, so the same CBO token reads the member's Condition."""
    assert ok(smart.get("/fhir/Condition/intake-c1", headers=tokens[OTHER]))["id"] == "intake-c1"



def test_a_plan_may_take_the_referral_write_class_from_requesters(
    database_url: str, local: TestClient, tmp: Path, scene: None,
    tokens: dict[str, dict[str, str]],
) -> None:
    """The write class ``referral`` is the plan's configuration: without it a requester
    cannot write its referral, so the intake is refused and nothing is kept."""
    matrix = tmp / "no-referral-writes.json"
    matrix.write_text(json.dumps({"writes": {"referral-requester": []}}))
    tasks, requests = _stored(local, "Task"), _stored(local, "ServiceRequest")
    with fhir_client(database_url, auth="smart", access_matrix=str(matrix)) as app:
        response = app.post("/fhir", headers=tokens[CBO], json=_transaction("9", CBO, PLAN))
    outcome(response, 403)
    assert _stored(local, "Task") == tasks
    assert _stored(local, "ServiceRequest") == requests
