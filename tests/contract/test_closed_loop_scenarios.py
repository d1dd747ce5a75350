"""Closed-loop referral scenarios over HTTP on both stores, with the project's profiled ECM and
Community Supports examples (``examples/resources``): the referrer's organisation (Sierra Vista,
through its lead care manager's PractitionerRole) refers a member to a Community Supports
provider (Casa Segura), which works the referral and closes the loop.

Expectations are written by hand from Gravity SDOHCC (standards.md §1.5, §1.7) and the DHCS
closed-loop referral rules (§2.2); principals are injected through ``create_app``.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.auth.principal import LOCAL, Principal
from tests.support import Acting, TestClient, clear_store, expressions, outcome

PLATFORM_ORGANIZATION = "Organization/bay-connect"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "resources"
REFERRER = Principal("svccp-app", allow_all=True, organization="Organization/sierra-vista-ccp")
CARE_MANAGER = Principal("svccp-app", allow_all=True, user="Practitioner/lead-care-manager-okafor")
PROVIDER = Principal("casa-app", allow_all=True, organization="Organization/casa-segura-housing")
CLINIC = Principal("clinic-app", allow_all=True, organization="Organization/westside-family-clinic")
SOBERING = Principal("sobering-app", allow_all=True, organization="Organization/harbor-sobering")
PLAN = Principal("plan-app", allow_all=True, organization="Organization/golden-poppy-health-plan")
HUB = Principal("hub-app", allow_all=True, organization="Organization/bay-connect")
PANTRY = Principal("pantry-app", allow_all=True, organization="Organization/valley-pantry")

CLOSURE = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-loop-closure-reason"
REFERRAL_STATUS = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-referral-status"
ACTIVITY_TYPE = {
    "coding": [
        {
            "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
            "SDOHCC-CodeSystemTemporaryCodes",
            "code": "resulting-activity",
        }
    ]
}


def _example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return body


def _ok(response: Any, status: int | tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    wanted = (status,) if isinstance(status, int) else status
    assert response.status_code in wanted, f"{response.status_code} {response.text[:600]}"
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def app(acting_client: TestClient, database_url: str, acting: Acting) -> Iterator[TestClient]:
    """The examples loaded (but their Tasks) and a sobering center."""
    clear_store(database_url)
    acting.as_(LOCAL)
    entries = [
        {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        for resource in (json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json")))
        if resource["resourceType"] != "Task"
    ]
    for id, name in (
        ("harbor-sobering", "Harbor Sobering Center"),
        ("bay-connect", "Bay Connect coordination platform"),
        ("valley-pantry", "Valley Community Pantry"),
    ):
        entries.append(
            {
                "resource": {"resourceType": "Organization", "id": id, "name": name},
                "request": {"method": "PUT", "url": f"Organization/{id}"},
            }
        )
    _ok(
        acting_client.post(
            "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )
    )
    yield acting_client
    acting.as_(LOCAL)


def _referral_task(**extra: Any) -> dict[str, Any]:
    """The Casa Segura referral Task as the referrer posts it: requested, no outcome yet."""
    body = _example("Task-cs-referral-task-example")
    for element in ("id", "statusReason", "output", "lastModified", "identifier"):
        body.pop(element, None)
    body.update(
        status="requested",
        businessStatus={"coding": [{"system": REFERRAL_STATUS, "code": "received"}]},
    )
    body.update(extra)
    return body


def _put(app: TestClient, task: dict[str, Any], **changes: Any) -> Any:
    return app.put(f"/fhir/Task/{task['id']}", json={**task, **changes})


def _end(app: TestClient, task: dict[str, Any], status: str, code: str, text: str) -> Any:
    """Move ``task`` to ``status`` with a Reason for Referral Loop Closure."""
    return _put(app, task, status=status, statusReason=_reason(code, text))


def _reason(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": CLOSURE, "code": code}], "text": text}


def _status(code: str) -> dict[str, Any]:
    return {"coding": [{"system": REFERRAL_STATUS, "code": code}]}


def _requested(app: TestClient, acting: Acting, **extra: Any) -> dict[str, Any]:
    acting.as_(REFERRER)
    return _ok(app.post("/fhir/Task", json=_referral_task(**extra)), 201)


# -- the loop closed -----------------------------------------------------------------------------


def test_accepted_worked_and_completed_with_the_service_delivered(
    app: TestClient, acting: Acting
) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted", businessStatus=_status("authorized")))
    task = _ok(_put(app, task, status="in-progress"))
    # not yet: no resulting activity
    body = outcome(_put(app, task, status="completed"), 422)
    assert expressions(body) == ["Task.output"]
    output = [
        {
            "type": ACTIVITY_TYPE,
            "valueReference": {"reference": "Procedure/cs-service-delivery-example"},
        }
    ]
    task = _ok(
        _put(
            app,
            task,
            status="completed",
            output=output,
            businessStatus=_status("closed"),
            statusReason=_reason("services-received", "Bridge housing placement"),
        )
    )
    assert task["status"] == "completed" and task["lastModified"]
    # the provider cannot close the ServiceRequest; the referrer (its care manager) does
    request = _ok(app.get("/fhir/ServiceRequest/cs-referral-example"))
    outcome(
        app.put(
            "/fhir/ServiceRequest/cs-referral-example", json={**request, "status": "completed"}
        ),
        403,
    )
    acting.as_(CARE_MANAGER)
    _ok(
        app.put("/fhir/ServiceRequest/cs-referral-example", json={**request, "status": "completed"})
    )
    # and the loop stays closed
    acting.as_(PROVIDER)
    outcome(_put(app, task, status="in-progress"), 422)


def test_completed_with_a_coded_activity(app: TestClient, acting: Acting) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted"))
    coded = {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "710824005",
                "display": "Assessment of health literacy",
            }
        ]
    }
    task = _ok(
        _put(
            app,
            task,
            status="completed",
            output=[{"type": ACTIVITY_TYPE, "valueCodeableConcept": coded}],
        )
    )
    assert task["status"] == "completed"


def test_rejected_then_retried_with_a_new_task(app: TestClient, acting: Acting) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    outcome(_put(app, task, status="rejected"), 422)  # no reason
    rejected = _ok(
        _put(
            app,
            task,
            status="rejected",
            businessStatus=_status("declined"),
            statusReason=_reason("provider-declined", "No capacity this month"),
        )
    )
    acting.as_(REFERRER)
    body = outcome(_put(app, rejected, status="requested"), 422)
    assert "new Task" in body["issue"][0]["diagnostics"]
    retry = _requested(app, acting, owner={"reference": "Organization/westside-family-clinic"})
    acting.as_(PROVIDER)  # no longer the target
    outcome(_put(app, retry, status="accepted"), 403)
    acting.as_(CLINIC)
    assert _ok(_put(app, retry, status="accepted"))["status"] == "accepted"


@pytest.mark.parametrize("side", ["referrer", "provider"])
def test_cancelled_by_either_side(app: TestClient, acting: Acting, side: str) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted"))
    acting.as_(REFERRER if side == "referrer" else PROVIDER)
    cancelled = _ok(_end(app, task, "cancelled", "member-declined", "Member moved in with family"))
    assert cancelled["status"] == "cancelled"


def test_failed_with_its_reason(app: TestClient, acting: Acting) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted"))
    task = _ok(_put(app, task, status="in-progress"))
    acting.as_(REFERRER)  # failing is the provider's to say
    outcome(_end(app, task, "failed", "unable-to-contact", "Three attempts"), 403)
    acting.as_(PROVIDER)
    failed = _ok(_end(app, task, "failed", "unable-to-contact", "Three attempts, no answer"))
    assert failed["status"] == "failed"


def test_entered_in_error_by_the_requester_from_any_state(app: TestClient, acting: Acting) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted"))
    outcome(_put(app, task, status="entered-in-error"), 403)
    acting.as_(CARE_MANAGER)
    voided = _ok(_put(app, task, status="entered-in-error"))
    for status in ("requested", "accepted", "cancelled"):
        outcome(_put(app, voided, status=status), 422)


def test_racing_transitions_serialise_and_exactly_one_wins(app: TestClient, acting: Acting) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted"))
    task = _ok(_put(app, task, status="in-progress"))
    coded = {"coding": [{"system": "http://snomed.info/sct", "code": "710824005"}]}
    bodies = [
        {
            **task,
            "status": "completed",
            "output": [{"type": ACTIVITY_TYPE, "valueCodeableConcept": coded}],
            "note": [{"text": f"closing {i}"}],
        }
        for i in range(4)
    ] + [
        {**task, "status": status, "statusReason": _reason("other", f"stopping {i}")}
        for i, status in enumerate(["failed", "cancelled", "failed", "cancelled"])
    ]
    results: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(bodies))

    def attempt(body: dict[str, Any]) -> None:
        start.wait()
        response = app.put(f"/fhir/Task/{task['id']}", json=body)
        with lock:
            results.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200] + [422] * 7, results
    acting.as_(LOCAL)
    history = app.get(f"/fhir/Task/{task['id']}/_history").json()
    assert len(history["entry"]) == 4  # requested, accepted, in-progress and the winner


# -- sobering centers ------------------------------------------------------------------------------


def test_a_sobering_center_records_a_retroactive_referral_in_one_transaction(
    app: TestClient, acting: Acting
) -> None:
    request = copy.deepcopy(_example("ServiceRequest-cs-referral-example"))
    request.pop("id")
    request["identifier"] = [
        {"system": "https://calaim-fhir.org/fhir/sid/cs-referral", "value": "CSR-SOBER-1"}
    ]
    request["code"] = {
        "coding": [
            {
                "system": "http://calaim-fhir.org/fhir/CodeSystem/community-supports",
                "code": "sobering-centers",
            }
        ]
    }
    request["performer"] = [{"reference": "Organization/harbor-sobering"}]
    procedure = copy.deepcopy(_example("Procedure-cs-service-delivery-example"))
    procedure.pop("id")
    procedure["basedOn"] = [{"reference": "urn:uuid:5c0be000-0000-4000-8000-000000000001"}]
    procedure["code"] = request["code"]
    procedure["performedPeriod"] = {"start": "2026-11-20T23:10:00Z", "end": "2026-11-21T07:30:00Z"}
    procedure["performer"] = [{"actor": {"reference": "Organization/harbor-sobering"}}]
    task = _referral_task(
        status="completed",
        focus={"reference": "urn:uuid:5c0be000-0000-4000-8000-000000000001"},
        owner={"reference": "Organization/harbor-sobering"},
        output=[
            {
                "type": ACTIVITY_TYPE,
                "valueReference": {"reference": "urn:uuid:5c0be000-0000-4000-8000-000000000002"},
            }
        ],
    )
    task.pop("businessStatus")  # exempt from closed-loop tracking: no DHCS Referral Status
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5c0be000-0000-4000-8000-000000000001",
                "resource": request,
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "fullUrl": "urn:uuid:5c0be000-0000-4000-8000-000000000002",
                "resource": procedure,
                "request": {"method": "POST", "url": "Procedure"},
            },
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }
    acting.as_(PROVIDER)  # not the sobering center: cannot record its stay
    outcome(app.post("/fhir", json=bundle), 403)
    acting.as_(SOBERING)
    done = _ok(app.post("/fhir", json=bundle))
    assert [e["response"]["status"][:3] for e in done["entry"]] == ["201", "201", "201"]
    acting.as_(LOCAL)
    stored = app.get("/fhir/Task?owner=Organization/harbor-sobering").json()["entry"][0]["resource"]
    assert stored["status"] == "completed" and stored["lastModified"]
    # not a way around the lifecycle for other Community Supports
    acting.as_(PROVIDER)
    plain = _referral_task(
        status="completed",
        output=[
            {
                "type": ACTIVITY_TYPE,
                "valueReference": {"reference": "Procedure/cs-service-delivery-example"},
            }
        ],
    )
    outcome(app.post("/fhir/Task", json=plain), 403)


# -- the overdue view ------------------------------------------------------------------------------


def test_the_overdue_view_lists_open_referrals_past_their_due_date(
    app: TestClient, acting: Acting
) -> None:
    def due(end: str) -> dict[str, Any]:
        return {"period": {"end": end}}

    late = _requested(app, acting, restriction=due("2026-11-10"))
    late_accepted = _requested(app, acting, restriction=due("2026-11-30T17:00:00-08:00"))
    in_time = _requested(app, acting, restriction=due("2027-01-15"))
    late_done = _requested(app, acting, restriction=due("2026-11-01"))
    _requested(app, acting)  # no due date: never overdue
    acting.as_(PROVIDER)
    _ok(_put(app, late_accepted, status="accepted"))
    late_done = _ok(_put(app, late_done, status="accepted"))
    coded = {"coding": [{"system": "http://snomed.info/sct", "code": "710824005"}]}
    _ok(
        _put(
            app,
            late_done,
            status="completed",
            output=[{"type": ACTIVITY_TYPE, "valueCodeableConcept": coded}],
        )
    )
    acting.as_(PLAN)
    found = app.get("/fhir/Task?due=lt2026-12-07&status=requested,accepted").json()
    assert sorted(e["resource"]["id"] for e in found.get("entry", [])) == sorted(
        [late["id"], late_accepted["id"]]
    )
    found = app.get("/fhir/Task?due=ge2026-12-07").json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [in_time["id"]]


# -- the audit trail -------------------------------------------------------------------------------


def _parts(transition: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in transition["part"]:
        value = next(v for k, v in part.items() if k.startswith("value"))
        out[part["name"]] = value
    return out


def test_transitions_list_each_status_change_with_who_and_when(
    app: TestClient, acting: Acting
) -> None:
    task = _requested(app, acting)
    acting.as_(PROVIDER)
    task = _ok(_put(app, task, status="accepted"))
    task = _ok(_put(app, task, note=[{"text": "called the member"}]))  # not a status change
    task = _ok(_put(app, task, businessStatus=_status("authorized")))
    task = _ok(_put(app, task, status="in-progress"))
    acting.as_(CARE_MANAGER)
    task = _ok(
        _put(
            app,
            task,
            status="cancelled",
            statusReason=_reason("member-declined", "Member declined"),
        )
    )
    acting.as_(PLAN)
    response = app.get(f"/fhir/Task/{task['id']}/$transitions")
    body = _ok(response, 200)
    assert body["resourceType"] == "Parameters"
    trail = [_parts(p) for p in body["parameter"]]
    assert [(t.get("from"), t["to"], t["version"]) for t in trail] == [
        (None, "requested", "1"),
        ("requested", "accepted", "2"),
        ("accepted", "accepted", "4"),
        ("accepted", "in-progress", "5"),
        ("in-progress", "cancelled", "6"),
    ]
    assert [t.get("organization", {}).get("reference") for t in trail] == [
        "Organization/sierra-vista-ccp",
        "Organization/casa-segura-housing",
        "Organization/casa-segura-housing",
        "Organization/casa-segura-housing",
        None,
    ]
    assert trail[-1]["user"] == {"reference": "Practitioner/lead-care-manager-okafor"}
    assert all(t["recorded"] is True and t["client"] for t in trail)
    assert trail[2]["businessStatus"]["coding"][0]["code"] == "authorized"
    assert trail[-1]["statusReason"]["coding"][0]["code"] == "member-declined"
    versions = app.get(f"/fhir/Task/{task['id']}/_history").json()["entry"]
    stamps = {v["resource"]["meta"]["versionId"]: v["resource"]["lastModified"] for v in versions}
    assert [t["lastModified"] for t in trail] == [stamps[t["version"]] for t in trail]
    assert trail == sorted(trail, key=lambda t: t["when"])
    # only where it is defined
    outcome(app.get("/fhir/Patient/ecm-member-example/$transitions"), (400, 404))
    outcome(app.get("/fhir/Task/nowhere/$transitions"), 404)


# -- coordination-platform sub-referrals -----------------------------------------------------------


def _filler_order_body(**extra: Any) -> dict[str, Any]:
    """The platform's filler order of the Casa Segura referral (standards.md §1.8)."""
    order = copy.deepcopy(_example("ServiceRequest-cs-referral-example"))
    order.pop("id")
    order.pop("identifier")
    order.update(
        intent="filler-order",
        basedOn=[{"reference": "ServiceRequest/cs-referral-example"}],
        requester={"reference": "Organization/bay-connect"},
    )
    order.update(extra)
    return order


def _split(app: TestClient, acting: Acting, *owners: str) -> tuple[dict[str, Any], list[str]]:
    """The referrer sends the referral to the platform, which accepts it and splits it: one
    filler order and one sub-Task per organisation, in one transaction."""
    source = _requested(app, acting, owner={"reference": "Organization/bay-connect"})
    acting.as_(HUB)
    source = _ok(_put(app, source, status="accepted"))
    entries: list[dict[str, Any]] = []
    for n, owner in enumerate(owners):
        order = _filler_order_body(performer=[{"reference": owner}])
        url = f"urn:uuid:0b5e0000-0000-4000-8000-00000000000{n}"
        entries.append(
            {
                "fullUrl": url,
                "resource": order,
                "request": {"method": "POST", "url": "ServiceRequest"},
            }
        )
        sub = _referral_task(
            focus={"reference": url},
            requester={"reference": "Organization/bay-connect"},
            owner={"reference": owner},
            partOf=[{"reference": f"Task/{source['id']}"}],
        )
        entries.append({"resource": sub, "request": {"method": "POST", "url": "Task"}})
    done = _ok(
        app.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    )
    subs = [e["response"]["location"].split("/")[-3] for e in done["entry"][1::2]]
    return source, subs


def _task(app: TestClient, id: str) -> dict[str, Any]:
    return _ok(app.get(f"/fhir/Task/{id}"))


def _deliver(app: TestClient, sub: dict[str, Any]) -> dict[str, Any]:
    procedure = copy.deepcopy(_example("Procedure-cs-service-delivery-example"))
    procedure.pop("id")
    procedure["basedOn"] = [sub["focus"]]
    procedure["performer"] = [{"actor": sub["owner"]}]
    made = _ok(app.post("/fhir/Procedure", json=procedure))
    output = [{"type": ACTIVITY_TYPE, "valueReference": {"reference": f"Procedure/{made['id']}"}}]
    return _ok(
        _put(
            app,
            sub,
            status="completed",
            output=output,
            statusReason=_reason("services-received", "Delivered"),
        )
    )


def test_a_referral_split_across_two_organisations_rolls_up(
    app: TestClient, acting: Acting
) -> None:
    source, (casa_id, pantry_id) = _split(
        app, acting, "Organization/casa-segura-housing", "Organization/valley-pantry"
    )
    acting.as_(PROVIDER)
    casa = _ok(_put(app, _task(app, casa_id), status="accepted"))
    assert _task(app, source["id"])["status"] == "accepted"  # nothing started yet
    casa = _ok(_put(app, casa, status="in-progress"))
    assert _task(app, source["id"])["status"] == "in-progress"  # any started: in progress
    casa = _deliver(app, casa)
    assert _task(app, source["id"])["status"] == "in-progress"  # the pantry is still open
    acting.as_(PANTRY)
    pantry = _ok(_put(app, _task(app, pantry_id), status="accepted"))
    pantry = _deliver(app, pantry)
    rolled = _task(app, source["id"])
    assert rolled["status"] == "completed"  # every one completed
    delivered = {o["valueReference"]["reference"] for o in rolled["output"]}
    assert delivered == {
        o["valueReference"]["reference"] for o in casa["output"] + pantry["output"]
    }
    # the platform's change, derived in the pantry's unit
    trail = [
        _parts(p) for p in app.get(f"/fhir/Task/{source['id']}/$transitions").json()["parameter"]
    ]
    assert [t["to"] for t in trail] == ["requested", "accepted", "in-progress", "completed"]


def test_sub_referrals_that_all_end_put_the_source_on_hold_to_re_route(
    app: TestClient, acting: Acting
) -> None:
    source, (casa_id, pantry_id) = _split(
        app, acting, "Organization/casa-segura-housing", "Organization/valley-pantry"
    )
    acting.as_(PROVIDER)
    _ok(
        _put(
            app,
            _task(app, casa_id),
            status="rejected",
            statusReason=_reason("provider-declined", "No capacity"),
        )
    )
    assert _task(app, source["id"])["status"] == "accepted"
    acting.as_(PANTRY)
    pantry = _ok(_put(app, _task(app, pantry_id), status="accepted"))
    _ok(_put(app, pantry, status="failed", statusReason=_reason("unable-to-contact", "No answer")))
    held = _task(app, source["id"])
    assert held["status"] == "on-hold"
    assert casa_id in held["statusReason"]["text"] and pantry_id in held["statusReason"]["text"]
    # re-routed to another organisation: the source resumes when the work starts
    acting.as_(HUB)
    retry = _referral_task(
        focus=_task(app, casa_id)["focus"],
        requester={"reference": "Organization/bay-connect"},
        owner={"reference": "Organization/westside-family-clinic"},
        partOf=[{"reference": f"Task/{source['id']}"}],
    )
    retry = _ok(app.post("/fhir/Task", json=retry), 201)
    acting.as_(CLINIC)
    retry = _ok(_put(app, retry, status="accepted"))
    assert _task(app, source["id"])["status"] == "on-hold"
    _ok(_put(app, retry, status="in-progress"))
    assert _task(app, source["id"])["status"] == "in-progress"


def _sub_task(source: dict[str, Any], focus: str, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "focus": {"reference": focus},
        "requester": {"reference": "Organization/bay-connect"},
        "owner": {"reference": "Organization/casa-segura-housing"},
        "partOf": [{"reference": f"Task/{source['id']}"}],
    }
    return _referral_task(**{**fields, **extra})


def _filler_order(app: TestClient, **extra: Any) -> str:
    order = _filler_order_body(
        performer=[{"reference": "Organization/casa-segura-housing"}], **extra
    )
    return f"ServiceRequest/{_ok(app.post('/fhir/ServiceRequest', json=order), 201)['id']}"


def _sub_tasks(app: TestClient, source: dict[str, Any]) -> int:
    bundle = _ok(app.get(f"/fhir/Task?part-of=Task/{source['id']}&_summary=count"))
    return int(bundle["total"])


def test_a_referral_is_split_only_once_the_platform_has_accepted_it(
    app: TestClient, acting: Acting
) -> None:
    source = _requested(app, acting, owner={"reference": "Organization/bay-connect"})
    acting.as_(HUB)
    order = _filler_order(app)
    refused = outcome(app.post("/fhir/Task", json=_sub_task(source, order)), 422)
    assert expressions(refused) == ["Task.partOf[0]"]
    assert "requested" in refused["issue"][0]["diagnostics"]
    assert _sub_tasks(app, source) == 0
    source = _ok(_put(app, source, status="accepted"))
    _ok(app.post("/fhir/Task", json=_sub_task(source, order)), 201)
    assert _sub_tasks(app, source) == 1
    # a completed referral is not split any more
    acting.as_(REFERRER)
    source = _ok(
        _put(app, _task(app, source["id"]), status="cancelled",
             statusReason=_reason("member-declined", "Declined"))
    )
    acting.as_(HUB)
    refused = outcome(app.post("/fhir/Task", json=_sub_task(source, order)), 422)
    assert expressions(refused) == ["Task.partOf[0]"]
    assert _sub_tasks(app, source) == 1


def test_a_sub_referral_must_be_the_platforms_filler_order_for_the_same_member(
    app: TestClient, acting: Acting
) -> None:
    source = _requested(app, acting, owner={"reference": "Organization/bay-connect"})
    acting.as_(HUB)
    source = _ok(_put(app, source, status="accepted"))
    order = _filler_order(app)
    # the focus is the original referral, not a filler order of it
    refused = outcome(
        app.post("/fhir/Task", json=_sub_task(source, "ServiceRequest/cs-referral-example")), 422
    )
    assert expressions(refused) == ["Task.focus"]
    # a filler order of another referral
    other = _filler_order(app, basedOn=[{"reference": "ServiceRequest/cs-referral-example-x"}])
    refused = outcome(app.post("/fhir/Task", json=_sub_task(source, other)), 422)
    assert expressions(refused) == ["Task.focus"]
    # another member
    acting.as_(LOCAL)
    member = _ok(app.post("/fhir/Patient", json={"resourceType": "Patient", "active": True}), 201)
    acting.as_(HUB)
    refused = outcome(
        app.post(
            "/fhir/Task",
            json=_sub_task(source, order, **{"for": {"reference": f"Patient/{member['id']}"}}),
        ),
        422,
    )
    assert expressions(refused) == ["Task.for"]
    # requested by someone other than the organisation the source was routed to
    acting.as_(REFERRER)
    refused = outcome(
        app.post(
            "/fhir/Task",
            json=_sub_task(
                source, order, requester={"reference": "Organization/sierra-vista-ccp"}
            ),
        ),
        422,
    )
    assert expressions(refused) == ["Task.requester"]
    assert _sub_tasks(app, source) == 0  # nothing was written
    acting.as_(HUB)
    _ok(app.post("/fhir/Task", json=_sub_task(source, order)), 201)
    assert _sub_tasks(app, source) == 1


def test_a_referral_is_part_only_of_another_referral(app: TestClient, acting: Acting) -> None:
    acting.as_(LOCAL)
    other = _ok(
        app.post(
            "/fhir/Task",
            json={
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": {"text": "Call back"},
            },
        ),
        201,
    )
    source = _requested(app, acting, owner={"reference": "Organization/bay-connect"})
    acting.as_(HUB)
    source = _ok(_put(app, source, status="accepted"))
    order = _filler_order(app)
    sub = _sub_task(source, order)
    sub["partOf"] = [{"reference": f"Task/{other['id']}"}]
    refused = outcome(app.post("/fhir/Task", json=sub), 422)
    assert expressions(refused) == ["Task.partOf[0]"]


def test_a_split_in_a_transaction_is_refused_whole(app: TestClient, acting: Acting) -> None:
    source = _requested(app, acting, owner={"reference": "Organization/bay-connect"})
    acting.as_(HUB)  # not accepted yet
    order = _filler_order_body()
    url = "urn:uuid:0b5e0000-0000-4000-8000-0000000000aa"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": url,
                "resource": order,
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {"resource": _sub_task(source, url), "request": {"method": "POST", "url": "Task"}},
        ],
    }
    before = _ok(app.get("/fhir/ServiceRequest?_summary=count"))["total"]
    refused = outcome(app.post("/fhir", json=bundle), 422)
    assert any("partOf[0]" in e for e in expressions(refused))
    assert _ok(app.get("/fhir/ServiceRequest?_summary=count"))["total"] == before
    assert _sub_tasks(app, source) == 0
