"""Our program topics over HTTP with a real receiver (docs/subscriptions.md, "Topics").

Each topic notifies on its transition and only there. Expectations are written by hand from the
topic descriptions:

- ``referral-received``: a referral Task (code ``fulfill``) reached ``requested`` — created so,
  or moved there from ``draft``; not a Task that stays ``requested``, nor one of another code.
- ``loop-closed``: a referral Task moved to ``completed``, or recorded already ``completed``
  (its earlier steps happened elsewhere: the subscriber learns of the closed loop only so); not
  the steps before it, not a Task cancelled, not a change to a completed Task.
- ``enrollment-started``: an EpisodeOfCare became ``active`` — created so or moved there; not one
  that stays active, nor one that finishes.
- ``enrollment-ended``: an EpisodeOfCare moved to ``finished``, or recorded already finished;
  not one that stays active or stays finished.
- ``referral-notice``: the ``ecm-notice`` Communication was created; not an update of it, not
  another Communication.
"""

from __future__ import annotations

from typing import Any

from tests.ecm_scene import concept, example, ok
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_subscriptions import active, kind, matched, params, subscription
from tests.support import TestClient, create

OURS = "http://calaim-fhir.org/fhir/SubscriptionTopic"
TEMPORARY = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
REFERRAL_STATUS = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-referral-status"
BASE = "http://calaim-fhir.org/fhir"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
LOOP_CLOSURE = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-loop-closure-reason"


def _subscribe(client: TestClient, hook: Receiver, topic: str, *filters: str) -> str:
    return active(client, hook, subscription(hook.url, criteria=f"{OURS}/{topic}",
                                             filters=filters))


def _focuses(bundles: list[dict[str, Any]]) -> list[str]:
    """``Type/id/_history/n`` of every notified event, in the order received."""
    out: list[str] = []
    for b in bundles:
        if kind(b) != "event-notification":
            continue
        for ev in params(b).get("notification-event", []):
            for part in ev["part"]:
                if part["name"] == "focus":
                    out.append("/".join(part["valueReference"]["reference"].split("/")[-4:]))
    return out


def _expect(client: TestClient, hook: Receiver, id: str, expected: list[str]) -> None:
    """Exactly ``expected`` was matched (``$status`` once the matcher has read every write) and
    the receiver got exactly those, in order."""
    matched(client)
    status = ok(client.get(f"/fhir/Subscription/{id}/$status"))
    assert params(status)["events-since-subscription-start"][0]["valueString"] == str(
        len(expected))
    got = hook.wait_for(lambda bs: len(_focuses(bs)) >= len(expected))
    assert _focuses(got) == expected


def _v(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


def _update(client: TestClient, resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {**resource, **changes}
    return ok(client.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body), 200)


def _referral(status: str = "requested", owner: str = "Organization/casa-segura-housing"
              ) -> dict[str, Any]:
    """The example CS referral Task, not yet completed."""
    task = example("Task-cs-referral-task-example")
    for element in ("id", "statusReason", "output"):
        task.pop(element)
    task["status"] = status
    task["businessStatus"] = concept(REFERRAL_STATUS, "pending")
    task["owner"] = {"reference": owner}
    return task


def _plain(status: str) -> dict[str, Any]:
    """A referral Task without our profile (a Gravity platform's), which may start as a draft."""
    return {"resourceType": "Task", "status": status, "intent": "order",
            "code": concept(TASK_CODE, "fulfill"),
            "owner": {"reference": "Organization/casa-segura-housing"}}


def _completion() -> dict[str, Any]:
    """What completing a referral adds: the reason and a coded resulting activity."""
    return {
        "statusReason": {**concept(LOOP_CLOSURE, "services-received"),
                         "text": "Member placed in bridge housing"},
        "businessStatus": concept(REFERRAL_STATUS, "closed"),
        "output": [{"type": concept(TEMPORARY, "resulting-activity"),
                    "valueCodeableConcept": {"text": "Member placed in bridge housing"}}],
    }


def _enrollment(status: str) -> dict[str, Any]:
    episode = example("EpisodeOfCare-ecm-enrollment-example")
    episode.pop("id")
    episode["status"] = status
    return episode


def _finished(episode: dict[str, Any]) -> dict[str, Any]:
    """What finishing an enrollment changes: status, end date, discontinuation reason."""
    reason = {"url": f"{BASE}/StructureDefinition/discontinuation-reason",
              "valueCodeableConcept": concept(f"{BASE}/CodeSystem/ecm-discontinuation-reason",
                                              "member-opted-out")}
    return {"status": "finished", "period": {**episode["period"], "end": "2026-08-19"},
            "extension": [*episode["extension"], reason]}


def test_referral_received(client: TestClient, hook: Receiver) -> None:
    id = _subscribe(client, hook, "referral-received")
    draft = create(client, _plain("draft"))  # silent: not requested (the profile has no draft)
    sent = _update(client, draft, status="requested")  # draft -> requested: notifies
    direct = create(client, _referral())  # created requested: notifies
    _update(client, direct, note=[{"text": "called the member"}])  # stays requested: silent
    _update(client, sent, status="accepted")  # requested -> accepted: silent
    other = _plain("requested")
    other["code"] = concept(TASK_CODE, "approve")
    create(client, other)  # not a referral (code approve): silent
    _expect(client, hook, id, [_v(sent), _v(direct)])


def test_referral_received_filtered_by_owner(client: TestClient, hook: Receiver) -> None:
    id = _subscribe(client, hook, "referral-received",
                    "Task?owner=Organization/casa-segura-housing")
    create(client, _referral(owner="Organization/westside-family-clinic"))  # another owner
    mine = create(client, _referral())
    _expect(client, hook, id, [_v(mine)])


def test_loop_closed(client: TestClient, hook: Receiver) -> None:
    id = _subscribe(client, hook, "loop-closed")
    task = create(client, _referral())  # silent: requested
    task = _update(client, task, status="accepted")  # silent
    task = _update(client, task, status="in-progress")  # silent
    task = _update(client, task, note=[{"text": "housing found"}])  # stays in-progress: silent
    closed = _update(client, task, status="completed", **_completion())  # notifies
    cancelled = create(client, _referral())
    _update(client, cancelled, status="cancelled",
            statusReason={"text": "member moved away"})  # cancelled, not completed: silent
    _update(client, closed, status="entered-in-error")  # leaves completed: silent
    recorded = create(client, {**_referral(), "status": "completed", **_completion()})
    _expect(client, hook, id, [_v(closed), _v(recorded)])


def test_enrollment_started(client: TestClient, hook: Receiver) -> None:
    id = _subscribe(client, hook, "enrollment-started")
    planned = create(client, _enrollment("planned"))  # silent: not active
    started = _update(client, planned, status="active")  # planned -> active: notifies
    direct = create(client, _enrollment("active"))  # created active: notifies
    _update(client, direct, careManager={"reference": "PractitionerRole/other"})  # stays active
    _update(client, started, **_finished(started))  # active -> finished: silent
    _expect(client, hook, id, [_v(started), _v(direct)])


def test_enrollment_ended(client: TestClient, hook: Receiver) -> None:
    id = _subscribe(client, hook, "enrollment-ended",
                    "EpisodeOfCare?patient=Patient/ecm-member-example")
    born_finished = _enrollment("finished")
    born_finished.update(_finished(born_finished))
    recorded = create(client, born_finished)  # recorded already finished: notifies
    episode = create(client, _enrollment("active"))  # silent
    episode = _update(client, episode, careManager={"reference": "PractitionerRole/other"})
    ended = _update(client, episode, **_finished(episode))  # active -> finished: notifies
    _update(client, ended, period={"start": "2026-02-20", "end": "2026-08-20"})  # stays finished
    other = _enrollment("active")
    other["patient"] = {"reference": "Patient/ecm-member-homeless-example"}
    other = create(client, other)
    _update(client, other, **_finished(other))  # another member's (filtered out): silent
    _expect(client, hook, id, [_v(recorded), _v(ended)])


def test_referral_notice(client: TestClient, hook: Receiver) -> None:
    id = _subscribe(client, hook, "referral-notice")
    fresh = example("Communication-ecm-notice-example")
    fresh.pop("id")
    notice = create(client, fresh)  # notifies
    _update(client, notice, received="2026-02-10T09:05:00-08:00")  # an update: silent
    plain = example("Communication-ecm-notice-example")
    for element in ("id", "meta"):
        plain.pop(element)
    create(client, plain)  # not an ecm-notice: silent
    _expect(client, hook, id, [_v(notice)])
