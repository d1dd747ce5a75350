"""The referral Task lifecycle over HTTP on both stores: every (from, to) status pair for every
role on PUT, PATCH and a transaction entry; creates; field rules per role; the requester's
ServiceRequest status; the server's lastModified stamp; If-Match.

The expectations are written here by hand from Gravity SDOHCC (standards.md §1.5 transitions
and "Set by", §1.6 Patient Task, §1.4 elements, §1.7 closing the loop), never taken from
``server/ecm/referral_lifecycle.py``. Principals are injected through the composition root
(``create_app(principals=...)``); the door lets them all read and write (``allow_all``) so
that only the program rules decide.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from server.auth.principal import LOCAL, Principal
from tests.support import Acting, TestClient, clear_store, expressions, outcome

PLATFORM_ORGANIZATION = "Organization/cp"
REQUESTER = Principal("referrer-app", allow_all=True, organization="Organization/req")
TARGET = Principal("provider-app", allow_all=True, organization="Organization/tgt")
OTHER = Principal("other-app", allow_all=True, organization="Organization/oth")
PATIENT = Principal("patient-app", allow_all=True, user="Patient/p")
PLATFORM = Principal("platform-app", allow_all=True, organization="Organization/cp")
ROLES = {
    "requester": REQUESTER,
    "target": TARGET,
    "other": OTHER,
    "patient": PATIENT,
    "operator": LOCAL,
}

STATUSES = [
    "draft", "requested", "accepted", "rejected", "cancelled", "in-progress", "on-hold",
    "failed", "completed", "entered-in-error",
]  # fmt: skip
NOT_REFERRAL = ["ready", "received"]  # task-status codes the referral value set leaves out

# §1.5 diagram: the moves; ANY -> entered-in-error; terminal states have none.
MOVES = {
    "draft": {"requested", "entered-in-error"},
    "requested": {"accepted", "rejected", "cancelled", "entered-in-error"},
    "accepted": {"in-progress", "on-hold", "cancelled", "completed", "failed", "entered-in-error"},
    "in-progress": {"on-hold", "cancelled", "completed", "failed", "entered-in-error"},
    "on-hold": {"in-progress", "cancelled", "completed", "failed", "entered-in-error"},
    "rejected": {"entered-in-error"},
    "cancelled": {"entered-in-error"},
    "completed": {"entered-in-error"},
    "failed": {"entered-in-error"},
    "entered-in-error": set(),
}
# §1.5 "Set by"
SET_BY = {
    "draft": {"requester"},
    "requested": {"requester"},
    "accepted": {"target"},
    "rejected": {"target"},
    "cancelled": {"requester", "target"},
    "in-progress": {"target"},
    "on-hold": {"target"},
    "failed": {"target"},
    "completed": {"target"},
    "entered-in-error": {"requester"},
}
# A create records the path from the start: `requested` (the requester's) and the status.
CREATES = {
    "requester": {"draft", "requested", "cancelled", "entered-in-error"},
    "target": set(),
    "other": set(),
    "patient": set(),
    "operator": set(STATUSES),
}

REFERRAL_ACTIVITY = {
    "type": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                "SDOHCC-CodeSystemTemporaryCodes",
                "code": "resulting-activity",
            }
        ]
    },
    "valueCodeableConcept": {
        "coding": [{"system": "http://snomed.info/sct", "code": "464131000124100"}]
    },
}


def task(status: str, **extra: Any) -> dict[str, Any]:
    """A referral Task with a reason and a resulting activity, so that a status is the only
    thing a move changes."""
    body: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "statusReason": {"text": "as agreed"},
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": "ServiceRequest/sr"},
        "for": {"reference": "Patient/p"},
        "authoredOn": "2026-11-02",
        "requester": {"reference": "Organization/req"},
        "owner": {"reference": "Organization/tgt"},
        "output": [REFERRAL_ACTIVITY],
    }
    body.update(extra)
    return body


@pytest.fixture
def app(acting_client: TestClient, database_url: str, acting: Acting) -> Iterator[TestClient]:
    clear_store(database_url)
    acting.as_(LOCAL)
    for kind, id in (
        ("Organization", "req"),
        ("Organization", "tgt"),
        ("Organization", "oth"),
        ("Organization", "cp"),
    ):
        _ok(
            acting_client.put(
                f"/fhir/{kind}/{id}", json={"resourceType": kind, "id": id, "name": id}
            )
        )
    _ok(acting_client.put("/fhir/Patient/p", json={"resourceType": "Patient", "id": "p"}))
    _ok(
        acting_client.put(
            "/fhir/ServiceRequest/sr",
            json={
                "resourceType": "ServiceRequest",
                "id": "sr",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/p"},
                "requester": {"reference": "Organization/req"},
            },
        )
    )
    yield acting_client
    acting.as_(LOCAL)


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _seed(app: TestClient, acting: Acting, status: str, **extra: Any) -> dict[str, Any]:
    acting.as_(LOCAL)
    return _ok(app.post("/fhir/Task", json=task(status, **extra)))


def _move(app: TestClient, method: str, current: dict[str, Any], to: str, **headers: str) -> Any:
    url = f"/fhir/Task/{current['id']}"
    if method == "PUT":
        return app.put(url, json={**current, "status": to}, headers=headers)
    if method == "PATCH":
        patch = [{"op": "replace", "path": "/status", "value": to}]
        return app.patch(
            url,
            content=orjson.dumps(patch),
            headers={"Content-Type": "application/json-patch+json", **headers},
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**current, "status": to},
                "request": {"method": "PUT", "url": f"Task/{current['id']}"},
            }
        ],
    }
    return app.post("/fhir", json=bundle)


def _expected(before: str, after: str, role: str) -> int:
    if after in NOT_REFERRAL or after not in MOVES[before]:
        return 422
    if role == "operator" or role in SET_BY[after]:
        return 200
    return 403


def _status_expression(method: str) -> str:
    return "Bundle.entry[0].resource.status" if method == "transaction" else "Task.status"


# -- the matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH", "transaction"])
def test_every_move_for_every_role(app: TestClient, acting: Acting, method: str) -> None:
    wrong: list[str] = []
    for before, role in itertools.product(STATUSES, ROLES):
        current = _seed(app, acting, before)
        for after in [*STATUSES, *NOT_REFERRAL]:
            if after == before:
                continue
            acting.as_(ROLES[role])
            response = _move(app, method, current, after)
            want = _expected(before, after, role)
            got = response.status_code
            case = f"{method} {before} -> {after} as {role}: want {want}, got {got}"
            if got != want:
                wrong.append(f"{case} {response.text[:300]}")
                continue
            if want == 200:
                body = response.json()
                stored = app.get(f"/fhir/Task/{current['id']}").json()
                assert stored["status"] == after, case
                if method != "transaction":
                    assert body["status"] == after, case
                current = _seed(app, acting, before)  # a fresh Task for the next move
                continue
            issue = outcome(response)["issue"][0]
            assert issue["code"] == ("forbidden" if want == 403 else "processing"), case
            assert f"{before} -> {after}" in issue["diagnostics"], case
            if want == 403:
                assert (
                    role in issue["diagnostics"]
                    or ROLES[role].id in issue["diagnostics"]
                    or (
                        "Organization/" in issue["diagnostics"]
                        or "Patient/" in issue["diagnostics"]
                    )
                ), case
            assert expressions({"issue": [issue]}) == [_status_expression(method)], case
            acting.as_(LOCAL)
            assert (
                app.get(f"/fhir/Task/{current['id']}").json()["meta"]["versionId"]
                == (current["meta"]["versionId"])
            ), f"{case}: a refused move changed the Task"
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("method", ["POST", "transaction"])
def test_every_status_a_task_is_created_in_for_every_role(
    app: TestClient, acting: Acting, method: str
) -> None:
    wrong: list[str] = []
    for status, role in itertools.product([*STATUSES, *NOT_REFERRAL], ROLES):
        acting.as_(ROLES[role])
        body = task(status)
        if method == "POST":
            response = app.post("/fhir/Task", json=body)
        else:
            response = app.post(
                "/fhir",
                json={
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [{"resource": body, "request": {"method": "POST", "url": "Task"}}],
                },
            )
        if status in NOT_REFERRAL:
            want = 422
        else:
            want = 201 if status in CREATES[role] else 403
        got = response.status_code
        if method == "transaction" and got == 200:
            got = int(response.json()["entry"][0]["response"]["status"].split()[0])
        if got != want:
            wrong.append(
                f"{method} create {status} as {role}: want {want}, got {got} {response.text[:300]}"
            )
        elif want != 201:
            assert expressions(outcome(response)), response.text
    assert not wrong, "\n".join(wrong)


# -- field rules per role ----------------------------------------------------------------------


@pytest.mark.parametrize("element", ["for", "focus", "requester", "intent", "code"])
@pytest.mark.parametrize("role", list(ROLES))
def test_the_referral_is_fixed_once_requested(
    app: TestClient, acting: Acting, element: str, role: str
) -> None:
    changed = {
        "for": {"reference": "Patient/q"},
        "focus": {"reference": "ServiceRequest/other"},
        "requester": {"reference": "Organization/oth"},
        "intent": "plan",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "approve"}]
        },
    }[element]
    current = _seed(app, acting, "accepted")
    acting.as_(ROLES[role])
    response = app.put(f"/fhir/Task/{current['id']}", json={**current, element: changed})
    body = outcome(response, (403, 422))
    if role in ("requester", "operator"):  # a role that may change fields: the lifecycle refuses
        assert response.status_code == 422, response.text
        assert expressions(body) == [f"Task.{element}"]
    # a draft may still be edited by its requester
    draft = _seed(app, acting, "draft")
    acting.as_(REQUESTER)
    if element not in (
        "requester",
        "code",
        "focus",
    ):  # these would make it not ours / not a referral
        assert (
            app.put(f"/fhir/Task/{draft['id']}", json={**draft, element: changed}).status_code
            == 200
        )


def test_the_target_changes_only_the_work_elements(app: TestClient, acting: Acting) -> None:
    current = _seed(app, acting, "in-progress")
    acting.as_(TARGET)
    for element, value in (
        ("note", [{"text": "called the member"}]),
        ("businessStatus", {"text": "pending"}),
        ("statusReason", {"text": "waiting for documents"}),
        ("output", [REFERRAL_ACTIVITY, REFERRAL_ACTIVITY]),
    ):
        current = _ok(app.put(f"/fhir/Task/{current['id']}", json={**current, element: value}))
    for element, value in (
        ("description", "my own words"),
        ("priority", "urgent"),
        ("restriction", {"period": {"end": "2027-01-01"}}),
    ):
        body = outcome(
            app.put(f"/fhir/Task/{current['id']}", json={**current, element: value}), 403
        )
        assert expressions(body) == [f"Task.{element}"]
        assert "target" in body["issue"][0]["diagnostics"]
    # the requester may change them
    acting.as_(REQUESTER)
    _ok(app.put(f"/fhir/Task/{current['id']}", json={**current, "priority": "urgent"}))


def test_other_organisations_and_patients_change_nothing(app: TestClient, acting: Acting) -> None:
    current = _seed(app, acting, "accepted")
    for who in (OTHER, PATIENT):
        acting.as_(who)
        outcome(app.put(f"/fhir/Task/{current['id']}", json=current), 403)  # not even a no-op
        body = outcome(
            app.put(f"/fhir/Task/{current['id']}", json={**current, "note": [{"text": "x"}]}), 403
        )
        assert expressions(body) == ["Task.note"]


def test_the_owner_is_set_by_the_requester_or_the_platform_or_claimed_once(
    app: TestClient, acting: Acting
) -> None:
    current = _seed(app, acting, "requested")
    elsewhere = {**current, "owner": {"reference": "Organization/oth"}}
    for who in (TARGET, OTHER, PATIENT):
        acting.as_(who)
        body = outcome(app.put(f"/fhir/Task/{current['id']}", json=elsewhere), 403)
        assert expressions(body) == ["Task.owner"]
    acting.as_(PLATFORM)
    current = _ok(app.put(f"/fhir/Task/{current['id']}", json=elsewhere))
    acting.as_(REQUESTER)
    current = _ok(
        app.put(
            f"/fhir/Task/{current['id']}",
            json={**current, "owner": {"reference": "Organization/tgt"}},
        )
    )
    # an open referral (no owner) is claimed once, by an organisation for itself
    open_ = _seed(app, acting, "requested")
    open_.pop("owner")
    acting.as_(LOCAL)
    open_ = _ok(app.put(f"/fhir/Task/{open_['id']}", json=open_))
    acting.as_(OTHER)
    claimed = _ok(
        app.put(
            f"/fhir/Task/{open_['id']}",
            json={**open_, "owner": {"reference": "Organization/oth"}, "status": "accepted"},
        )
    )
    acting.as_(TARGET)
    body = outcome(
        app.put(
            f"/fhir/Task/{open_['id']}",
            json={**claimed, "owner": {"reference": "Organization/tgt"}},
        ),
        403,
    )
    assert expressions(body) == ["Task.owner"]
    acting.as_(OTHER)  # the claimant is now the target
    _ok(app.put(f"/fhir/Task/{open_['id']}", json={**claimed, "status": "in-progress"}))


def test_only_the_requester_changes_the_service_request_status(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(LOCAL)
    request = app.get("/fhir/ServiceRequest/sr").json()
    for who in (TARGET, OTHER, PATIENT):
        acting.as_(who)
        body = outcome(
            app.put("/fhir/ServiceRequest/sr", json={**request, "status": "completed"}), 403
        )
        assert expressions(body) == ["ServiceRequest.status"]
    acting.as_(TARGET)  # other elements are not the lifecycle's concern
    request = _ok(app.put("/fhir/ServiceRequest/sr", json={**request, "note": [{"text": "seen"}]}))
    acting.as_(REQUESTER)
    _ok(app.put("/fhir/ServiceRequest/sr", json={**request, "status": "completed"}))


def test_a_patient_task_follows_its_own_lifecycle(app: TestClient, acting: Acting) -> None:
    body = {
        "resourceType": "Task",
        "status": "ready",
        "intent": "order",
        "priority": "routine",
        "code": {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                    "SDOHCC-CodeSystemTemporaryCodes",
                    "code": "general-information",
                }
            ]
        },
        "description": "Tell us your preferred contact time",
        "for": {"reference": "Patient/p"},
        "owner": {"reference": "Patient/p"},
        "requester": {"reference": "Organization/req"},
        "authoredOn": "2026-11-02",
    }
    acting.as_(PATIENT)
    outcome(app.post("/fhir/Task", json=body), 403)  # the requester creates it
    acting.as_(REQUESTER)
    outcome(app.post("/fhir/Task", json={**body, "status": "requested"}), 422)
    current = _ok(app.post("/fhir/Task", json=body))
    acting.as_(OTHER)
    outcome(app.put(f"/fhir/Task/{current['id']}", json={**current, "status": "in-progress"}), 403)
    acting.as_(PATIENT)
    current = _ok(app.put(f"/fhir/Task/{current['id']}", json={**current, "status": "in-progress"}))
    body403 = outcome(
        app.put(f"/fhir/Task/{current['id']}", json={**current, "description": "changed"}), 403
    )
    assert expressions(body403) == ["Task.description"]
    current = _ok(
        app.put(
            f"/fhir/Task/{current['id']}",
            json={
                **current,
                "status": "completed",
                "output": [
                    {"type": {"text": "general-information-response"}, "valueString": "mornings"}
                ],
            },
        )
    )
    outcome(app.put(f"/fhir/Task/{current['id']}", json={**current, "status": "in-progress"}), 422)


# -- the server's stamp, If-Match, deletes ---------------------------------------------------


def test_last_modified_is_stamped_on_every_status_or_business_status_change(
    app: TestClient, acting: Acting
) -> None:
    acting.as_(REQUESTER)
    created = _ok(
        app.post("/fhir/Task", json=task("requested", lastModified="1999-01-01T00:00:00Z"))
    )
    stamp = created["lastModified"]
    assert stamp != "1999-01-01T00:00:00Z"
    acting.as_(TARGET)
    noted = _ok(
        app.put(
            f"/fhir/Task/{created['id']}",
            json={**created, "note": [{"text": "x"}], "lastModified": "2030-01-01T00:00:00Z"},
        )
    )
    assert noted["lastModified"] == stamp  # no status change: the stamp stays
    accepted = _ok(app.put(f"/fhir/Task/{created['id']}", json={**noted, "status": "accepted"}))
    assert accepted["lastModified"] > stamp
    assert accepted["lastModified"] >= accepted["meta"]["lastUpdated"][:19]
    patch = [{"op": "add", "path": "/businessStatus", "value": {"text": "authorized"}}]
    authorized = _ok(
        app.patch(
            f"/fhir/Task/{created['id']}",
            content=orjson.dumps(patch),
            headers={"Content-Type": "application/json-patch+json"},
        )
    )
    assert authorized["lastModified"] > accepted["lastModified"]
    # the history keeps each version's stamp: the Date of Referral Status Update
    versions = app.get(f"/fhir/Task/{created['id']}/_history").json()["entry"]
    stamps = [v["resource"]["lastModified"] for v in versions]
    assert len(set(stamps)) == 3 and len(stamps) == 4


def test_a_stale_if_match_is_refused_and_none_is_needed(app: TestClient, acting: Acting) -> None:
    current = _seed(app, acting, "requested")
    acting.as_(TARGET)
    moved = _ok(app.put(f"/fhir/Task/{current['id']}", json={**current, "status": "accepted"}))
    for method in ("PUT", "PATCH"):
        response = _move(app, method, current, "in-progress", **{"If-Match": 'W/"1"'})
        outcome(response, 412)
    _ok(
        app.put(
            f"/fhir/Task/{current['id']}",
            json={**moved, "status": "in-progress"},
            headers={"If-Match": f'W/"{moved["meta"]["versionId"]}"'},
        )
    )


def test_a_conditional_update_follows_the_lifecycle(app: TestClient, acting: Acting) -> None:
    ident = {"system": "urn:example:referral", "value": "R-1"}
    current = _seed(app, acting, "requested", identifier=[ident])
    acting.as_(TARGET)
    url = "/fhir/Task?identifier=urn:example:referral|R-1"
    body = outcome(app.put(url, json={**current, "status": "completed"}), 422)
    assert expressions(body) == ["Task.status"]
    body = outcome(app.put(url, json={**current, "status": "draft"}), 422)
    acting.as_(OTHER)
    outcome(app.put(url, json={**current, "status": "accepted"}), 403)
    acting.as_(TARGET)
    _ok(app.put(url, json={**current, "status": "accepted"}))


def test_a_referral_is_deleted_only_as_a_draft_of_its_requester(
    app: TestClient, acting: Acting
) -> None:
    requested = _seed(app, acting, "requested")
    draft = _seed(app, acting, "draft")
    acting.as_(TARGET)
    outcome(app.delete(f"/fhir/Task/{draft['id']}"), 403)
    acting.as_(REQUESTER)
    body = outcome(app.delete(f"/fhir/Task/{requested['id']}"), 422)
    assert "entered-in-error" in body["issue"][0]["diagnostics"]
    assert app.delete(f"/fhir/Task/{draft['id']}").status_code in (200, 204)


# -- evidence ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["rejected", "cancelled", "on-hold", "failed"])
def test_stopping_needs_a_reason(app: TestClient, acting: Acting, status: str) -> None:
    current = _seed(app, acting, "accepted" if status != "rejected" else "requested")
    current.pop("statusReason")
    acting.as_(LOCAL)
    current = _ok(app.put(f"/fhir/Task/{current['id']}", json=current))
    acting.as_(TARGET)
    body = outcome(app.put(f"/fhir/Task/{current['id']}", json={**current, "status": status}), 422)
    assert expressions(body) == ["Task.statusReason"]
    assert "statusReason" in body["issue"][0]["diagnostics"]


def _procedure(
    app: TestClient, status: str = "completed", based_on: str = "ServiceRequest/sr"
) -> str:
    acting_body = {
        "resourceType": "Procedure",
        "status": status,
        "code": {"text": "housing navigation visit"},
        "subject": {"reference": "Patient/p"},
        "basedOn": [{"reference": based_on}],
    }
    return f"Procedure/{_ok(app.post('/fhir/Procedure', json=acting_body))['id']}"


def test_completing_needs_a_resulting_activity(app: TestClient, acting: Acting) -> None:
    current = _seed(app, acting, "in-progress")
    current.pop("output")
    acting.as_(LOCAL)
    current = _ok(app.put(f"/fhir/Task/{current['id']}", json=current))
    wrong_status = _procedure(app, "in-progress")
    elsewhere = _procedure(app, based_on="ServiceRequest/other")
    done = _procedure(app)
    acting.as_(TARGET)
    url = f"/fhir/Task/{current['id']}"
    body = outcome(app.put(url, json={**current, "status": "completed"}), 422)
    assert expressions(body) == ["Task.output"]
    for ref, why in (
        (wrong_status, "not completed"),
        (elsewhere, "basedOn"),
        ("Procedure/nowhere", "not stored"),
        ("Observation/x", "not a Procedure"),
    ):
        output = {**REFERRAL_ACTIVITY}
        output.pop("valueCodeableConcept")
        output["valueReference"] = {"reference": ref}
        body = outcome(
            app.put(url, json={**current, "status": "completed", "output": [output]}), 422
        )
        assert expressions(body) == ["Task.output[0].valueReference"], body
        assert why in body["issue"][0]["diagnostics"]
    output = {"type": REFERRAL_ACTIVITY["type"], "valueReference": {"reference": done}}
    completed = _ok(app.put(url, json={**current, "status": "completed", "output": [output]}))
    assert completed["status"] == "completed"


def test_an_activity_on_another_server_is_accepted_with_a_warning(
    app: TestClient, acting: Acting
) -> None:
    current = _seed(app, acting, "in-progress")
    remote = "https://cbo.example.org/fhir/Procedure/77"
    output = {"type": REFERRAL_ACTIVITY["type"], "valueReference": {"reference": remote}}
    acting.as_(TARGET)
    response = app.put(
        f"/fhir/Task/{current['id']}",
        json={**current, "status": "completed", "output": [output]},
        headers={"Prefer": "return=OperationOutcome"},
    )
    body = outcome(response, 200)
    warnings = [i for i in body["issue"] if i["severity"] == "warning"]
    assert warnings and warnings[0]["expression"] == ["Task.output[0].valueReference"]


def test_a_terminal_task_stays_as_it_is(app: TestClient, acting: Acting) -> None:
    current = _seed(app, acting, "completed")
    acting.as_(TARGET)
    body = outcome(
        app.put(f"/fhir/Task/{current['id']}", json={**current, "note": [{"text": "late"}]}), 422
    )
    assert expressions(body) == ["Task.note"]
    # the same content again (a client's retry) is no change
    _ok(app.put(f"/fhir/Task/{current['id']}", json=current))
