"""The ECM path end to end, through the public API with partners' SMART backend-services
tokens, on both stores: a CBO's app posts a referral (acknowledged), the plan screens it
(VI.D.6), authorizes it (a TAR and the planned enrollment, VI.D.8), assigns the provider with
``$ecm-assign`` (VI.E), the provider's app finds its Task and accepts it (told, VI.E.4), the plan
starts the enrollment, and the provider ends it (VI.F): the member gets a Notice of Action.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.conftest import TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.ecm_scene import concept as _concept
from tests.ecm_scene import example as _example
from tests.ecm_scene import ok as _ok
from tests.support import TestClient, fhir_client

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://calaim-fhir.org/fhir"
FHIR_JSON = "application/fhir+json"
PLAN = "Organization/golden-poppy-health-plan"
CBO = "Organization/casa-segura-housing"
PROVIDER = "Organization/north-coast-ecm"
POF = f"{BASE}/CodeSystem/ecm-population-of-focus"
STATUS = f"{BASE}/CodeSystem/dhcs-referral-status"
WORKFLOW = f"{BASE}/CodeSystem/ecm-referral-workflow"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


def _setup(local: TestClient) -> str:
    """As the operator: the organisations, the provider's ECM service and Lead Care Manager, and
    an eligible member (examples/eligibility baseline-coverage-ends-on-asof: justice-involved
    adult on 2024-10-15)."""
    service = _example("HealthcareService-ecm-provider-service-example")
    service.pop("identifier")
    service["id"] = "north-coast-ecm-service"
    service["providedBy"] = {"reference": PROVIDER}
    service["extension"] = [
        e for e in service["extension"] if not e["url"].endswith("population-of-focus")
    ] + [{"url": f"{BASE}/StructureDefinition/population-of-focus",
          "valueCodeableConcept": _concept(POF, "justice-involved-adult")}]
    resources = [
        {"resourceType": "Organization", "id": "golden-poppy-health-plan", "name": "Golden Poppy",
         "type": [_concept(ORG_TYPE, "pay")]},
        {"resourceType": "Organization", "id": "casa-segura-housing", "name": "Casa Segura",
         "type": [_concept(ORG_TYPE, "cg")]},
        {"resourceType": "Organization", "id": "north-coast-ecm", "name": "North Coast ECM",
         "type": [_concept(ORG_TYPE, "prov")],
         "telecom": [{"system": "phone", "value": "+1-707-555-0100"}]},
        {"resourceType": "PractitionerRole", "id": "north-coast-lcm", "active": True,
         "organization": {"reference": PROVIDER},
         "code": [_concept(f"{BASE}/CodeSystem/ecm-care-team-role", "lead-care-manager")]},
        service,
    ]
    for r in resources:
        _ok(local.put(f"/fhir/{r['resourceType']}/{r['id']}", json=r,
                      headers={"Content-Type": FHIR_JSON}))
    bundle = json.loads((ROOT / "examples" / "eligibility" /
                         "baseline-coverage-ends-on-asof.json").read_text())
    member = bundle["entry"][0]["resource"]
    member["identifier"].append({
        "system": "https://calaim-fhir.org/fhir/sid/medi-cal-cin",
        "type": _concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MA"),
        "value": "91234567A",
    })
    member["address"] = [{"city": "Eureka", "state": "CA", "postalCode": "95501"}]
    answer = _ok(local.post("/fhir", json=bundle, headers={"Content-Type": FHIR_JSON}), 200)
    member = "/".join(answer["entry"][0]["response"]["location"].split("/")[:2])
    # the member's release of information (DHCS ASCMI) names the CBO, a community group and
    # no covered entity: without it the CBO could send its referral but not read it back
    consent = _example("Consent-ecm-consent-example")
    consent.pop("id")
    consent.update(patient={"reference": member}, performer=[{"reference": member}],
                   organization=[{"reference": PLAN}])
    consent["provision"].update(
        period={"start": "2024-10-01", "end": "2099-12-31"}, actor=[
        {"role": _concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"),
         "reference": {"reference": CBO}}])
    _ok(local.post("/fhir/Consent", json=consent, headers={"Content-Type": FHIR_JSON}), 201)
    # the member joins the plan the day after the old coverage ends: the plan's relationship
    coverage = {"resourceType": "Coverage", "status": "active",
                "beneficiary": {"reference": member}, "payor": [{"reference": PLAN}],
                "period": {"start": "2024-10-16"}}
    _ok(local.post("/fhir/Coverage", json=coverage, headers={"Content-Type": FHIR_JSON}), 201)
    return member


def _bearer(smart: TestClient, local_db: str, tmp: Path, scope: str, org: str
            ) -> dict[str, str]:
    partner = Partner("ES384")
    partner.register(local_db, tmp, scope=scope, organization=org)
    response = smart.post(TOKEN_URL, data=token_form(partner.assertion(TOKEN_URL), scope))
    token = _ok(response, 200)["access_token"]
    return {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}


@pytest.fixture(scope="module")
def related(database_url: str, local: TestClient, tmp: Path) -> Iterator[TestClient]:
    """The app as deployed by default with authentication on (care relationships narrowing
    every partner), the plan's Organization named in its access matrix (the plan role)."""
    matrix = tmp / "full-path-matrix.json"
    matrix.write_text(json.dumps({"plans": [PLAN]}))
    with fhir_client(database_url, auth="smart", access_matrix=str(matrix)) as client:
        yield client


def test_referral_to_assignment_to_notice_of_action(
    related: TestClient, local: TestClient, database_url: str, tmp: Path
) -> None:
    member = _setup(local)
    cbo = _bearer(related, database_url, tmp,
                  "system/ServiceRequest.crs system/Task.crus system/Patient.rs", CBO)
    plan = _bearer(related, database_url, tmp, "system/*.cruds", PLAN)
    provider = _bearer(
        related, database_url, tmp,
        "system/Task.rus system/ServiceRequest.rs system/Patient.rs system/EpisodeOfCare.rus "
        "system/Communication.rus system/CareTeam.rus", PROVIDER)

    # 1. the CBO's app refers the member: acknowledged (VI.D.7.a)
    referral = _example("ServiceRequest-ecm-referral-example")
    for element in ("id", "supportingInfo", "performer"):
        referral.pop(element)
    referral["identifier"] = [{"system": "https://calaim-fhir.org/fhir/sid/ecm-referral",
                               "value": "REF-FULL-PATH"}]
    referral.update(subject={"reference": member}, requester={"reference": CBO},
                    authoredOn="2024-10-15T10:00:00-07:00",
                    reasonCode=[_concept(POF, "justice-involved-adult")])
    url = "urn:uuid:7a1e0000-0000-4000-8000-000000000001"
    task = {
        "resourceType": "Task",
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-referral-task"]},
        "status": "requested", "intent": "order",
        "code": _concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": url}, "for": {"reference": member},
        "requester": {"reference": CBO}, "owner": {"reference": PLAN},
    }
    answer = _ok(related.post("/fhir", headers=cbo, json={
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": url, "resource": referral,
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}}]}), 200)
    referral_ref = answer["entry"][0]["response"]["location"].split("/_history")[0]
    task_ref = answer["entry"][1]["response"]["location"].split("/_history")[0]
    stored = _ok(related.get(f"/fhir/{task_ref}", headers=cbo))
    assert stored["businessStatus"]["coding"][0]["code"] == "received"

    # 2. the plan screens it (VI.D.6): met
    screened = _ok(related.post(f"/fhir/{task_ref}/$ecm-screen", headers=plan,
                              json={"resourceType": "Parameters"}), 200)
    assert {"name": "screen", "valueCode": "met"} in screened["parameter"]

    # 3. the plan authorizes it (VI.D.8): a TAR and the planned enrollment, then accepts
    tar = {"resourceType": "ClaimResponse", "status": "active",
           "type": _concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
           "use": "preauthorization", "patient": {"reference": member},
           "created": "2026-12-01T10:00:00-08:00", "insurer": {"reference": PLAN},
           "outcome": "complete",
           "preAuthPeriod": {"start": "2026-12-01", "end": "2027-05-31"}}
    tar_ref = _ok(related.post("/fhir/ClaimResponse", headers=plan, json=tar), 201)["id"]
    enrollment = {
        "resourceType": "EpisodeOfCare",
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-enrollment"]},
        "extension": [
            {"url": f"{BASE}/StructureDefinition/population-of-focus",
             "valueCodeableConcept": _concept(POF, "justice-involved-adult")},
            {"url": f"{BASE}/StructureDefinition/authorization-period",
             "valuePeriod": {"start": "2026-12-01", "end": "2027-05-31"}},
            {"url": f"{BASE}/StructureDefinition/ecm-tar",
             "valueReference": {"reference": f"ClaimResponse/{tar_ref}"}},
        ],
        "status": "planned",
        "type": [_concept(f"{BASE}/CodeSystem/calaim-program", "ecm")],
        "patient": {"reference": member},
        "period": {"start": "2026-12-01"},
        "referralRequest": [{"reference": referral_ref}],
    }
    episode_id = _ok(related.post("/fhir/EpisodeOfCare", headers=plan, json=enrollment), 201)["id"]
    stored = _ok(related.get(f"/fhir/{task_ref}", headers=plan))
    _ok(related.put(f"/fhir/{task_ref}", headers=plan, json={
        **stored, "status": "accepted", "businessStatus": _concept(STATUS, "authorized")}))

    # 4. the plan assigns the provider (VI.E): the only one experienced and with capacity
    assigned = _ok(related.post(f"/fhir/{member}/$ecm-assign", headers=plan, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "mode", "valueCode": "commit"},
            {"name": "referral", "valueReference": {"reference": referral_ref}}]}), 200)
    values = {p["name"]: p.get("valueReference", p.get("valueDate")) for p in
              assigned["parameter"] if p["name"] in ("provider", "due", "leadCareManager")}
    assert values["provider"] == {"reference": PROVIDER}
    assert values["leadCareManager"] == {"reference": "PractitionerRole/north-coast-lcm"}
    # VI.E.4: ten business days of the TAR (Tuesday 1 December 2026), federal calendar
    assert values["due"] == "2026-12-15"

    # 5. the provider's app finds its Task, due, and accepts it: the provider was told
    mine = _ok(related.get(f"/fhir/Task?owner={PROVIDER}&status=requested&due=le2026-12-15",
                         headers=provider))
    assert len(mine["entry"]) == 1
    provider_task = mine["entry"][0]["resource"]
    assert provider_task["partOf"] == [{"reference": task_ref}]
    _ok(related.put(f"/fhir/Task/{provider_task['id']}", headers=provider,
                  json={**provider_task, "status": "accepted"}))
    overdue = _ok(related.get(f"/fhir/Task?owner={PROVIDER}&status=requested", headers=provider))
    assert not overdue.get("entry")

    # 6. the plan starts the enrollment; the provider later ends it (VI.F.1.b)
    episode = _ok(related.get(f"/fhir/EpisodeOfCare/{episode_id}", headers=plan))
    assert episode["managingOrganization"] == {"reference": PROVIDER}
    episode = _ok(related.put(f"/fhir/EpisodeOfCare/{episode_id}", headers=plan,
                              json={**episode, "status": "active"}))
    # the provider starts working with the member: its care team (proposed by the
    # assignment) becomes active, a relationship of its own beside the enrollment
    team = _ok(related.get(f"/fhir/{episode['team'][0]['reference']}", headers=provider))
    _ok(related.put(f"/fhir/CareTeam/{team['id']}", headers=provider,
                    json={**team, "status": "active"}))
    finished = {
        **episode, "status": "finished",
        "period": {**episode["period"], "end": "2027-01-15"},
        "extension": [*episode["extension"], {
            "url": f"{BASE}/StructureDefinition/discontinuation-reason",
            "valueCodeableConcept": _concept(f"{BASE}/CodeSystem/ecm-discontinuation-reason",
                                             "member-opted-out")}],
    }
    _ok(related.put(f"/fhir/EpisodeOfCare/{episode_id}", headers=provider, json=finished))

    # 7. the Notice of Action (VI.F.2.b) and the capacity released
    notices = _ok(related.get(f"/fhir/Communication?recipient={member}&_count=20", headers=plan))
    noa = [e["resource"] for e in notices["entry"]
           if e["resource"]["reasonCode"][0]["coding"][0]["code"] == "ecm-discontinuation"]
    assert len(noa) == 1
    document = next(p["contentReference"]["reference"] for p in noa[0]["payload"]
                    if "contentReference" in p)
    doc = _ok(related.get(f"/fhir/{document}", headers=plan))
    assert "appeal" in base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    orders = _ok(related.get(
        "/fhir/ServiceRequest?performer=HealthcareService/north-coast-ecm-service"
        "&status=active&_summary=count", headers=plan))
    assert orders["total"] == 0
