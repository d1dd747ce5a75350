"""Care relationships narrow what an organisation sees (``server/auth/relationships.py``),
through the access-grant rows kept with each relationship resource's write.

The scene, and what each organisation sees of it, written by hand from the default matrix
(``docs/security.md``, "Relationships and data classes"):

* ``plan`` pays m1's and m2's Coverages: both members' every class;
* ``ecm`` manages m1's active EpisodeOfCare: m1's demographics, coverage, consent,
  care-management and clinical data;
* ``cbo`` (a community group: not a covered entity) holds m1's release of information
  (Consent con1 permits it) and owns the open referral Task t1 (focus: ServiceRequest sr1,
  whose supportingInfo is Observation o1): m1's Patient and Consent, t1, sr1 and o1 — not
  m1's Condition, Encounter, Coverage, EpisodeOfCare, nor the other referral t2;
* ``other`` pays m3's Coverage and owns t2 (for m1): m3's data, and of m1 the Patient, the
  Consent and t2.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from server.auth.principal import LOCAL, Principal
from server.auth.relationships import Matrix, MatrixError, RelationshipPolicy
from server.fhir.instant import format_instant, now_us
from server.store.sql.schema import MIGRATIONS
from tests.support import Acting, TestClient, all_pages, clear_store, fhir_client, outcome, put

PLATFORM = "Organization/platform"
IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}
RESEARCH = ("HRESCH",)


def _org(id: str, type: str) -> dict[str, Any]:
    coding = {"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": type}
    return {"resourceType": "Organization", "id": id, "name": id, "type": [{"coding": [coding]}]}


def _ref(text: str) -> dict[str, str]:
    return {"reference": text}


def _coverage(id: str, member: str, payor: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": id,
        "status": status,
        "beneficiary": _ref(f"Patient/{member}"),
        "payor": [_ref(f"Organization/{payor}")],
    }


def _episode(id: str, member: str, org: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "EpisodeOfCare",
        "id": id,
        "status": status,
        "patient": _ref(f"Patient/{member}"),
        "managingOrganization": _ref(f"Organization/{org}"),
    }


def _task(id: str, member: str, owner: str, status: str = "requested", **more: Any) -> dict:
    return {
        "resourceType": "Task",
        "id": id,
        "status": status,
        "intent": "order",
        "for": _ref(f"Patient/{member}"),
        "owner": _ref(f"Organization/{owner}"),
        **more,
    }


def _condition(id: str, member: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "subject": _ref(f"Patient/{member}"),
        "code": {"text": id},
    }


SCENE: list[dict[str, Any]] = [
    _org("plan", "pay"),
    _org("ecm", "prov"),
    _org("cbo", "cg"),
    _org("other", "pay"),
    _org("platform", "bus"),
    _org("recorder", "bus"),
    *({"resourceType": "Patient", "id": m, "name": [{"family": m}]} for m in ("m1", "m2", "m3")),
    _coverage("cov1", "m1", "plan"),
    _coverage("cov2", "m2", "plan"),
    _coverage("cov3", "m3", "other"),
    _episode("eoc1", "m1", "ecm"),
    _condition("c1", "m1"),
    _condition("c2", "m2"),
    _condition("c3", "m3"),
    {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref("Patient/m1"),
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "housing"},
        "subject": _ref("Patient/m1"),
    },
    {
        "resourceType": "Consent",
        "id": "con1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"code": "59284-0", "system": "http://loinc.org"}]}],
        "patient": _ref("Patient/m1"),
        # the member's release of information to the community organisation (ASCMI)
        "provision": {
            "type": "permit",
            "actor": [{"role": IRCP, "reference": _ref("Organization/cbo")}],
        },
    },
    {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "active",
        "intent": "order",
        "subject": _ref("Patient/m1"),
        "supportingInfo": [_ref("Observation/o1")],
    },
    _task("t1", "m1", "cbo", focus=_ref("ServiceRequest/sr1")),
    _task("t2", "m1", "other"),
]

EVERY = {f"{r['resourceType']}/{r['id']}" for r in SCENE}
ORGS = {f"Organization/{o}" for o in ("plan", "ecm", "cbo", "other", "platform", "recorder")}
M1 = {
    "Patient/m1",
    "Coverage/cov1",
    "EpisodeOfCare/eoc1",
    "Condition/c1",
    "Encounter/e1",
    "Observation/o1",
    "Consent/con1",
    "ServiceRequest/sr1",
    "Task/t1",
    "Task/t2",
}
SEES: dict[str, set[str]] = {
    "plan": ORGS | M1 | {"Patient/m2", "Coverage/cov2", "Condition/c2"},
    "ecm": ORGS | M1,
    "cbo": ORGS | {"Patient/m1", "Consent/con1", "Task/t1", "ServiceRequest/sr1", "Observation/o1"},
    "other": ORGS
    | {"Patient/m3", "Coverage/cov3", "Condition/c3", "Patient/m1", "Consent/con1", "Task/t2"},
    # the coordination platform: every member's demographics, consent and care management
    "platform": ORGS
    | {
        "Patient/m1",
        "Patient/m2",
        "Patient/m3",
        "Consent/con1",
        "EpisodeOfCare/eoc1",
        "ServiceRequest/sr1",
        "Task/t1",
        "Task/t2",
    },
}


MATRIX = Matrix(plans=("Organization/plan",), consent_recorders=("Organization/recorder",))
NOT_PLATFORM = {"Coverage", "Condition", "Encounter", "Observation"}


def acting_for(org: str, purposes: tuple[str, ...] | None = None) -> Principal:
    more = {} if purposes is None else {"purposes": purposes}
    return Principal(f"client-{org}", organization=f"Organization/{org}", **more)


@pytest.fixture(scope="module")
def who() -> Acting:
    return Acting()


@pytest.fixture(scope="module")
def _app(database_url: str, who: Acting) -> Iterator[TestClient]:
    policy = RelationshipPolicy(MATRIX, platform=PLATFORM)
    with fhir_client(
        database_url, principals=who, policies=[policy], access_safety_net="fail"
    ) as client:
        yield client


@pytest.fixture
def app(_app: TestClient, database_url: str, who: Acting) -> TestClient:
    """The scene stored (by the operator) on an empty store; callers act as ``who`` says."""
    clear_store(database_url)
    who.as_(LOCAL)
    for resource in SCENE:
        response = put(_app, resource)
        assert response.status_code == 201, response.text
    return _app


def _keys(entries: list[dict[str, Any]]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}


def _everything(client: TestClient) -> set[str]:
    return _keys(all_pages(client, "/fhir?_count=7"))


@pytest.mark.parametrize("org", sorted(SEES))
def test_each_organisation_sees_what_its_relationships_reach(
    app: TestClient, who: Acting, org: str
) -> None:
    who.as_(acting_for(org))
    assert _everything(app) == SEES[org]
    for key in sorted(EVERY):
        status = app.get(f"/fhir/{key}").status_code
        # a hidden resource reads as a missing one; a type the principal can never reach
        # (the platform's clinical and coverage data) is refused outright
        hidden = 403 if org == "platform" and key.split("/")[0] in NOT_PLATFORM else 404
        assert status == (200 if key in SEES[org] else hidden), key


def test_type_search_pages_and_totals_count_only_what_is_reached(
    app: TestClient, who: Acting
) -> None:
    who.as_(acting_for("ecm"))
    body = app.get("/fhir/Condition?_total=accurate&_count=1").json()
    assert body["total"] == 1
    assert _keys(body.get("entry", [])) == {"Condition/c1"}
    assert "next" not in {link["relation"] for link in body["link"]}
    who.as_(acting_for("plan"))
    assert _keys(all_pages(app, "/fhir/Condition?_count=1")) == {"Condition/c1", "Condition/c2"}


def test_includes_chains_and_has_go_only_through_reached_resources(
    app: TestClient, who: Acting
) -> None:
    who.as_(acting_for("cbo"))
    entries = all_pages(app, "/fhir/Task?_include=Task:focus&_include=Task:patient")
    assert _keys(entries) == {"Task/t1", "ServiceRequest/sr1", "Patient/m1"}
    entries = all_pages(app, "/fhir/Patient?_revinclude=Condition:subject&_revinclude=Task:patient")
    assert _keys(entries) == {"Patient/m1", "Task/t1"}
    # the Condition exists but is not reached: no chain or _has goes through it
    assert _keys(all_pages(app, "/fhir/Patient?_has:Condition:subject:code:text=c1")) == set()
    assert _keys(all_pages(app, "/fhir/Condition?subject.family=m1")) == set()
    assert _keys(all_pages(app, "/fhir/Task?patient.family=m1")) == {"Task/t1"}


def test_compartment_history_and_everything_are_narrowed(app: TestClient, who: Acting) -> None:
    who.as_(acting_for("cbo"))
    assert _keys(all_pages(app, "/fhir/Patient/m1/Condition")) == set()
    assert _keys(all_pages(app, "/fhir/Patient/m1/Task")) == {"Task/t1"}
    everything = _keys(all_pages(app, "/fhir/Patient/m1/$everything"))
    assert everything == {
        "Patient/m1",
        "Consent/con1",
        "Task/t1",
        "ServiceRequest/sr1",
        "Observation/o1",
    }
    assert _keys(all_pages(app, "/fhir/Condition/_history")) == set()
    outcome(app.get("/fhir/Condition/c1/_history"), 404)
    assert app.get("/fhir/Patient/m2/$everything").status_code == 404


def test_a_new_referral_grants_access_at_the_next_request(app: TestClient, who: Acting) -> None:
    who.as_(acting_for("cbo"))
    assert app.get("/fhir/Patient/m2").status_code == 404
    who.as_(LOCAL)
    assert put(app, _task("t3", "m2", "cbo")).status_code == 201
    who.as_(acting_for("cbo"))
    # a community group: the referral alone is not enough without the member's release
    assert app.get("/fhir/Task/t3").status_code == 404
    who.as_(LOCAL)
    assert put(app, _roi("roi2", "m2", "permit", "cbo")).status_code == 201
    who.as_(acting_for("cbo"))
    assert app.get("/fhir/Patient/m2").status_code == 200
    assert app.get("/fhir/Task/t3").status_code == 200
    assert app.get("/fhir/Condition/c2").status_code == 404  # clinical: not a referral's
    who.as_(LOCAL)
    assert put(app, _task("t4", "m3", "other")).status_code == 201
    who.as_(acting_for("other"))  # a payor (covered entity): no release needed
    assert app.get("/fhir/Task/t4").status_code == 200


def test_an_ended_relationship_stops_at_the_next_request(app: TestClient, who: Acting) -> None:
    who.as_(acting_for("ecm"))
    assert app.get("/fhir/Condition/c1").status_code == 200
    who.as_(LOCAL)
    assert put(app, _episode("eoc1", "m1", "ecm", status="finished")).status_code == 200
    who.as_(acting_for("ecm"))
    assert app.get("/fhir/Condition/c1").status_code == 404
    assert _everything(app) == ORGS


def test_a_closed_referral_reaches_until_its_grace_period_ends(
    app: TestClient, who: Acting
) -> None:
    recent = format_instant(now_us() - 86_400_000_000)  # a day ago: within the 30 days
    long_ago = format_instant(now_us() - 31 * 86_400_000_000)
    who.as_(LOCAL)
    done = _task("t1", "m1", "cbo", status="completed", focus=_ref("ServiceRequest/sr1"))
    assert put(app, {**done, "lastModified": recent}).status_code == 200
    who.as_(acting_for("cbo"))
    assert app.get("/fhir/Task/t1").status_code == 200
    assert app.get("/fhir/Patient/m1").status_code == 200
    who.as_(LOCAL)
    assert put(app, {**done, "lastModified": long_ago}).status_code == 200
    who.as_(acting_for("cbo"))
    assert app.get("/fhir/Task/t1").status_code == 404
    assert _everything(app) == ORGS


def test_a_deleted_relationship_resource_takes_its_grants(app: TestClient, who: Acting) -> None:
    who.as_(LOCAL)
    assert app.delete("/fhir/Task/t1").status_code in (200, 204)
    who.as_(acting_for("cbo"))
    assert _everything(app) == ORGS


def test_a_kind_serves_only_its_purposes_of_use(app: TestClient, who: Acting) -> None:
    who.as_(acting_for("ecm", purposes=RESEARCH))
    assert _everything(app) == ORGS
    who.as_(acting_for("ecm", purposes=("CAREMGT",)))
    assert _everything(app) == SEES["ecm"]


def test_a_principal_for_no_organisation_reaches_nothing(app: TestClient, who: Acting) -> None:
    who.as_(Principal("someone"))
    outcome(app.get("/fhir/Patient"), 403)
    who.as_(Principal("admin-client", operator=True))
    assert _everything(app) == EVERY


def _procedure(id: str, member: str, performer: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": id,
        "status": "completed",
        "subject": _ref(f"Patient/{member}"),
        "code": {"text": "meal delivery"},
        "performer": [{"actor": _ref(f"Organization/{performer}")}],
    }


def _consent(id: str, member: str, actor: str | None = None) -> dict[str, Any]:
    body = {**next(r for r in SCENE if r["id"] == "con1"), "id": id}
    body["patient"] = _ref(f"Patient/{member}")
    if actor is not None:
        body["provision"] = {
            "type": "permit",
            "actor": [{"role": IRCP, "reference": _ref(f"Organization/{actor}")}],
        }
    return body


def _gone(app: TestClient, who: Acting, key: str) -> None:
    who.as_(LOCAL)
    assert app.get(f"/fhir/{key}").status_code == 404, key


def _create(app: TestClient, resource: dict[str, Any]) -> Any:
    """POST ``resource`` without its id: a caller whose view of a type is narrowed creates
    under an id the server assigns (a PUT to an id it cannot see answers 405, decision 0015)."""
    body = {k: v for k, v in resource.items() if k != "id"}
    return app.post(f"/fhir/{resource['resourceType']}", json=body)


def _stored(app: TestClient, who: Acting, type: str) -> set[str]:
    """Every ``type`` resource in the store, as the operator sees it (the caller restored)."""
    caller = who.principal
    who.as_(LOCAL)
    keys = _keys(all_pages(app, f"/fhir/{type}"))
    who.as_(caller)
    return keys


def test_a_community_provider_writes_its_own_task_and_procedures_only(
    app: TestClient, who: Acting
) -> None:
    who.as_(acting_for("cbo"))
    conditions = _stored(app, who, "Condition")
    assert (
        put(
            app, _task("t1", "m1", "cbo", status="accepted", focus=_ref("ServiceRequest/sr1"))
        ).status_code
        == 200
    )
    created = _create(app, _procedure("pr1", "m1", "cbo"))
    assert created.status_code == 201, created.text
    own = f"Procedure/{created.json()['id']}"
    assert app.get(f"/fhir/{own}").status_code == 200
    assert _keys(all_pages(app, "/fhir/Procedure")) == {own}
    # not its own, not of its data classes, not of a member it serves
    outcome(_create(app, _procedure("pr2", "m1", "other")), 403)
    outcome(_create(app, _procedure("pr3", "m2", "cbo")), 403)
    outcome(_create(app, _condition("c9", "m1")), 403)
    # resources it can read but may not write
    patient = {"resourceType": "Patient", "id": "m1", "name": [{"family": "changed"}]}
    outcome(app.put("/fhir/Patient/m1", json=patient), 403)
    outcome(app.put("/fhir/Consent/con1", json=_consent("con1", "m1")), 403)
    outcome(
        app.put("/fhir/ServiceRequest/sr1", json=next(r for r in SCENE if r["id"] == "sr1")), 403
    )
    outcome(app.put("/fhir/Organization/cbo", json=_org("cbo", "prov")), 403)
    # resources it cannot see answer as missing ids do: nothing written, nothing revealed
    hidden = outcome(app.put("/fhir/Condition/c1", json=_condition("c1", "m1")), 405)
    missing = outcome(app.put("/fhir/Condition/c8", json=_condition("c8", "m1")), 405)
    assert hidden["issue"][0]["diagnostics"].replace("c1", "") == missing["issue"][0][
        "diagnostics"
    ].replace("c8", "")
    outcome(app.put("/fhir/Coverage/cov1", json=_coverage("cov1", "m1", "cbo")), 405)
    assert _stored(app, who, "Procedure") == {own}
    assert _stored(app, who, "Condition") == conditions
    who.as_(LOCAL)
    assert app.get("/fhir/Patient/m1").json()["name"] == [{"family": "m1"}]
    assert app.get("/fhir/Organization/cbo").json()["type"][0]["coding"][0]["code"] == "cg"
    assert app.get("/fhir/Coverage/cov1").json()["payor"] == next(
        r for r in SCENE if r["id"] == "cov1"
    )["payor"]


def test_an_ecm_provider_writes_care_and_clinical_data_of_its_members(
    app: TestClient, who: Acting
) -> None:
    who.as_(acting_for("ecm"))
    before = _stored(app, who, "Condition")
    created = _create(app, _condition("c4", "m1"))
    assert created.status_code == 201, created.text
    outcome(_create(app, _condition("c5", "m2")), 403)
    assert _stored(app, who, "Condition") == before | {f"Condition/{created.json()['id']}"}


def test_no_self_granting(app: TestClient, who: Acting) -> None:
    who.as_(acting_for("cbo"))
    tasks = _stored(app, who, "Task")
    # a referral to itself for a member it does not serve, existing or not: refused alike
    for member in ("m2", "nobody"):
        body = outcome(_create(app, _task("t9", member, "cbo")), 403)
        assert body["issue"][0]["expression"] == ["Task.owner"]
    assert _stored(app, who, "Task") == tasks
    assert app.get("/fhir/Patient/m2").status_code == 404
    # an EpisodeOfCare making itself m2's ECM provider
    episodes = _stored(app, who, "EpisodeOfCare")
    body = outcome(_create(app, _episode("e9", "m2", "cbo")), 403)
    assert body["issue"][0]["expression"] in (
        ["EpisodeOfCare.managingOrganization"],
        ["EpisodeOfCare"],
    )
    assert _stored(app, who, "EpisodeOfCare") == episodes
    # a payor naming itself on another member's Coverage
    who.as_(acting_for("other"))
    coverages = _stored(app, who, "Coverage")
    outcome(_create(app, _coverage("cov9", "m2", "other")), 403)
    assert _stored(app, who, "Coverage") == coverages
    # the ECM provider refers its own member to the CBO: a relationship it may create
    who.as_(acting_for("ecm"))
    referral = _task("t5", "m1", "cbo", requester=_ref("Organization/ecm"))
    assert _create(app, referral).status_code == 201
    # the plan starts a relationship with a new member
    who.as_(LOCAL)
    assert put(app, {"resourceType": "Patient", "id": "m4"}).status_code == 201
    who.as_(acting_for("plan"))
    assert _create(app, _coverage("cov4", "m4", "plan")).status_code == 201
    assert app.get("/fhir/Patient/m4").status_code == 200


def _member_transaction(payor: str, coverage_first: bool, with_coverage: bool = True) -> dict:
    """A transaction adding a new member (a Patient) and, optionally, the Coverage that
    ``payor`` pays for it, the two linked by urn:uuid."""
    member = {"fullUrl": "urn:uuid:6f1c2a8e-0d4b-4c1e-9a55-0d2f1b7e9c01",
              "resource": {"resourceType": "Patient", "name": [{"family": "joined"}]},
              "request": {"method": "POST", "url": "Patient"}}
    coverage = {"resource": {"resourceType": "Coverage", "status": "active",
                             "beneficiary": _ref(member["fullUrl"]),
                             "payor": [_ref(f"Organization/{payor}")]},
                "request": {"method": "POST", "url": "Coverage"}}
    entries = [coverage, member] if coverage_first else [member, coverage]
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": entries if with_coverage else [member]}


def _with_stray_patient(bundle: dict) -> dict:
    """``bundle`` and one more new Patient that nothing in it links to anyone."""
    stray = {"fullUrl": "urn:uuid:0b6f4c2e-5d1a-4f7e-8c3b-9a2d6e1f4b70",
             "resource": {"resourceType": "Patient", "name": [{"family": "stray"}]},
             "request": {"method": "POST", "url": "Patient"}}
    return {**bundle, "entry": [*bundle["entry"], stray]}


def test_what_a_transaction_may_write_does_not_depend_on_its_entry_order(
    app: TestClient, who: Acting
) -> None:
    who.as_(acting_for("plan"))
    for coverage_first in (True, False):
        response = app.post("/fhir", json=_member_transaction("plan", coverage_first))
        assert response.status_code == 200, response.text
        patient = next(e["response"]["location"] for e in response.json()["entry"]
                       if e["response"]["location"].startswith("Patient/"))
        assert app.get(f"/fhir/{patient.split('/_history')[0]}").status_code == 200
    patients, coverages = _stored(app, who, "Patient"), _stored(app, who, "Coverage")
    # a member no relationship of the plan reaches, or one another payor covers: refused in
    # either order, and nothing of the transaction is kept
    # (the first entry whose result the plan may not see is named)
    for bundle, entry in (
        (_member_transaction("plan", False, with_coverage=False), 0),  # the Patient
        (_member_transaction("other", True), 0),  # the Coverage another payor pays
        (_member_transaction("other", False), 0),  # the Patient it leaves unreachable
        (_with_stray_patient(_member_transaction("plan", True)), 2),  # only the stray Patient
    ):
        refused = outcome(app.post("/fhir", json=bundle), 403)
        assert refused["issue"][0]["expression"] == [f"Bundle.entry[{entry}]"], refused
    assert _stored(app, who, "Patient") == patients
    assert _stored(app, who, "Coverage") == coverages


def test_consent_is_recorded_by_the_plan_or_a_recorder_never_by_its_actor(
    app: TestClient, who: Acting
) -> None:
    who.as_(acting_for("cbo"))
    consents = _stored(app, who, "Consent")
    outcome(_create(app, _consent("k1", "m1")), 403)
    who.as_(acting_for("ecm"))
    outcome(_create(app, _consent("k1", "m1")), 403)
    assert _stored(app, who, "Consent") == consents
    who.as_(acting_for("recorder"))
    body = outcome(_create(app, _consent("k2", "m1", "recorder")), 403)
    assert body["issue"][0]["expression"] == ["Consent.provision"]
    recorded = _create(app, _consent("k3", "m1", "cbo"))
    assert recorded.status_code == 201, recorded.text
    who.as_(acting_for("plan"))
    assert _create(app, _consent("k4", "m2", "cbo")).status_code == 201
    who.as_(acting_for("ecm"))
    # read: its member's consent
    assert app.get(f"/fhir/Consent/{recorded.json()['id']}").status_code == 200


def test_the_matrix_is_the_plans_configuration(
    database_url: str, who: Acting, app: TestClient
) -> None:
    wider = Matrix(
        kinds={
            **Matrix().kinds,
            "referral-owner": ("demographics", "consent", "clinical"),
        }
    )
    with fhir_client(
        database_url,
        principals=who,
        policies=[RelationshipPolicy(wider)],
        access_safety_net="fail",
    ) as client:
        who.as_(acting_for("cbo"))
        assert _keys(all_pages(client, "/fhir/Condition")) == {"Condition/c1"}
        assert client.get("/fhir/Encounter/e1").status_code == 200
        assert client.get("/fhir/Coverage/cov1").status_code == 404


def test_a_matrix_naming_what_does_not_exist_is_refused() -> None:
    with pytest.raises(MatrixError, match="unknown data class"):
        Matrix(kinds={"plan": ("everything",)})
    with pytest.raises(MatrixError, match="Patient compartment"):
        Matrix(classes={"directory": ("Organization",)})
    with pytest.raises(MatrixError, match="unknown relationship kind"):
        Matrix(grace_days={"friend": 3})


# -- release of information and sensitive data ---------------------------------------------

PART2_LABEL = "http://terminology.hl7.org/CodeSystem/v3-ActCode|42CFRPart2"


def _roi(id: str, member: str, type: str, actor: str | None = None, **more: Any) -> dict:
    provision: dict[str, Any] = {"type": type, **more}
    if actor is not None:
        provision["actor"] = [{"role": IRCP, "reference": _ref(f"Organization/{actor}")}]
    return {**_consent(id, member), "provision": provision}


def test_a_non_covered_recipient_needs_a_release_withdrawn_at_the_next_request(
    app: TestClient, who: Acting
) -> None:
    who.as_(LOCAL)
    withdrawn = {**next(r for r in SCENE if r["id"] == "con1"), "status": "inactive"}
    assert put(app, withdrawn).status_code == 200
    who.as_(acting_for("cbo"))
    # no ROI on file: the community group reaches nothing of the member, its referral neither
    assert _everything(app) == ORGS
    who.as_(LOCAL)
    assert put(app, {**withdrawn, "status": "active"}).status_code == 200
    who.as_(acting_for("cbo"))
    assert _everything(app) == SEES["cbo"]


def test_a_covered_entity_needs_no_release_for_treatment(app: TestClient, who: Acting) -> None:
    who.as_(LOCAL)
    withdrawn = {**next(r for r in SCENE if r["id"] == "con1"), "status": "rejected"}
    assert put(app, withdrawn).status_code == 200
    who.as_(acting_for("ecm"))  # a provider (prov): TPO access without an ROI
    assert _everything(app) == SEES["ecm"]
    who.as_(LOCAL)
    assert put(app, _org("cbo", "prov")).status_code == 200  # the CBO registered as provider
    who.as_(acting_for("cbo"))
    assert _everything(app) == SEES["cbo"]


def test_a_release_that_shares_nothing_is_not_the_absence_of_one(
    app: TestClient, who: Acting
) -> None:
    who.as_(LOCAL)
    assert put(app, _roi("deny-ecm", "m1", "deny", "ecm")).status_code == 201
    who.as_(acting_for("ecm"))
    assert _everything(app) == ORGS
    who.as_(acting_for("plan"))
    assert _everything(app) == SEES["plan"] | {"Consent/deny-ecm"}
    who.as_(LOCAL)
    assert put(app, _roi("deny-all", "m1", "deny")).status_code == 201
    who.as_(acting_for("plan"))
    assert _everything(app) == ORGS | {"Patient/m2", "Coverage/cov2", "Condition/c2"}
    who.as_(acting_for("cbo"))  # its permit does not outweigh the member's deny
    assert _everything(app) == ORGS
    who.as_(LOCAL)
    assert app.delete("/fhir/Consent/deny-all").status_code in (200, 204)
    who.as_(acting_for("cbo"))
    assert _everything(app) == SEES["cbo"] | {"Consent/deny-ecm"}


def _sud(id: str, system: str, code: str) -> dict[str, Any]:
    return {
        **_condition(id, "m1"),
        "code": {"coding": [{"system": system, "code": code}]},
    }


def test_unlabelled_substance_use_data_is_labelled_and_needs_a_part2_permit(
    app: TestClient, who: Acting
) -> None:
    who.as_(LOCAL)
    for resource in (
        _sud("sud1", "http://hl7.org/fhir/sid/icd-10-cm", "F11.20"),
        _sud("sud2", "http://snomed.info/sct", "5602001"),  # Synthea's opioid abuse
        _sud("nic", "http://hl7.org/fhir/sid/icd-10-cm", "F17.210"),  # nicotine: not Part 2
    ):
        assert put(app, resource).status_code == 201
    labelled = all_pages(app, f"/fhir/Condition?_security={PART2_LABEL}")
    assert _keys(labelled) == {"Condition/sud1", "Condition/sud2"}
    assert "security" not in app.get("/fhir/Condition/sud1").json()["meta"]  # body unchanged
    who.as_(acting_for("ecm"))
    assert _keys(all_pages(app, "/fhir/Condition")) == {"Condition/c1", "Condition/nic"}
    assert app.get("/fhir/Condition/sud1").status_code == 404
    # a Part 2 permit to everyone does not name the recipient
    part2 = {"securityLabel": [{"system": PART2_LABEL.split("|")[0], "code": "42CFRPart2"}]}
    who.as_(LOCAL)
    assert put(app, _roi("p2-all", "m1", "permit", **part2)).status_code == 201
    who.as_(acting_for("ecm"))
    assert app.get("/fhir/Condition/sud1").status_code == 404
    who.as_(LOCAL)
    assert put(app, _roi("p2-ecm", "m1", "permit", "ecm", **part2)).status_code == 201
    who.as_(acting_for("ecm"))
    assert _keys(all_pages(app, "/fhir/Condition?_total=accurate")) == {
        "Condition/c1",
        "Condition/nic",
        "Condition/sud1",
        "Condition/sud2",
    }
    who.as_(acting_for("plan"))  # the plan holds no Part 2 permit
    assert _keys(all_pages(app, "/fhir/Patient/m1/Condition")) == {"Condition/c1", "Condition/nic"}


def test_break_the_glass_reaches_any_member_but_no_deny_or_part2_data(
    app: TestClient, who: Acting
) -> None:
    """ETREAT (asserted: ``auth/emergency.py``) reaches the provider classes of members the
    organisation has no relationship with; a member's deny and Part 2 labels still hold."""
    strangers = {"Patient/m2", "Coverage/cov2", "Condition/c2",
                 "Patient/m3", "Coverage/cov3", "Condition/c3"}
    for purposes in (("TREAT", "ETREAT"), ("ETREAT",)):
        who.as_(acting_for("ecm", purposes))
        assert _everything(app) == SEES["ecm"] | strangers
        assert app.get("/fhir/Condition/c3").status_code == 200
    who.as_(acting_for("ecm"))  # not asserted: relationships only
    assert app.get("/fhir/Condition/c3").status_code == 404
    # a community group (not a covered entity) reaches only where a release names it: m1
    who.as_(acting_for("cbo", ("TREAT", "ETREAT")))
    assert _everything(app) == ORGS | M1
    who.as_(LOCAL)
    assert put(app, _roi("deny-m2", "m2", "deny")).status_code == 201
    assert put(app, {**_sud("sud3", "http://hl7.org/fhir/sid/icd-10-cm", "F11.20"),
                     "subject": _ref("Patient/m3")}).status_code == 201
    who.as_(acting_for("ecm", ("TREAT", "ETREAT")))
    assert _everything(app) == SEES["ecm"] | {"Patient/m3", "Coverage/cov3", "Condition/c3"}
    assert app.get("/fhir/Condition/sud3").status_code == 404
    assert app.get("/fhir/Patient/m2").status_code == 404
    assert _keys(all_pages(app, "/fhir/Condition?_total=accurate")) == {
        "Condition/c1", "Condition/c3"}


def _bulk(id: str, member: str, code: tuple[str, str] | None = None) -> dict[str, Any]:
    """A Condition of ``member`` carrying the identifier every bulk search asks for."""
    resource = {**_condition(id, member), "identifier": [{"system": "urn:bulk", "value": "b"}]}
    if code is not None:
        resource["code"] = {"coding": [{"system": code[0], "code": code[1]}]}
    return resource


def _bulk_search(app: TestClient) -> tuple[int, set[str]]:
    """The bulk search's total and every page's entries (pages of 10)."""
    total = app.get("/fhir/Condition?identifier=urn:bulk|b&_total=accurate&_count=10").json()
    keys = _keys(all_pages(app, "/fhir/Condition?identifier=urn:bulk|b&_count=10"))
    return int(total["total"]), keys


def _store_bulk(app: TestClient, who: Acting, more: list[dict[str, Any]] | None = None) -> None:
    """Twenty bulk Conditions of each member (and ``more``), stored by the operator, with
    more of m1's Conditions than the bulk search matches (so its clause drives)."""
    who.as_(LOCAL)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"Condition/{r['id']}"}}
            for r in (
                *(_bulk(f"b{m}-{n}", m) for m in ("m1", "m2", "m3") for n in range(20)),
                *(more or []),
                *(_condition(f"x{n}", "m1") for n in range(80)),
            )
        ],
    }
    assert app.post("/fhir", json=bundle).status_code == 200


def test_a_search_testing_many_candidates_applies_relationships_and_releases(
    app: TestClient, who: Acting
) -> None:
    """A search whose clause matches more resources than the organisation has grant rows
    tests them against the organisation's released members, gathered once: the same
    answers, totals and pages as the rule resource by resource, Part 2 labels and denies
    included."""
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    _store_bulk(app, who, [_bulk(f"bsud{n}", "m1", (icd, "F11.20")) for n in range(5)])
    m1 = {f"Condition/bm1-{n}" for n in range(20)}
    m2 = {f"Condition/bm2-{n}" for n in range(20)}
    sud = {f"Condition/bsud{n}" for n in range(5)}
    who.as_(acting_for("ecm"))  # m1 by its EpisodeOfCare; no Part 2 permit
    assert _bulk_search(app) == (20, m1)
    who.as_(acting_for("plan"))  # m1 and m2 by their Coverages
    assert _bulk_search(app) == (40, m1 | m2)
    who.as_(acting_for("cbo"))  # a referral reaches no Condition
    assert _bulk_search(app) == (0, set())
    part2 = {"securityLabel": [{"system": PART2_LABEL.split("|")[0], "code": "42CFRPart2"}]}
    who.as_(LOCAL)
    assert put(app, _roi("p2-ecm", "m1", "permit", "ecm", **part2)).status_code == 201
    who.as_(acting_for("ecm"))
    assert _bulk_search(app) == (25, m1 | sud)
    who.as_(acting_for("plan"))  # the permit names the provider, not the plan
    assert _bulk_search(app) == (40, m1 | m2)
    who.as_(LOCAL)
    assert put(app, _roi("deny-ecm", "m1", "deny", "ecm")).status_code == 201
    who.as_(acting_for("ecm"))
    assert _bulk_search(app) == (0, set())
    who.as_(LOCAL)
    assert put(app, _roi("deny-all", "m2", "deny")).status_code == 201
    who.as_(acting_for("plan"))
    assert _bulk_search(app) == (20, m1)
    who.as_(LOCAL)  # the provider's relationship ends: its deny no longer matters either
    assert app.delete("/fhir/Consent/deny-ecm").status_code in (200, 204)
    assert put(app, _episode("eoc1", "m1", "ecm", "finished")).status_code == 200
    who.as_(acting_for("ecm"))
    assert _bulk_search(app) == (0, set())


def _observation(id: str, member: str, performer: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"text": id},
        "subject": _ref(f"Patient/{member}"),
    }
    if performer is not None:
        resource["performer"] = [_ref(performer)]
    return resource


def _found(app: TestClient, url: str) -> tuple[int, set[str], set[str]]:
    """A search's total, its matches and its included resources (every page)."""
    body = app.get(f"{url}&_total=accurate").json()
    entries = all_pages(app, url)
    mode: dict[str, set[str]] = {"match": set(), "include": set()}
    for entry in entries:
        mode[entry["search"]["mode"]] |= _keys([entry])
    return int(body["total"]), mode["match"], mode["include"]


def test_a_search_by_member_and_its_includes_show_only_what_is_reached(
    app: TestClient, who: Acting
) -> None:
    """A search naming one member (``subject=Patient/m1``) decides that member's grant once:
    the same answers and totals as the rule resource by resource; what it does not decide
    (another member, a referral naming the resource itself) the row's own test does. Its
    ``_include``s are narrowed to the types they return: a Practitioner (directory data) and
    the member's own Patient are shown, another member's Patient only to whom reaches it."""
    who.as_(LOCAL)
    for resource in (
        {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "pr1"}]},
        _observation("ob1", "m1", "Practitioner/pr1"),
        _observation("ob2", "m1", "Patient/m1"),
        _observation("ob3", "m1", "Patient/m2"),  # of m1, performed by another member
        _observation("ob4", "m2", "Patient/m1"),  # of m2, in m1's compartment by performer
        _observation("ob5", "m2"),
    ):
        assert put(app, resource).status_code == 201
    m1 = {"Observation/o1", "Observation/ob1", "Observation/ob2", "Observation/ob3"}
    by_m1 = "/fhir/Observation?subject=Patient/m1&_count=2"
    include = "&_include=Observation:performer"
    who.as_(acting_for("ecm"))  # m1 by its EpisodeOfCare
    assert _found(app, by_m1) == (4, m1, set())
    assert _found(app, by_m1 + include) == (4, m1, {"Practitioner/pr1", "Patient/m1"})
    assert _found(app, by_m1 + include + ":Patient") == (4, m1, {"Patient/m1"})
    # m2 is not released to the provider: of m2's Observations only ob4, in m1's compartment
    # through its performer, is reached (through m1)
    assert _found(app, "/fhir/Observation?subject=Patient/m2&_count=2") == (
        1, {"Observation/ob4"}, set())
    assert _found(app, "/fhir/Observation?performer=Patient/m1&_count=2") == (
        2, {"Observation/ob2", "Observation/ob4"}, set())
    revinclude = "/fhir/Patient?_id=m1,m2&_revinclude=Observation:subject&_count=5"
    assert _found(app, revinclude) == (1, {"Patient/m1"}, m1)
    who.as_(acting_for("plan"))  # m1 and m2 by their Coverages
    assert _found(app, by_m1 + include) == (
        4, m1, {"Practitioner/pr1", "Patient/m1", "Patient/m2"})
    assert _found(app, "/fhir/Observation?subject=Patient/m2&_count=2") == (
        2, {"Observation/ob4", "Observation/ob5"}, set())
    who.as_(acting_for("cbo"))  # m1 released, but its referral reaches o1 alone
    assert _found(app, by_m1 + include) == (1, {"Observation/o1"}, set())
    who.as_(LOCAL)
    assert put(app, _roi("deny-ecm", "m1", "deny", "ecm")).status_code == 201
    who.as_(acting_for("ecm"))
    assert _found(app, by_m1 + include) == (0, set(), set())
    assert _found(app, revinclude) == (0, set(), set())
    who.as_(acting_for("plan"))
    assert _found(app, by_m1 + include) == (
        4, m1, {"Practitioner/pr1", "Patient/m1", "Patient/m2"})


def test_a_search_by_member_hides_its_part2_data_without_a_permit(
    app: TestClient, who: Acting
) -> None:
    who.as_(LOCAL)
    assert put(app, _sud("sud1", "http://hl7.org/fhir/sid/icd-10-cm", "F11.20")).status_code == 201
    by_m1 = "/fhir/Condition?patient=Patient/m1&_count=1"
    who.as_(acting_for("ecm"))
    assert _found(app, by_m1) == (1, {"Condition/c1"}, set())
    part2 = {"securityLabel": [{"system": PART2_LABEL.split("|")[0], "code": "42CFRPart2"}]}
    who.as_(LOCAL)
    assert put(app, _roi("p2-ecm", "m1", "permit", "ecm", **part2)).status_code == 201
    who.as_(acting_for("ecm"))
    assert _found(app, by_m1) == (2, {"Condition/c1", "Condition/sud1"}, set())
    who.as_(acting_for("plan"))  # the permit names the provider, not the plan
    assert _found(app, by_m1) == (1, {"Condition/c1"}, set())

def test_a_search_by_code_follows_each_resources_member_as_it_changes(
    app: TestClient, who: Acting
) -> None:
    """A narrowed search whose clause matches many candidates answers from the member each
    resource's index rows name, rewritten with every version: a Condition moved to another
    member moves with it (answers, totals, pages), one naming two members is tested on its
    row, a deleted one goes."""
    _store_bulk(app, who)
    of = {m: {f"Condition/b{m}-{n}" for n in range(20)} for m in ("m1", "m2", "m3")}
    who.as_(acting_for("ecm"))  # m1, by its EpisodeOfCare
    assert _bulk_search(app) == (20, of["m1"])
    who.as_(acting_for("other"))  # m3, by its Coverage
    assert _bulk_search(app) == (20, of["m3"])

    who.as_(LOCAL)  # five of m2's Conditions become m1's, one of m1's becomes m3's
    moved = {f"Condition/bm2-{n}" for n in range(5)}
    for n in range(5):
        assert put(app, _bulk(f"bm2-{n}", "m1")).status_code == 200
    assert put(app, _bulk("bm1-0", "m3")).status_code == 200
    m1 = (of["m1"] - {"Condition/bm1-0"}) | moved
    m2 = of["m2"] - moved
    m3 = of["m3"] | {"Condition/bm1-0"}
    who.as_(acting_for("ecm"))
    assert _bulk_search(app) == (24, m1)
    who.as_(acting_for("plan"))  # m1 and m2
    assert _bulk_search(app) == (39, m1 | m2)
    who.as_(acting_for("other"))
    assert _bulk_search(app) == (21, m3)

    who.as_(LOCAL)  # one of m3's names m1 as its asserter too: it belongs to both
    both = {**_bulk("bm3-1", "m3"), "asserter": _ref("Patient/m1")}
    assert put(app, both).status_code == 200
    assert app.delete("/fhir/Condition/bm1-1").status_code in (200, 204)
    m1 = (m1 - {"Condition/bm1-1"}) | {"Condition/bm3-1"}
    who.as_(acting_for("ecm"))
    assert _bulk_search(app) == (24, m1)
    who.as_(acting_for("other"))
    assert _bulk_search(app) == (21, m3)
    who.as_(acting_for("plan"))
    assert _bulk_search(app) == (39, m1 | m2)
    who.as_(LOCAL)  # and back to m3 alone: the provider no longer sees it
    assert put(app, _bulk("bm3-1", "m3")).status_code == 200
    who.as_(acting_for("ecm"))
    assert _bulk_search(app) == (23, m1 - {"Condition/bm3-1"})


def _sql(database_url: str, statement: str) -> list[Any]:
    """Run one statement on the test store outside the server (its rows, committed)."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :], timeout=10)
        try:
            rows = conn.execute(statement).fetchall()
            conn.commit()
        finally:
            conn.close()
        return rows
    with psycopg.connect(database_url, connect_timeout=10) as pg:
        cursor = pg.execute(statement)
        return cursor.fetchall() if cursor.description else []


def test_index_rows_without_their_member_are_tested_on_the_resource_and_filled_in(
    app: TestClient, who: Acting, database_url: str
) -> None:
    """Index rows that do not name their member (written before migration 14) answer as
    before, tested on their resource rows; the migration's fill names it again."""
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    _store_bulk(app, who, [_bulk(f"bsud{n}", "m1", (icd, "F11.20")) for n in range(5)])
    m1 = {f"Condition/bm1-{n}" for n in range(20)}
    m2 = {f"Condition/bm2-{n}" for n in range(20)}

    def answers() -> None:
        who.as_(acting_for("ecm"))
        assert _bulk_search(app) == (20, m1)
        who.as_(acting_for("plan"))
        assert _bulk_search(app) == (40, m1 | m2)
        who.as_(acting_for("cbo"))
        assert _bulk_search(app) == (0, set())

    named = "SELECT COUNT(*) FROM search_token WHERE param = 'identifier' AND member IS NOT NULL"
    assert _sql(database_url, named)[0][0] == 60  # the labelled Part 2 rows name no member
    _sql(database_url, "UPDATE search_token SET member = NULL, seq = NULL")
    answers()
    fill = [s for m in MIGRATIONS for s in m if s.startswith("UPDATE search_token SET member")]
    assert len(fill) == 1
    _sql(database_url, fill[0])
    assert _sql(database_url, named)[0][0] == 60
    answers()
