"""ECM referral intake over HTTP on both stores: acknowledgement, the decision date, source kind
and channel, plan configuration by plan Organization, duplicates and returned for correction
(docs/ecm-workflow.md).

Expectations are written by hand from the clauses: seed 003 VI.D.5 (sources and channels),
VI.D.7.a (acknowledge receipt), VI.D.7.b (errors to correct before submission); the decision
date is plan configuration (default 5 business days, U.S. federal holidays; the seeds give no
number). The server's clock is fixed so every date below is counted by hand on a calendar.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.auth.principal import LOCAL, Principal
from server.ecm import intake
from server.fhir.instant import from_datetime
from tests.ecm_scene import concept, example, ok
from tests.support import Acting, TestClient, clear_store, expressions, fhir_client, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "resources"
CBO = Principal("casa-app", allow_all=True, organization="Organization/casa-segura-housing")
PLAN = Principal("plan-app", allow_all=True, organization="Organization/golden-poppy-health-plan")
CLINIC = Principal("clinic-app", allow_all=True, organization="Organization/westside-family-clinic")
MEMBER = "Patient/ecm-member-example"
OTHER_MEMBER = "Patient/ecm-member-homeless-example"
REFERRAL_STATUS = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-referral-status"
CHANNEL = "http://calaim-fhir.org/fhir/StructureDefinition/referral-channel"
CHANNELS = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-channel"
SOURCE = "http://calaim-fhir.org/fhir/StructureDefinition/referral-source-type"
SOURCES = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-source-type"
DUPLICATE_OF = "http://calaim-fhir.org/fhir/StructureDefinition/referral-duplicate-of"
WORKFLOW = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-workflow"
REFERRAL_ID = "https://calaim-fhir.org/fhir/sid/ecm-referral"

# Friday 18 December 2026, 09:00 in California (17:00 UTC). Five business days after it, on
# the U.S. federal calendar: Mon 21 (1), Tue 22 (2), Wed 23 (3), Thu 24 (4), Fri 25 is
# Christmas Day, Mon 28 (5).
FRIDAY = "2026-12-18T17:00:00.000000Z"
FRIDAY_DUE = "2026-12-28"


def _us(instant: str) -> int:
    from datetime import datetime

    return from_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")))


class Clock:
    def __init__(self) -> None:
        self.now = _us(FRIDAY)

    def set(self, instant: str) -> None:
        self.now = _us(instant)

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock()
    monkeypatch.setattr(intake, "now", fixed)
    return fixed


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Golden Poppy's own configuration: 2 business days, and its own holiday on Monday
    21 December 2026 (the federal calendar is then not used for it)."""
    folder = tmp_path_factory.mktemp("plans")
    (folder / "golden-poppy.json").write_text(
        json.dumps(
            {
                "organization": "Organization/golden-poppy-health-plan",
                "referralDecisionBusinessDays": 2,
                "holidays": ["2026-12-21"],
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def intake_client(
    database_url: str, acting: Acting, plan_dir: Path
) -> Iterator[TestClient]:
    with fhir_client(database_url, principals=acting, ecm_plan_config_dir=str(plan_dir)) as c:
        yield c


@pytest.fixture
def app(intake_client: TestClient, database_url: str, acting: Acting, clock: Clock
        ) -> Iterator[TestClient]:
    """The examples loaded (but their Tasks), with the clock fixed."""
    clear_store(database_url)
    acting.as_(LOCAL)
    entries = [
        {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        for resource in (json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json")))
        if resource["resourceType"] not in ("Task", "ServiceRequest", "Communication")
    ]
    ok(
        intake_client.post(
            "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )
    )
    yield intake_client
    acting.as_(LOCAL)


def _referral(
    number: str,
    *,
    member: str = MEMBER,
    requester: str = "Organization/casa-segura-housing",
    source: str = "community-based-organization",
    channel: str | None = None,
) -> dict[str, Any]:
    """An ECM referral from the example, with another identifier, member and source."""
    body = example("ServiceRequest-ecm-referral-example")
    body.pop("id")
    body["identifier"] = [{"system": REFERRAL_ID, "value": number}]
    body["subject"] = {"reference": member}
    body["requester"] = {"reference": requester}
    body["supportingInfo"] = [
        s for s in body.get("supportingInfo") or () if "Consent" not in s["reference"]
    ] or None
    if body["supportingInfo"] is None:
        body.pop("supportingInfo")
    extensions = [{"url": SOURCE, "valueCodeableConcept": concept(SOURCES, source)}]
    if channel is not None:
        extensions.append({"url": CHANNEL, "valueCodeableConcept": concept(CHANNELS, channel)})
    body["extension"] = extensions
    return body


def _task(focus: str, *, member: str = MEMBER, requester: str = "Organization/casa-segura-housing",
          **extra: Any) -> dict[str, Any]:
    """The referral Task as a referrer sends it: requested, to the plan, no authoredOn."""
    body: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"profile": ["http://calaim-fhir.org/fhir/StructureDefinition/ecm-referral-task"]},
        "status": "requested",
        "intent": "order",
        "code": concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": focus},
        "for": {"reference": member},
        "requester": {"reference": requester},
        "owner": {"reference": "Organization/golden-poppy-health-plan"},
    }
    body.update(extra)
    return body


def _bundle(number: str, **kw: Any) -> dict[str, Any]:
    """The intake transaction: the ServiceRequest and its Task, the Task's focus its fullUrl."""
    member = kw.pop("member", MEMBER)
    requester = kw.pop("requester", "Organization/casa-segura-housing")
    url = f"urn:uuid:00000000-0000-4000-8000-{abs(hash(number)) % 10**12:012d}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": url,
                "resource": _referral(number, member=member, requester=requester, **kw),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "resource": _task(url, member=member, requester=requester),
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }


def _submit(app: TestClient, number: str, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post the intake transaction; the stored ServiceRequest and Task."""
    answer = ok(app.post("/fhir", json=_bundle(number, **kw)), 200)
    request_url, task_url = (e["response"]["location"] for e in answer["entry"])
    request = ok(app.get("/fhir/" + request_url.split("/_history")[0]))
    task = ok(app.get("/fhir/" + task_url.split("/_history")[0]))
    return request, task


def _code(concept: dict[str, Any] | None) -> str | None:
    if not concept:
        return None
    return str(concept["coding"][0]["code"])


def _ids(app: TestClient, query: str) -> list[str]:
    bundle = ok(app.get(f"/fhir/{query}"))
    return sorted(e["resource"]["id"] for e in bundle.get("entry") or ())


# -- 1. intake: acknowledged, deadlined, source and channel recorded -------------------------


def test_cbo_referral_by_transaction_is_acknowledged_with_its_decision_date(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(CBO)
    request, task = _submit(app, "REF-CBO-1")
    # VI.D.7.a: acknowledged — received, still requested, stamped
    assert task["status"] == "requested"
    assert task["businessStatus"]["coding"] == [{"system": REFERRAL_STATUS, "code": "received"}]
    assert task["lastModified"] == FRIDAY
    # the received time; authoredOn was absent, so it is the received time too
    assert task["restriction"]["period"] == {"start": FRIDAY, "end": FRIDAY_DUE}
    assert task["authoredOn"] == FRIDAY
    # VI.D.5.a: the source kind as sent, and the channel: sent to the API without one
    sources = [e for e in request["extension"] if e["url"] == SOURCE]
    assert _code(sources[0]["valueCodeableConcept"]) == "community-based-organization"
    channels = [e for e in request["extension"] if e["url"] == CHANNEL]
    assert channels == [{"url": CHANNEL, "valueCodeableConcept": concept(CHANNELS, "electronic")}]
    # the decision date is searchable with due
    assert _ids(app, f"Task?due={FRIDAY_DUE}") == [task["id"]]
    assert _ids(app, "Task?due=lt2026-12-29&status=requested") == [task["id"]]
    assert _ids(app, "Task?due=lt2026-12-28") == []


def test_self_referral_one_by_one_keeps_its_channel_and_referral_date(
    app: TestClient, acting: Acting
) -> None:
    # VI.D.5.b: the member refers themselves through the plan's member portal; the plan's
    # portal files the Task (a referral Task's requester is an organisation, Gravity §1.4)
    acting.as_(PLAN)
    referral = _referral(
        "REF-SELF-1",
        requester=MEMBER,
        source="self-referral",
        channel="member-portal",
    )
    request = ok(app.post("/fhir/ServiceRequest", json=referral), 201)
    channels = [e for e in request["extension"] if e["url"] == CHANNEL]
    assert _code(channels[0]["valueCodeableConcept"]) == "member-portal"
    task = ok(
        app.post(
            "/fhir/Task",
            json=_task(
                f"ServiceRequest/{request['id']}",
                requester="Organization/golden-poppy-health-plan",
                authoredOn="2026-12-17T15:00:00-08:00",
            ),
        ),
        201,
    )
    assert task["authoredOn"] == "2026-12-17T15:00:00-08:00"  # the referral date, as sent
    assert task["restriction"]["period"]["start"] == FRIDAY  # the received time
    assert _code(task["businessStatus"]) == "received"


def test_a_referral_put_in_a_transaction_gets_its_referral_date_like_a_post(
    app: TestClient, acting: Acting
) -> None:
    """A PUT that creates the referral Task inside a transaction, without ``authoredOn``: the
    received time (Friday 18 December 2026, 17:00 UTC), as a POST gets it."""
    acting.as_(CBO)
    referral = {**_referral("REF-PUT-1"), "id": "ref-put-1"}
    task = {**_task("ServiceRequest/ref-put-1"), "id": "ref-put-1"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": referral, "request": {"method": "PUT", "url": "ServiceRequest/ref-put-1"}},
        {"resource": task, "request": {"method": "PUT", "url": "Task/ref-put-1"}},
    ]}
    ok(app.post("/fhir", json=bundle), 200)
    stored = ok(app.get("/fhir/Task/ref-put-1"))
    assert stored["authoredOn"] == FRIDAY
    assert _code(stored["businessStatus"]) == "received"
    assert stored["restriction"]["period"] == {"start": FRIDAY, "end": FRIDAY_DUE}
    # and one by one: a REST PUT that creates
    ok(app.put("/fhir/ServiceRequest/ref-put-2",
                json={**_referral("REF-PUT-2"), "id": "ref-put-2"}), 201)
    created = ok(app.put("/fhir/Task/ref-put-2",
                          json={**_task("ServiceRequest/ref-put-2"), "id": "ref-put-2"}), 201)
    assert created["authoredOn"] == FRIDAY


def test_the_decision_date_skips_weekends_and_holidays(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    # received on Tuesday 22 December, 10:00 in California: + 5 business days on the federal
    # calendar: Wed 23 (1), Thu 24 (2), Fri 25 Christmas Day, Mon 28 (3), Tue 29 (4), Wed 30 (5)
    clock.set("2026-12-22T18:00:00Z")
    acting.as_(CBO)
    _, task = _submit(app, "REF-TUE-1")
    assert task["restriction"]["period"] == {
        "start": "2026-12-22T18:00:00.000000Z",
        "end": "2026-12-30",
    }
    # received on Thursday 31 December: Fri 1 January is New Year's Day, then Mon 4 (1),
    # Tue 5 (2), Wed 6 (3), Thu 7 (4), Fri 8 (5)
    clock.set("2026-12-31T18:00:00Z")
    _, task = _submit(app, "REF-THU-1", member=OTHER_MEMBER)
    assert task["restriction"]["period"]["end"] == "2027-01-08"


def test_the_receipt_date_is_the_california_date(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    # 06:30 UTC on Saturday 19 December is 22:30 on Friday 18 December in California
    clock.set("2026-12-19T06:30:00Z")
    acting.as_(CBO)
    _, task = _submit(app, "REF-LATE-1")
    assert task["restriction"]["period"]["end"] == FRIDAY_DUE


def test_the_plan_of_the_members_coverage_sets_the_decision_date(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(LOCAL)
    coverage = {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"reference": MEMBER},
        "payor": [{"reference": "Organization/golden-poppy-health-plan"}],
    }
    ok(app.post("/fhir/Coverage", json=coverage), 201)
    acting.as_(CBO)
    _, task = _submit(app, "REF-PLAN-1")
    # Golden Poppy: 2 business days, its holiday Mon 21: Tue 22 (1), Wed 23 (2)
    assert task["restriction"]["period"]["end"] == "2026-12-23"
    # a member without that Coverage, referred by the CBO: the default (5, federal calendar)
    _, other = _submit(app, "REF-PLAN-2", member=OTHER_MEMBER)
    assert other["restriction"]["period"]["end"] == FRIDAY_DUE


def test_the_plans_own_staff_get_their_plans_decision_date(
    app: TestClient, acting: Acting
) -> None:
    # no Coverage names a plan: the caller's organisation is the plan (VI.D.5.c, its care
    # coordination department entering a referral)
    acting.as_(PLAN)
    _, task = _submit(
        app,
        "REF-PLAN-3",
        requester="Organization/golden-poppy-health-plan",
        source="plan-care-coordination",
        channel="phone",
    )
    assert task["restriction"]["period"]["end"] == "2026-12-23"


def test_clients_do_not_move_the_decision_date(app: TestClient, acting: Acting) -> None:
    acting.as_(CBO)
    _, task = _submit(app, "REF-DATE-1")
    later = copy.deepcopy(task)
    later["restriction"]["period"]["end"] = "2027-01-30"
    body = outcome(app.put(f"/fhir/Task/{task['id']}", json=later), 422)
    assert expressions(body) == ["Task.restriction"]
    acting.as_(PLAN)
    body = outcome(app.put(f"/fhir/Task/{task['id']}", json=later), (403, 422))
    assert expressions(body) in (["Task.restriction"], ["Task.restriction"])


# -- 2. duplicates ---------------------------------------------------------------------------


def test_the_same_referral_sent_again_is_the_stored_one(app: TestClient, acting: Acting) -> None:
    acting.as_(CBO)
    request, task = _submit(app, "REF-SAME-1")
    # the transaction again: nothing new, both entries answer with the stored resources
    answer = ok(app.post("/fhir", json=_bundle("REF-SAME-1")), 200)
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["200 OK", "200 OK"]
    locations = [e["response"]["location"].split("/_history")[0] for e in answer["entry"]]
    assert locations == [f"ServiceRequest/{request['id']}", f"Task/{task['id']}"]
    # one by one, without If-None-Exist: the same
    again = app.post("/fhir/ServiceRequest", json=_referral("REF-SAME-1"))
    assert again.status_code == 200 and again.json()["id"] == request["id"]
    again = app.post("/fhir/Task", json=_task(f"ServiceRequest/{request['id']}"))
    assert again.status_code == 200 and again.json()["id"] == task["id"], again.text
    assert _ids(app, "ServiceRequest") == [request["id"]]
    assert _ids(app, "Task") == [task["id"]]


def test_another_referral_for_a_member_with_an_open_one_is_a_linked_duplicate(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    acting.as_(CBO)
    _, first = _submit(app, "REF-DUP-1")
    # the clinic refers the same member on Tuesday: created, linked, the clock not restarted
    clock.set("2026-12-22T18:00:00Z")
    acting.as_(CLINIC)
    request, second = _submit(
        app, "REF-DUP-2", requester="Organization/westside-family-clinic", source="provider"
    )
    assert second["id"] != first["id"]
    assert second["status"] == "requested"
    assert _code(second["businessStatus"]) == "duplicate"
    links = [e for e in second["extension"] if e["url"] == DUPLICATE_OF]
    assert links == [{"url": DUPLICATE_OF, "valueReference": {"reference": f"Task/{first['id']}"}}]
    assert second["restriction"]["period"] == {"start": FRIDAY, "end": FRIDAY_DUE}
    # a client neither unlinks it nor takes it in again
    body = outcome(
        app.put(
            f"/fhir/Task/{second['id']}",
            json={**second, "businessStatus": concept(REFERRAL_STATUS, "received")},
        ),
        422,
    )
    assert expressions(body) == ["Task.businessStatus"]
    # a client does not mark a referral duplicate itself
    acting.as_(LOCAL)
    other_request, other = _submit(app, "REF-DUP-3", member=OTHER_MEMBER)
    acting.as_(PLAN)
    body = outcome(
        app.put(
            f"/fhir/Task/{other['id']}",
            json={**other, "businessStatus": concept(REFERRAL_STATUS, "duplicate")},
        ),
        422,
    )
    assert expressions(body) == ["Task.businessStatus"]
    assert request["id"] != other_request["id"]


def test_one_transaction_takes_in_many_referrals_each_as_alone(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(CBO)
    sent = (("REF-MANY-1", MEMBER), ("REF-MANY-2", OTHER_MEMBER), ("REF-MANY-3", MEMBER))
    entries = [e for number, member in sent for e in _bundle(number, member=member)["entry"]]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    answer = ok(app.post("/fhir", json=bundle), 200)
    first, other, third = (
        ok(app.get("/fhir/" + e["response"]["location"].split("/_history")[0]))
        for e in answer["entry"][1::2]
    )
    # each acknowledged (VI.D.7.a), the decision date counted from the one received time
    for task in (first, other, third):
        assert task["status"] == "requested"
        assert task["lastModified"] == FRIDAY
        assert task["restriction"]["period"]["start"] == FRIDAY
    assert [_code(t["businessStatus"]) for t in (first, other)] == ["received", "received"]
    assert first["restriction"]["period"] == {"start": FRIDAY, "end": FRIDAY_DUE}
    # the member's second referral in the same transaction: linked to the first, its clock
    assert _code(third["businessStatus"]) == "duplicate"
    links = [e for e in third["extension"] if e["url"] == DUPLICATE_OF]
    assert links == [{"url": DUPLICATE_OF, "valueReference": {"reference": f"Task/{first['id']}"}}]
    assert third["restriction"]["period"] == first["restriction"]["period"]
    assert "extension" not in other or not any(
        e["url"] == DUPLICATE_OF for e in other["extension"]
    )


def test_once_the_open_referral_ended_a_new_one_is_not_a_duplicate(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(CBO)
    _, first = _submit(app, "REF-END-1")
    acting.as_(PLAN)
    ok(
        app.put(
            f"/fhir/Task/{first['id']}",
            json={
                **first,
                "status": "rejected",
                "statusReason": {"text": "Member already enrolled elsewhere"},
                "businessStatus": concept(REFERRAL_STATUS, "not-authorized"),
            },
        )
    )
    acting.as_(CBO)
    _, second = _submit(app, "REF-END-2")
    assert _code(second["businessStatus"]) == "received"
    assert not [e for e in second.get("extension") or () if e["url"] == DUPLICATE_OF]


# -- 3. returned for correction --------------------------------------------------------------


def _problems(*issues: tuple[str, str]) -> dict[str, Any]:
    return {
        "contained": [
            {
                "resourceType": "OperationOutcome",
                "id": "corrections",
                "issue": [
                    {
                        "severity": "error",
                        "code": "required",
                        "diagnostics": text,
                        "expression": [where],
                    }
                    for text, where in issues
                ],
            }
        ],
        "output": [
            {
                "type": concept(WORKFLOW, "correction-needed"),
                "valueReference": {"reference": "#corrections"},
            }
        ],
    }


def test_returned_for_correction_then_resubmitted(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    acting.as_(CBO)
    request, task = _submit(app, "REF-FIX-1")
    returned = concept(REFERRAL_STATUS, "returned-for-correction")
    # the referrer cannot return its own referral: that is the plan's (the owner's)
    body = outcome(
        app.put(f"/fhir/Task/{task['id']}", json={**task, "businessStatus": returned}), 403
    )
    assert expressions(body) == ["Task.businessStatus"]
    acting.as_(PLAN)
    # every problem is listed
    body = outcome(
        app.put(f"/fhir/Task/{task['id']}", json={**task, "businessStatus": returned}), 422
    )
    assert expressions(body) == ["Task.output"]
    problems = _problems(
        ("The member's phone number is missing", "ServiceRequest.subject"),
        ("The reason for referral has no narrative", "ServiceRequest.reasonCode[0].text"),
    )
    task = ok(
        app.put(
            f"/fhir/Task/{task['id']}", json={**task, "businessStatus": returned, **problems}
        )
    )
    assert task["status"] == "requested"  # a state of its own, not a denial
    assert _code(task["businessStatus"]) == "returned-for-correction"
    assert len(task["contained"][0]["issue"]) == 2
    # the referrer corrects the referral and resubmits the same one on Tuesday
    acting.as_(CBO)
    corrected = {**request, "note": [{"text": "Member phone: (707) 555-0199"}]}
    ok(app.put(f"/fhir/ServiceRequest/{request['id']}", json=corrected))
    clock.set("2026-12-22T18:00:00Z")
    resubmitted = ok(
        app.put(
            f"/fhir/Task/{task['id']}",
            json={**task, "businessStatus": concept(REFERRAL_STATUS, "received")},
        )
    )
    assert resubmitted["status"] == "requested"
    assert _code(resubmitted["businessStatus"]) == "received"
    assert "output" not in resubmitted and "contained" not in resubmitted
    assert resubmitted["lastModified"] == "2026-12-22T18:00:00.000000Z"
    # the decision date is counted again from the resubmission (the default)
    assert resubmitted["restriction"]["period"] == {
        "start": "2026-12-22T18:00:00.000000Z",
        "end": "2026-12-30",
    }
    # the problems stay in the history
    history = ok(app.get(f"/fhir/Task/{task['id']}/_history"))
    codes = [_code(e["resource"].get("businessStatus")) for e in history["entry"]]
    assert codes == ["received", "returned-for-correction", "received"]


def test_only_a_requested_referral_is_returned_for_correction(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(CBO)
    _, task = _submit(app, "REF-FIX-2")
    acting.as_(PLAN)
    accepted = ok(app.put(f"/fhir/Task/{task['id']}", json={**task, "status": "accepted"}))
    body = outcome(
        app.put(
            f"/fhir/Task/{task['id']}",
            json={
                **accepted,
                "businessStatus": concept(REFERRAL_STATUS, "returned-for-correction"),
                **_problems(("Missing consent", "ServiceRequest.supportingInfo")),
            },
        ),
        422,
    )
    assert expressions(body) == ["Task.businessStatus"]


# -- 4. screening ------------------------------------------------------------------------------

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "eligibility"
SCREEN_DEFINITION = (
    Path(__file__).resolve().parents[2]
    / "profiles"
    / "operations"
    / "OperationDefinition-Task-ecm-screen.json"
)


def _scenario_member(app: TestClient, name: str) -> str:
    """Load an eligibility scenario (examples/eligibility, its answer written by hand in the
    scenario table) as the operator; the member's reference."""
    bundle = json.loads((SCENARIOS / f"{name}.json").read_text())
    member = bundle["entry"][0]["resource"]
    assert member["resourceType"] == "Patient"
    # what an ECM member record carries besides (ecm-member: the CIN, an address)
    member["identifier"].append(
        {
            "system": "https://calaim-fhir.org/fhir/sid/medi-cal-cin",
            "type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MA"),
            "value": f"9{abs(hash(name)) % 10**7:07d}A",
        }
    )
    member["address"] = [{"city": "Eureka", "state": "CA", "postalCode": "95501"}]
    answer = ok(app.post("/fhir", json=bundle), 200)
    location = answer["entry"][0]["response"]["location"]
    assert location.startswith("Patient/")
    return "/".join(location.split("/")[:2])


def _screened_referral(app: TestClient, acting: Acting, scenario: str) -> dict[str, Any]:
    """The scenario's member referred by the CBO on the scenario's asOf (2024-10-15)."""
    acting.as_(LOCAL)
    member = _scenario_member(app, scenario)
    acting.as_(CBO)
    referral = _referral(f"REF-{scenario}", member=member)
    referral["authoredOn"] = "2024-10-15T10:00:00-07:00"
    request = ok(app.post("/fhir/ServiceRequest", json=referral), 201)
    return ok(app.post("/fhir/Task", json=_task(f"ServiceRequest/{request['id']}",
                                                 member=member)), 201)


def _screen(app: TestClient, task: dict[str, Any], *params: dict[str, Any]) -> Any:
    return app.post(
        f"/fhir/Task/{task['id']}/$ecm-screen",
        json={"resourceType": "Parameters", "parameter": list(params)},
    )


def _out(parameters: dict[str, Any]) -> dict[str, Any]:
    from tests.operation_output import check_output

    definition = json.loads(SCREEN_DEFINITION.read_text())
    assert check_output(definition, parameters) == []
    values: dict[str, Any] = {}
    for p in parameters["parameter"]:
        values[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return values


def test_screen_met_goes_on_to_authorization(app: TestClient, acting: Acting) -> None:
    # baseline-coverage-ends-on-asof: eligible on 2024-10-15 (justice-involved-adult met)
    task = _screened_referral(app, acting, "baseline-coverage-ends-on-asof")
    # the referrer does not screen: the plan's designated staff do (VI.D.6)
    body = outcome(_screen(app, task), 403)
    assert expressions(body) == ["Task.businessStatus"]
    acting.as_(PLAN)
    out = _out(ok(_screen(app, task), 200))
    assert (out["screen"], out["determination"], out["asOf"], out["decidedBy"]) == (
        "met", "eligible", "2024-10-15", "rules"
    )
    assert "alternative" not in out
    stored = ok(app.get(f"/fhir/Task/{task['id']}"))
    assert stored["status"] == "requested"
    assert _code(stored["businessStatus"]) == "pending"
    result = out["result"]["reference"]
    assert stored["output"] == [
        {
            "type": concept(WORKFLOW, "screening-result"),
            "valueReference": {"reference": result},
        }
    ]
    observation = ok(app.get(f"/fhir/{result}"))
    assert observation["meta"]["profile"] == [
        "http://calaim-fhir.org/fhir/StructureDefinition/ecm-screening-result"
    ]
    assert observation["valueCodeableConcept"] == concept(
        "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-determination", "eligible"
    )
    assert observation["effectiveDateTime"] == "2024-10-15"
    assert observation["performer"] == [{"reference": "Organization/golden-poppy-health-plan"}]
    pofs = {
        c["code"]["coding"][0]["code"]: c["valueCodeableConcept"]["coding"][0]["code"]
        for c in observation["component"]
    }
    assert pofs["justice-involved-adult"] == "met"
    # the evidence: the member's Coverage and custody episode, at least
    evidence = [r["reference"] for r in observation.get("derivedFrom") or ()] + [
        e["valueReference"]["reference"] for e in observation.get("extension") or ()
    ]
    assert any(r.startswith("Coverage/") for r in evidence)
    request = ok(app.get(f"/fhir/{task['focus']['reference']}"))
    assert {"reference": result} in request["supportingInfo"]


def test_screen_not_met_offers_care_coordination(app: TestClient, acting: Acting) -> None:
    # baseline-coverage-ended: the Medi-Cal Coverage ended 2024-09-30 -> not-eligible
    task = _screened_referral(app, acting, "baseline-coverage-ended")
    acting.as_(PLAN)
    out = _out(ok(_screen(app, task), 200))
    assert (out["screen"], out["determination"]) == ("not-met", "not-eligible")
    assert out["alternative"] == {"system": WORKFLOW, "code": "complex-case-management"}
    stored = ok(app.get(f"/fhir/Task/{task['id']}"))
    assert stored["status"] == "rejected"
    assert _code(stored["businessStatus"]) == "not-authorized"
    assert stored["statusReason"]["coding"] == [
        {"system": "http://calaim-fhir.org/fhir/CodeSystem/dhcs-loop-closure-reason",
         "code": "not-eligible"}
    ]
    assert "VI.D.8" in stored["statusReason"]["text"]
    alternatives = [
        o["valueCodeableConcept"] for o in stored["output"]
        if o["type"] == concept(WORKFLOW, "care-coordination-alternative")
    ]
    assert alternatives == [concept(WORKFLOW, "complex-case-management")]
    # a rejected referral is not screened again
    outcome(_screen(app, task), 409)


def test_a_person_decides_what_the_rules_cannot(app: TestClient, acting: Acting) -> None:
    # avoidable-utilization-adult-needs-attestation: needs-attestation on 2024-10-15
    task = _screened_referral(app, acting, "avoidable-utilization-adult-needs-attestation")
    acting.as_(PLAN)
    out = _out(ok(_screen(app, task), 200))
    assert (out["screen"], out["determination"]) == ("to-decide", "needs-attestation")
    assert _code(ok(app.get(f"/fhir/Task/{task['id']}"))["businessStatus"]) == "pending"
    # a decision without its reason is refused; with it, it is recorded
    decision = {"name": "decision", "valueCode": "screen-met"}
    body = outcome(_screen(app, task, decision), 400)
    assert expressions(body) == ["reason"]
    reason = {"name": "reason", "valueString": "Clinical review: frequent ED use avoidable"}
    out = _out(ok(_screen(app, task, decision, reason), 200))
    assert (out["screen"], out["determination"], out["decidedBy"]) == (
        "met", "needs-attestation", "person"
    )
    observation = ok(app.get(f"/fhir/{out['result']['reference']}"))
    assert observation["note"] == [{"text": "Clinical review: frequent ED use avoidable"}]
    assert {
        "code": concept(WORKFLOW, "screening-override"),
        "valueCodeableConcept": concept(WORKFLOW, "screen-met"),
    } in observation["component"]
    # an override without its reason cannot be stored by anyone (ecmscr-1)
    acting.as_(LOCAL)
    bare = {k: v for k, v in observation.items() if k not in ("id", "meta", "note")}
    body = outcome(app.post("/fhir/Observation", json=bare), 422)
    assert "ecmscr-1" in json.dumps(body)


def test_a_person_overrides_a_met_screen(app: TestClient, acting: Acting) -> None:
    task = _screened_referral(app, acting, "baseline-coverage-ends-on-asof")
    acting.as_(PLAN)
    out = _out(
        ok(
            _screen(
                app,
                task,
                {"name": "decision", "valueCode": "screen-not-met"},
                {"name": "reason", "valueString": "Member is in hospice (seed 003 VI.F.1.j)"},
                {"name": "alternative", "valueCode": "other-care-coordination"},
            ),
            200,
        )
    )
    assert (out["screen"], out["determination"], out["decidedBy"]) == (
        "not-met", "eligible", "person"
    )
    stored = ok(app.get(f"/fhir/Task/{task['id']}"))
    assert stored["status"] == "rejected"
    bad = _screen(app, task, {"name": "alternative", "valueCode": "hospice"})
    assert bad.status_code in (400, 409)


def _screenings(kind: str, *tasks: dict[str, Any]) -> dict[str, Any]:
    """A ``kind`` Bundle calling ``POST Task/[id]/$ecm-screen`` on each of ``tasks``."""
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "resource": {"resourceType": "Parameters", "parameter": []},
                "request": {"method": "POST", "url": f"Task/{task['id']}/$ecm-screen"},
            }
            for task in tasks
        ],
    }


def _observations(app: TestClient) -> list[str]:
    return _ids(app, "Observation?code=ecm-screening&_count=50")


def test_a_transaction_screens_many_referrals_together(app: TestClient, acting: Acting) -> None:
    # the same outcomes as one call each (the two tests above): met on 2024-10-15 for
    # baseline-coverage-ends-on-asof, not met for baseline-coverage-ended
    met = _screened_referral(app, acting, "baseline-coverage-ends-on-asof")
    not_met = _screened_referral(app, acting, "baseline-coverage-ended")
    acting.as_(PLAN)
    before = set(_observations(app))
    answer = ok(app.post("/fhir", json=_screenings("transaction", met, not_met)), 200)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["200 OK", "200 OK"]
    outs = [_out(e["resource"]) for e in answer["entry"]]
    assert [(o["screen"], o["determination"], o["asOf"]) for o in outs] == [
        ("met", "eligible", "2024-10-15"),
        ("not-met", "not-eligible", "2024-10-15"),
    ]
    assert [o["task"]["reference"] for o in outs] == [f"Task/{met['id']}", f"Task/{not_met['id']}"]
    stored = [ok(app.get(f"/fhir/Task/{t['id']}")) for t in (met, not_met)]
    assert [(t["status"], _code(t["businessStatus"])) for t in stored] == [
        ("requested", "pending"),
        ("rejected", "not-authorized"),
    ]
    assert set(_observations(app)) - before == {o["result"]["reference"].split("/")[1]
                                                for o in outs}
    for task, out in zip((met, not_met), outs, strict=True):
        request = ok(app.get(f"/fhir/{task['focus']['reference']}"))
        assert {"reference": out["result"]["reference"]} in request["supportingInfo"]
    # the screen not met tells the member and the referrer, as a call on its own does
    assert sorted(n["about"][0]["reference"] for n in _notices(app)) == [
        f"Task/{not_met['id']}"
    ] * 2


def test_a_transaction_of_screenings_is_all_or_nothing(app: TestClient, acting: Acting) -> None:
    first = _screened_referral(app, acting, "baseline-coverage-ends-on-asof")
    done = _screened_referral(app, acting, "baseline-coverage-ended")
    acting.as_(PLAN)
    ok(_screen(app, done), 200)  # rejected: not screened again
    before = _observations(app)
    body = outcome(app.post("/fhir", json=_screenings("transaction", first, done)), 409)
    assert expressions(body) == ["Bundle.entry[1].Task.businessStatus"]
    stored = ok(app.get(f"/fhir/Task/{first['id']}"))
    assert (stored["status"], _code(stored["businessStatus"])) == ("requested", "received")
    assert _observations(app) == before
    # bad inputs of one entry refuse the whole Bundle before anything runs
    bad = _screenings("transaction", first, first)
    bad["entry"][1]["resource"]["parameter"] = [{"name": "decision", "valueCode": "maybe"}]
    body = outcome(app.post("/fhir", json=bad), 400)
    assert expressions(body) == ["Bundle.entry[1].decision"]
    assert _observations(app) == before
    # the referrer does not screen (VI.D.6): refused, nothing written
    acting.as_(CBO)
    body = outcome(app.post("/fhir", json=_screenings("transaction", first)), 403)
    assert expressions(body) == ["Bundle.entry[0].Task.businessStatus"]
    assert _observations(app) == before


def test_a_batch_screens_each_referral_on_its_own(app: TestClient, acting: Acting) -> None:
    first = _screened_referral(app, acting, "baseline-coverage-ends-on-asof")
    done = _screened_referral(app, acting, "baseline-coverage-ended")
    acting.as_(PLAN)
    ok(_screen(app, done), 200)
    batch = _screenings("batch", done, first)
    batch["entry"].append(
        {
            "resource": {"resourceType": "Parameters", "parameter": [
                {"name": "decision", "valueCode": "screen-met"}]},
            "request": {"method": "POST", "url": f"Task/{first['id']}/$ecm-screen"},
        }
    )
    answer = ok(app.post("/fhir", json=batch), 200)
    assert answer["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in answer["entry"]]
    assert statuses == ["409", "200", "400"]
    issues = answer["entry"][2]["response"]["outcome"]["issue"]
    assert [e for i in issues for e in i["expression"]] == ["Bundle.entry[2].reason"]
    out = _out(answer["entry"][1]["resource"])
    assert (out["screen"], out["task"]) == ("met", {"reference": f"Task/{first['id']}"})
    assert _code(ok(app.get(f"/fhir/Task/{first['id']}"))["businessStatus"]) == "pending"


# -- 5. authorization --------------------------------------------------------------------------

AUTHORIZATION_PERIOD = "http://calaim-fhir.org/fhir/StructureDefinition/authorization-period"
AUTHORIZATION_DATE = "http://calaim-fhir.org/fhir/StructureDefinition/authorization-date"
TAR = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-tar"
AUTHORIZED_BY = "http://calaim-fhir.org/fhir/StructureDefinition/authorized-by"
PROVIDER = Principal("sierra-vista-app", allow_all=True,
                     organization="Organization/sierra-vista-ccp")


def _enrollment(status: str = "active", *, authorized: tuple[str, str] | None, **extra: Any
                ) -> dict[str, Any]:
    """The example enrollment (starting 2026-02-20) with another authorization."""
    body = example("EpisodeOfCare-ecm-enrollment-example")
    for element in ("id", "identifier", "referralRequest"):
        body.pop(element)
    body["extension"] = [
        e for e in body["extension"]
        if e["url"] not in (AUTHORIZATION_PERIOD, AUTHORIZATION_DATE, AUTHORIZED_BY)
    ]
    if authorized is not None:
        body["extension"].append(
            {"url": AUTHORIZATION_PERIOD,
             "valuePeriod": {"start": authorized[0], "end": authorized[1]}}
        )
    body["status"] = status
    body.update(extra)
    return body


def _tar(outcome_code: str = "complete", use: str = "preauthorization") -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
        "use": use,
        "patient": {"reference": MEMBER},
        "created": "2026-02-18T10:00:00-08:00",
        "insurer": {"reference": "Organization/golden-poppy-health-plan"},
        "outcome": outcome_code,
        "preAuthRef": "TAR-2026-000201",
        "preAuthPeriod": {"start": "2026-02-20", "end": "2026-08-19"},
    }


def _date_of(episode: dict[str, Any]) -> Any:
    found = [e["valueDate"] for e in episode.get("extension") or ()
             if e["url"] == AUTHORIZATION_DATE]
    return found[0] if found else None


def test_an_enrollment_is_active_only_within_an_authorization(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(PLAN)
    # authorized 2026-02-20 .. 2026-08-19, active from 2026-02-20: in force
    created = ok(
        app.post("/fhir/EpisodeOfCare",
                 json=_enrollment(authorized=("2026-02-20", "2026-08-19"))), 201
    )
    # no TAR: the authorization date is the start of the first active period (period.start)
    assert _date_of(created) == "2026-02-20"
    # an authorization that starts after the enrollment does: not in force on 2026-02-20
    body = outcome(
        app.post("/fhir/EpisodeOfCare",
                 json=_enrollment(authorized=("2026-03-01", "2026-08-31"))), 422
    )
    assert expressions(body) == ["EpisodeOfCare.status"]
    # one that ended before: neither
    body = outcome(
        app.post("/fhir/EpisodeOfCare",
                 json=_enrollment(authorized=("2025-08-01", "2026-01-31"))), 422
    )
    assert expressions(body) == ["EpisodeOfCare.status"]


def test_planned_then_active_when_authorized(app: TestClient, acting: Acting) -> None:
    acting.as_(PLAN)
    planned = ok(app.post("/fhir/EpisodeOfCare",
                           json=_enrollment("planned", authorized=None)), 201)
    assert _date_of(planned) is None  # not authorized yet
    history = [
        {"status": "planned", "period": {"start": "2026-02-20", "end": "2026-03-01"}},
        {"status": "active", "period": {"start": "2026-03-02"}},
    ]
    # active from 2026-03-02 under an authorization that ended on 2026-02-28: refused
    late = {**planned, "status": "active", "statusHistory": history}
    late["extension"] = [*planned["extension"], {
        "url": AUTHORIZATION_PERIOD, "valuePeriod": {"start": "2025-09-01", "end": "2026-02-28"}
    }]
    outcome(app.put(f"/fhir/EpisodeOfCare/{planned['id']}", json=late), 422)
    good = {**late, "extension": [*planned["extension"], {
        "url": AUTHORIZATION_PERIOD, "valuePeriod": {"start": "2026-03-02", "end": "2026-09-01"}
    }]}
    active = ok(app.put(f"/fhir/EpisodeOfCare/{planned['id']}", json=good))
    assert active["status"] == "active"
    assert _date_of(active) == "2026-03-02"  # the first active status period's start


def test_a_tar_authorizes_and_dates_the_enrollment(app: TestClient, acting: Acting) -> None:
    acting.as_(PLAN)
    tar = ok(app.post("/fhir/ClaimResponse", json=_tar()), 201)
    enrollment = _enrollment(authorized=("2026-02-20", "2026-08-19"))
    enrollment["extension"].append(
        {"url": TAR, "valueReference": {"reference": f"ClaimResponse/{tar['id']}"}}
    )
    created = ok(app.post("/fhir/EpisodeOfCare", json=enrollment), 201)
    # with a TAR the authorization date is ClaimResponse.created (2026-02-18 in California)
    assert _date_of(created) == "2026-02-18"
    # a client's authorization date is replaced by the server's
    forged = copy.deepcopy(created)
    for e in forged["extension"]:
        if e["url"] == AUTHORIZATION_DATE:
            e["valueDate"] = "2026-01-01"
    again = ok(app.put(f"/fhir/EpisodeOfCare/{created['id']}", json=forged))
    assert _date_of(again) == "2026-02-18"


def _by(episode: dict[str, Any]) -> Any:
    found = [e["valueReference"]["reference"] for e in episode.get("extension") or ()
             if e["url"] == AUTHORIZED_BY]
    assert len(found) <= 1
    return found[0] if found else None


def test_the_authorizer_is_recorded_with_or_without_a_tar(
    app: TestClient, acting: Acting
) -> None:
    """VI.D.8 (the plan's review and approval): who authorized is kept with the date."""
    acting.as_(PLAN)
    tar = ok(app.post("/fhir/ClaimResponse", json=_tar()), 201)
    # the ECM provider records the enrollment under the plan's TAR: the TAR's insurer authorized
    acting.as_(PROVIDER)
    enrollment = _enrollment(authorized=("2026-02-20", "2026-08-19"))
    enrollment["extension"].append(
        {"url": TAR, "valueReference": {"reference": f"ClaimResponse/{tar['id']}"}})
    assert _by(ok(app.post("/fhir/EpisodeOfCare", json=enrollment), 201)) == (
        "Organization/golden-poppy-health-plan")
    # no TAR: the plan's staff authorize it themselves: the caller's organisation
    acting.as_(PLAN)
    planned = ok(app.post("/fhir/EpisodeOfCare",
                           json=_enrollment("planned", authorized=None)), 201)
    assert _by(planned) is None  # not authorized yet: nobody authorized it
    active = {**planned, "status": "active", "extension": [*planned["extension"], {
        "url": AUTHORIZATION_PERIOD, "valuePeriod": {"start": "2026-02-20", "end": "2026-08-19"}
    }]}
    active = ok(app.put(f"/fhir/EpisodeOfCare/{planned['id']}", json=active))
    assert _by(active) == "Organization/golden-poppy-health-plan"
    # the provider's later update (without the extension) keeps who authorized it
    acting.as_(PROVIDER)
    later = {**active, "extension": [e for e in active["extension"]
                                     if e["url"] != AUTHORIZED_BY]}
    assert _by(ok(app.put(f"/fhir/EpisodeOfCare/{planned['id']}", json=later))) == (
        "Organization/golden-poppy-health-plan")
    # a named authorizer (the plan's medical director) is kept as named
    named = _enrollment(authorized=("2026-02-20", "2026-08-19"))
    named["extension"].append({"url": AUTHORIZED_BY, "valueReference": {
        "reference": "Practitioner/lead-care-manager-okafor"}})
    acting.as_(PLAN)
    assert _by(ok(app.post("/fhir/EpisodeOfCare", json=named), 201)) == (
        "Practitioner/lead-care-manager-okafor")


@pytest.mark.parametrize(
    "tar, why",
    [
        ({"outcome": "error"}, "not approved"),
        ({"use": "claim"}, "not a preauthorization"),
        ({"patient": {"reference": OTHER_MEMBER}}, "another member"),
    ],
)
def test_a_tar_that_does_not_authorize_is_refused(
    app: TestClient, acting: Acting, tar: dict[str, Any], why: str
) -> None:
    acting.as_(PLAN)
    stored = ok(app.post("/fhir/ClaimResponse", json={**_tar(), **tar}), 201)
    enrollment = _enrollment(authorized=("2026-02-20", "2026-08-19"))
    enrollment["extension"].append(
        {"url": TAR, "valueReference": {"reference": f"ClaimResponse/{stored['id']}"}}
    )
    body = outcome(app.post("/fhir/EpisodeOfCare", json=enrollment), 422)
    assert expressions(body) == ["EpisodeOfCare.extension"]
    assert why in json.dumps(body)


# -- 7. notices ----------------------------------------------------------------------------------

NOTICE_CATEGORY = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-workflow|ecm-notice"


def _notices(app: TestClient) -> list[dict[str, Any]]:
    bundle = ok(app.get(f"/fhir/Communication?category={NOTICE_CATEGORY}&_count=50"))
    return [e["resource"] for e in bundle.get("entry") or ()]


def test_not_authorized_tells_member_and_referrer_why(app: TestClient, acting: Acting) -> None:
    task = _screened_referral(app, acting, "baseline-coverage-ended")
    assert _notices(app) == []  # received: nobody is notified yet
    acting.as_(PLAN)
    ok(_screen(app, task), 200)
    notices = {n["recipient"][0]["reference"]: n for n in _notices(app)}
    assert sorted(notices) == sorted([task["for"]["reference"], task["requester"]["reference"]])
    for notice in notices.values():
        assert notice["reasonCode"][0]["coding"][0]["code"] == "not-authorized"
        assert notice["about"][0] == {"reference": f"Task/{task['id']}"}
        assert notice["sent"] and "received" not in notice
        assert "Initial screening not met" in notice["payload"][0]["contentString"]
    # the referrer electronically (DHCS: fax does not count)
    referrer = notices[task["requester"]["reference"]]
    assert referrer["medium"][0]["coding"][0]["code"] == "ELECTRONIC"


def test_authorized_names_the_assigned_provider(app: TestClient, acting: Acting) -> None:
    acting.as_(CBO)
    request, task = _submit(app, "REF-NOTICE-1")
    acting.as_(PLAN)
    enrollment = _enrollment(authorized=("2026-02-20", "2026-08-19"))
    enrollment["referralRequest"] = [{"reference": f"ServiceRequest/{request['id']}"}]
    ok(app.post("/fhir/EpisodeOfCare", json=enrollment), 201)
    ok(
        app.put(
            f"/fhir/Task/{task['id']}",
            json={**task, "status": "accepted",
                  "businessStatus": concept(REFERRAL_STATUS, "authorized")},
        )
    )
    notices = _notices(app)
    assert len(notices) == 2
    for notice in notices:
        assert notice["reasonCode"][0]["coding"][0]["code"] == "authorized"
        assert "Sierra Vista" in notice["payload"][0]["contentString"]
    # a notice is sent once: the same status again says nothing new
    stored = ok(app.get(f"/fhir/Task/{task['id']}"))
    ok(app.put(f"/fhir/Task/{task['id']}", json={**stored, "note": [{"text": "called"}]}))
    assert len(_notices(app)) == 2


# -- 6. continuity of care (seed 003 VI.G.3) -------------------------------------------------------
#
# The member joins Golden Poppy on Sunday 1 March 2026. VI.G.3.a: "in receipt of ECM within the
# previous 6 months of their assignment": 1 September 2025 .. 28 February 2026. VI.G.3.e: "up to
# six (6) months": 1 March .. 31 August 2026 (Golden Poppy configures no shorter length), the
# reassessment due on 31 August 2026. VI.G.3.c: the existing provider is kept "if ... part of
# Partnership's ECM network or agrees to a letter of agreement" — recorded as HealthcareServices
# (docs/ecm-workflow.md §8, "The inputs, as recorded"), the letter in force on the plan start
# (§6): Sierra Vista provides the example's active ECM service (a contract); Casa Segura provides
# only a Community Supports service, plus, where a scenario says so, an ECM service under a
# letter of agreement; Westside Family Clinic provides none.

PLAN_ORG = "Organization/golden-poppy-health-plan"
CONTINUITY = "http://calaim-fhir.org/fhir/StructureDefinition/continuity-of-care"
COC_PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-continuity-authorization"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOA = "http://calaim-fhir.org/fhir/StructureDefinition/letter-of-agreement"
REASSESSMENT = f"{WORKFLOW}|ecm-reassessment"
# Monday 2 March 2026, 09:00 in California: the day after the plan start
MARCH_2 = "2026-03-02T17:00:00.000000Z"


def _coverage(start: str, end: str | None = None, payor: str = PLAN_ORG) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"reference": MEMBER},
        "payor": [{"reference": payor}],
        "period": period,
    }


def _prior_enrollment(start: str, provider: str) -> dict[str, Any]:
    """The member's ongoing ECM enrollment in the previous plan (its record on this server)."""
    body = _enrollment(authorized=(start, "2026-06-30"))
    body["period"] = {"start": start}
    body["managingOrganization"] = {"reference": provider}
    return body


def _ecm_claim(served: str, provider: str, code: str = "G9012") -> dict[str, Any]:
    """A fee-for-service claim for an ECM service line."""
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
        "use": "claim",
        "patient": {"reference": MEMBER},
        "created": served,
        "provider": {"reference": provider},
        "priority": concept("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
        "insurance": [{"sequence": 1, "focal": True,
                       "coverage": {"display": "Medi-Cal fee-for-service"}}],
        "item": [{"sequence": 1, "productOrService": concept(HCPCS, code),
                  "servicedDate": served}],
    }


def _ecm_service(id: str, provider: str, loa: dict[str, str] | None = None) -> dict[str, Any]:
    """An active ECM HealthcareService of ``provider`` (the example's shape), under a letter of
    agreement over ``loa`` when given."""
    body = copy.deepcopy(example("HealthcareService-ecm-provider-service-example"))
    body.pop("identifier")
    body.update(id=id, name=f"{provider} ECM", providedBy={"reference": provider})
    if loa is not None:
        body["extension"].append({"url": LOA, "valuePeriod": loa})
    return body


def _joining(app: TestClient, acting: Acting, clock: Clock) -> None:
    """2 March 2026; the examples of the member's enrollment (Golden Poppy's own, from
    2026-02-20) and of an earlier transition removed: the member's history on this server is
    what each scenario writes."""
    clock.set(MARCH_2)
    acting.as_(LOCAL)
    for ref in ("EpisodeOfCare/ecm-enrollment-example",
                "ClaimResponse/ecm-continuity-authorization-example",
                "Claim/ecm-service-claim-example"):
        ok(app.delete(f"/fhir/{ref}"), (200, 204))


def _enrolled_before(app: TestClient, acting: Acting, clock: Clock) -> dict[str, Any]:
    """``_joining``, and the member enrolled in ECM with Sierra Vista by the previous plan
    since 15 October 2025, ongoing."""
    _joining(app, acting, clock)
    return ok(app.post("/fhir/EpisodeOfCare", json=_prior_enrollment(
        "2025-10-15", "Organization/sierra-vista-ccp")), 201)


def _authorizations(app: TestClient) -> list[dict[str, Any]]:
    bundle = ok(app.get(f"/fhir/ClaimResponse?patient={MEMBER}&use=preauthorization"))
    return [e["resource"] for e in bundle.get("entry") or ()]


def _reassessments(app: TestClient, due: str = "") -> list[dict[str, Any]]:
    bundle = ok(app.get(f"/fhir/Task?code={REASSESSMENT}{due}"))
    return [e["resource"] for e in bundle.get("entry") or ()]


def _parts(claim: dict[str, Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for e in claim["extension"]:
        if e["url"] == CONTINUITY:
            for part in e["extension"]:
                value = part.get("valueReference", {}).get("reference") or part.get("valueCode")
                found.setdefault(part["url"], []).append(value)
    return found


def test_a_member_joining_with_an_ecm_enrollment_is_authorized_for_six_months(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    prior = _enrolled_before(app, acting, clock)
    acting.as_(PLAN)
    ok(app.post("/fhir/Coverage", json=_coverage("2026-03-01")), 201)
    [claim] = _authorizations(app)
    assert claim["meta"]["profile"] == [COC_PROFILE]
    assert claim["use"] == "preauthorization" and claim["outcome"] == "complete"
    assert claim["insurer"] == {"reference": PLAN_ORG}
    assert claim["preAuthPeriod"] == {"start": "2026-03-01", "end": "2026-08-31"}
    # Sierra Vista provides an active ECM service (a contract): kept (VI.G.3.c)
    assert claim["requestor"] == {"reference": "Organization/sierra-vista-ccp"}
    assert _parts(claim) == {
        "evidence": [f"EpisodeOfCare/{prior['id']}"],
        "priorProvider": ["Organization/sierra-vista-ccp"],
        "providerBasis": ["in-network"],
    }
    assert "VI.G.3" in claim["disposition"]
    assert f"EpisodeOfCare/{prior['id']}" in claim["disposition"]
    # flagged for reassessment by the end (VI.G.3.e): due 31 August 2026
    [task] = _reassessments(app, "&due=le2026-08-31")
    assert _reassessments(app, "&due=lt2026-08-31") == []
    assert task["status"] == "requested" and task["owner"] == {"reference": PLAN_ORG}
    assert task["focus"] == {"reference": f"ClaimResponse/{claim['id']}"}
    assert task["restriction"]["period"] == {"start": "2026-03-01", "end": "2026-08-31"}
    # the same Coverage written again authorizes nothing more
    [coverage] = [e["resource"] for e in
                  ok(app.get(f"/fhir/Coverage?beneficiary={MEMBER}"))["entry"]]
    ok(app.put(f"/fhir/Coverage/{coverage['id']}", json={**coverage, "status": "active",
                                                            "period": {"start": "2026-03-01"}}))
    assert len(_authorizations(app)) == 1 and len(_reassessments(app)) == 1
    # the enrollment with the provider's lead care manager runs under it (its ecm-tar): in
    # force from 1 March, authorization date its created date (2 March in California)
    enrollment = _enrollment(authorized=("2026-03-01", "2026-08-31"),
                             period={"start": "2026-03-01"})
    enrollment["extension"].append(
        {"url": TAR, "valueReference": {"reference": f"ClaimResponse/{claim['id']}"}})
    created = ok(app.post("/fhir/EpisodeOfCare", json=enrollment), 201)
    assert _date_of(created) == "2026-03-02"


CASA = "Organization/casa-segura-housing"


@pytest.mark.parametrize(
    "served, provider, loa, authorized, kept",
    [
        # the first day of the window, a provider under a letter of agreement holding the plan
        # start: kept
        ("2025-09-01", CASA, {"start": "2025-09-01", "end": "2026-08-31"}, True,
         "letter-of-agreement"),
        # the letter's last day is the plan start, or it has no end: kept
        ("2026-01-10", CASA, {"start": "2025-09-01", "end": "2026-03-01"}, True,
         "letter-of-agreement"),
        ("2026-01-10", CASA, {"start": "2026-03-01"}, True, "letter-of-agreement"),
        # the letter ended the day before the plan start, or begins the day after: not kept
        ("2026-01-10", CASA, {"start": "2025-09-01", "end": "2026-02-28"}, True, None),
        ("2026-01-10", CASA, {"start": "2026-03-02", "end": "2026-08-31"}, True, None),
        # Casa Segura's only service is Community Supports: not in the ECM network
        ("2026-01-10", CASA, None, True, None),
        # the last day of the window, a provider with no ECM service: authorized, not kept
        ("2026-02-28", "Organization/westside-family-clinic", None, True, None),
        # the day before the window: no continuity of care
        ("2025-08-31", "Organization/sierra-vista-ccp", None, False, None),
    ],
)
def test_ecm_claims_within_six_months_before_the_plan_start_authorize(
    app: TestClient, acting: Acting, clock: Clock, served: str, provider: str,
    loa: dict[str, str] | None, authorized: bool, kept: str | None
) -> None:
    _joining(app, acting, clock)
    if loa is not None:
        ok(app.put("/fhir/HealthcareService/casa-ecm-loa",
                    json=_ecm_service("casa-ecm-loa", provider, loa)), 201)
    claim = ok(app.post("/fhir/Claim", json=_ecm_claim(served, provider)), 201)
    ok(app.post("/fhir/Coverage", json=_coverage("2026-03-01")), 201)
    found = _authorizations(app)
    if not authorized:
        assert found == [] and _reassessments(app) == []
        return
    [auth] = found
    assert auth["preAuthPeriod"] == {"start": "2026-03-01", "end": "2026-08-31"}
    parts = _parts(auth)
    assert parts["evidence"] == [f"Claim/{claim['id']}"]
    assert parts["priorProvider"] == [provider]
    if kept:
        assert parts["providerBasis"] == [kept]
        assert auth["requestor"] == {"reference": provider}
    else:
        assert "providerBasis" not in parts and "requestor" not in auth
        assert "in-network provider is to be assigned" in auth["disposition"]


def test_an_explanation_of_benefit_is_evidence_and_other_programmes_are_not(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    _joining(app, acting, clock)
    # a Specialty Mental Health episode in the window is not ECM (VI.G.3.a "in receipt of ECM")
    smhs = ok(app.post("/fhir/EpisodeOfCare", json={
        "resourceType": "EpisodeOfCare", "status": "active",
        "type": [concept("http://calaim-fhir.org/fhir/CodeSystem/ecm-program", "smhs")],
        "patient": {"reference": MEMBER}, "period": {"start": "2025-11-01"},
        "managingOrganization": {"reference": "Organization/sierra-vista-ccp"}}), 201)
    claim = _ecm_claim("2026-02-01", "Organization/sierra-vista-ccp")
    eob = {
        **{k: claim[k] for k in ("status", "type", "use", "patient", "created", "provider",
                                 "item")},
        "resourceType": "ExplanationOfBenefit",
        "insurance": [{"focal": True, "coverage": {"display": "Medi-Cal fee-for-service"}}],
        "insurer": {"display": "Medi-Cal fee-for-service"},
        "outcome": "complete",
    }
    found = ok(app.post("/fhir/ExplanationOfBenefit", json=eob), 201)
    ok(app.post("/fhir/Coverage", json=_coverage("2026-03-01")), 201)
    [auth] = _authorizations(app)
    # the ECM line of 1 February 2026 only; Sierra Vista (a contract) kept
    assert _parts(auth) == {"evidence": [f"ExplanationOfBenefit/{found['id']}"],
                            "priorProvider": ["Organization/sierra-vista-ccp"],
                            "providerBasis": ["in-network"]}
    assert f"EpisodeOfCare/{smhs['id']}" not in auth["disposition"]


def test_a_provider_whose_ecm_service_is_inactive_is_not_kept(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    prior = _enrolled_before(app, acting, clock)
    service = ok(app.get("/fhir/HealthcareService/ecm-provider-service-example"))
    ok(app.put("/fhir/HealthcareService/ecm-provider-service-example",
                json={**service, "active": False}))
    acting.as_(PLAN)
    ok(app.post("/fhir/Coverage", json=_coverage("2026-03-01")), 201)
    [claim] = _authorizations(app)
    # still authorized from the prior enrollment (VI.G.3.a); Sierra Vista named, not kept
    assert _parts(claim) == {"evidence": [f"EpisodeOfCare/{prior['id']}"],
                             "priorProvider": ["Organization/sierra-vista-ccp"]}
    assert "requestor" not in claim


def test_a_member_who_stays_with_the_plan_is_not_transitioning(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    _joining(app, acting, clock)
    ok(app.post("/fhir/Claim",
                 json=_ecm_claim("2026-01-15", "Organization/sierra-vista-ccp")), 201)
    # Golden Poppy's member through 28 February already: the new year's Coverage is a renewal
    ok(app.post("/fhir/Coverage", json=_coverage("2025-01-01", "2026-02-28")), 201)
    assert len(_authorizations(app)) == 0  # joined 2025-01-01: no ECM in the 6 months before
    ok(app.post("/fhir/Coverage", json=_coverage("2026-03-01")), 201)
    assert _authorizations(app) == []
    # another plan's Coverage the day before does not make it a renewal
    ok(app.post("/fhir/Coverage",
                 json=_coverage("2026-04-01", payor="Organization/casa-segura-housing")), 201)
    assert [c["insurer"]["reference"] for c in _authorizations(app)] == [
        "Organization/casa-segura-housing"
    ]


def test_a_referral_of_a_transitioning_member_is_authorized_at_intake(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    _joining(app, acting, clock)
    acting.as_(PLAN)
    ok(app.post("/fhir/Coverage", json=_coverage("2026-03-01")), 201)
    assert _authorizations(app) == []  # no evidence on this server yet
    acting.as_(LOCAL)
    claim = ok(app.post("/fhir/Claim",
                         json=_ecm_claim("2026-02-10", "Organization/sierra-vista-ccp")), 201)
    # the member asks for continued ECM (VI.G.3.b) through a referral
    acting.as_(CBO)
    request, task = _submit(app, "REF-COC-1")
    [auth] = _authorizations(app)
    assert _parts(auth)["evidence"] == [f"Claim/{claim['id']}"]
    assert auth["preAuthPeriod"] == {"start": "2026-03-01", "end": "2026-08-31"}
    # the referral: acknowledged (its history), then accepted and authorized by the plan
    assert task["status"] == "accepted"
    assert _code(task["businessStatus"]) == "authorized"
    assert {"reference": f"ClaimResponse/{auth['id']}"} in [
        o.get("valueReference") for o in task["output"]]
    history = ok(app.get(f"/fhir/Task/{task['id']}/_history"))
    statuses = sorted(_code(e["resource"]["businessStatus"]) or "" for e in history["entry"])
    assert statuses == ["authorized", "received"]
    # member and referrer are told (ecm-notice, authorized)
    notices = _notices(app)
    assert sorted(n["recipient"][0]["reference"] for n in notices) == sorted(
        [MEMBER, "Organization/casa-segura-housing"])
    assert all(n["reasonCode"][0]["coding"][0]["code"] == "authorized" for n in notices)
    # Sierra Vista (in network) is kept: the notices name it (VI.G.3.c)
    assert all("Assigned provider: Sierra Vista" in n["payload"][0]["contentString"]
               for n in notices)
    assert len(_reassessments(app, "&due=eq2026-08-31")) == 1
    # not screened: an authorized referral is not requested any more
    acting.as_(PLAN)
    outcome(_screen(app, task), 409)
    # a second referral of the member is a duplicate of the open one: nothing more authorized
    acting.as_(CLINIC)
    _, second = _submit(app, "REF-COC-2", requester="Organization/westside-family-clinic")
    assert _code(second["businessStatus"]) == "duplicate"
    assert len(_authorizations(app)) == 1


def test_evidence_written_after_the_coverage_in_one_transaction_counts_at_its_intake(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    """The Coverage is checked before the claim is written (no evidence then); the referral
    Task later in the same transaction sees the claim (VI.G.3.a) and is authorized."""
    _joining(app, acting, clock)
    bundle = _bundle("REF-COC-ONE")
    bundle["entry"][:0] = [
        {"resource": _coverage("2026-03-01"), "request": {"method": "POST", "url": "Coverage"}},
        {"resource": _ecm_claim("2026-02-10", "Organization/sierra-vista-ccp"),
         "request": {"method": "POST", "url": "Claim"}},
    ]
    answer = ok(app.post("/fhir", json=bundle), 200)
    claim_url, task_url = (answer["entry"][i]["response"]["location"] for i in (1, 3))
    [auth] = _authorizations(app)
    assert _parts(auth)["evidence"] == [claim_url.split("/_history")[0]]
    assert auth["preAuthPeriod"] == {"start": "2026-03-01", "end": "2026-08-31"}
    task = ok(app.get("/fhir/" + task_url.split("/_history")[0]))
    assert task["status"] == "accepted"
    assert _code(task["businessStatus"]) == "authorized"
    assert len(_reassessments(app, "&due=eq2026-08-31")) == 1


def test_a_continuity_authorization_lasts_up_to_six_months(
    app: TestClient, acting: Acting, clock: Clock
) -> None:
    prior = _enrolled_before(app, acting, clock)
    body = {
        "resourceType": "ClaimResponse",
        "meta": {"profile": [COC_PROFILE]},
        "extension": [{"url": CONTINUITY, "extension": [
            {"url": "evidence", "valueReference": {"reference": f"EpisodeOfCare/{prior['id']}"}}]}],
        "status": "active",
        "type": concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
        "use": "preauthorization",
        "patient": {"reference": MEMBER},
        "created": "2026-03-02T09:00:00-08:00",
        "insurer": {"reference": PLAN_ORG},
        "outcome": "complete",
        "preAuthPeriod": {"start": "2026-03-01", "end": "2026-09-01"},
    }
    refused = outcome(app.post("/fhir/ClaimResponse", json=body), 422)
    assert expressions(refused) == ["ClaimResponse.preAuthPeriod.end"]
    assert "VI.G.3" in json.dumps(refused)
    body["preAuthPeriod"]["end"] = "2026-08-31"
    ok(app.post("/fhir/ClaimResponse", json=body), 201)
    # a kept provider without saying why (ecmcoc-1)
    body["requestor"] = {"reference": "Organization/sierra-vista-ccp"}
    outcome(app.post("/fhir/ClaimResponse", json=body), 422)
