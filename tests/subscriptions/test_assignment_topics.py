"""The assignment and Notice of Action topics over HTTP with a real receiver, driven by
``$ecm-assign`` (mode commit) and a discontinuation the way the ECM assignment scenarios drive
them (tests/contract/test_ecm_assign_scenarios.py).

Expectations written by hand from the topic descriptions (docs/subscriptions.md):

- ``assignment-made``: the provider's referral Task, created ``partOf`` the plan's Task with the
  provider as ``owner``, notifies a subscription filtered on that provider, once; not another
  provider's subscription, not a referral Task without ``partOf``, not the provider's later
  answer (accepted).
- ``referral-notice``: the assignment's ``ecm-notice`` to the provider notifies a subscription
  filtered on the provider as recipient, once (not the member's nor the referrer's notice).
- ``notice-of-action``: the Notice of Action DocumentReference written when the member's
  enrollment is finished notifies a subscription filtered on the member, once; not the
  assignment nor the enrollment becoming active before it, not another member's subscription.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.auth.principal import LOCAL
from server.ecm import intake
from tests.contract.test_ecm_assign_scenarios import (
    GOLDEN_STAFF,
    MEMBER,
    MONDAY,
    _assign,
    _enrolled,
    _finish,
    _out,
    _us,
    _world_to_commit,
)
from tests.ecm_scene import concept, ok
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_program_topics import OURS, TASK_CODE, _expect, _subscribe
from tests.subscriptions.test_subscriptions import matched, params
from tests.support import Acting, TestClient, create, fhir_client

PROVIDER = "Organization/good-org"


@pytest.fixture
def acting() -> Acting:
    return Acting()


@pytest.fixture
def app(database: str, acting: Acting, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(intake, "now", lambda: _us(MONDAY))
    with fhir_client(
        database,
        principals=acting,
        subscription_allow_http_loopback=True,
        subscription_poll_seconds=0.05,
        subscription_backoff_max_seconds=0.2,
    ) as c:
        acting.as_(LOCAL)
        yield c


def _silent(app: TestClient, id: str) -> None:
    """Subscription ``id`` matched nothing (once the matcher has read every write)."""
    matched(app)
    status = ok(app.get(f"/fhir/Subscription/{id}/$status"))
    assert params(status)["events-since-subscription-start"][0]["valueString"] == "0"


def test_assignment_made_tells_the_provider(app: TestClient, acting: Acting, hook: Receiver
                                            ) -> None:
    _world_to_commit(app)
    mine = _subscribe(app, hook, "assignment-made", f"Task?owner={PROVIDER}")
    others = _subscribe(app, hook, "assignment-made", "Task?owner=Organization/other-org")
    create(app, {"resourceType": "Task", "status": "requested", "intent": "order",
                 "code": concept(TASK_CODE, "fulfill"),
                 "owner": {"reference": PROVIDER}})  # no partOf: silent
    acting.as_(GOLDEN_STAFF)
    answer = _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    acting.as_(LOCAL)
    task = ok(app.get(f"/fhir/{_out(answer, 'task')}"))
    assert task["partOf"] == [{"reference": "Task/plan-task-1"}]
    ok(app.put(f"/fhir/Task/{task['id']}", json={**task, "status": "accepted"}))  # silent
    _expect(app, hook, mine, [f"Task/{task['id']}/_history/1"])
    _silent(app, others)


def test_notice_of_action_tells_the_members_subscriber(app: TestClient, acting: Acting,
                                                       hook: Receiver) -> None:
    member = _subscribe(app, hook, "notice-of-action", f"DocumentReference?patient={MEMBER}")
    other = _subscribe(app, hook, "notice-of-action",
                       "DocumentReference?patient=Patient/someone-else")
    episode = _enrolled(app, acting)  # assigned, then active: silent
    matched(app)
    assert params(ok(app.get(f"/fhir/Subscription/{member}/$status")))[
        "events-since-subscription-start"][0]["valueString"] == "0"
    _finish(app, episode, "member-opted-out")
    acting.as_(LOCAL)
    found = ok(app.get(f"/fhir/DocumentReference?subject={MEMBER}"))
    documents = [e["resource"]["id"] for e in found.get("entry") or ()]
    assert len(documents) == 1
    _expect(app, hook, member, [f"DocumentReference/{documents[0]}/_history/1"])
    _silent(app, other)


def test_both_topics_are_advertised(app: TestClient) -> None:
    statement = ok(app.get("/fhir/metadata"))
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    canonicals = {e["valueCanonical"] for e in entry["extension"]
                  if e["url"].endswith("/capabilitystatement-subscriptiontopic-canonical")}
    assert {f"{OURS}/assignment-made|0.1.0", f"{OURS}/notice-of-action|0.1.0"} <= canonicals


def test_the_assignment_notice_reaches_the_providers_referral_notice_subscription(
    app: TestClient, acting: Acting, hook: Receiver
) -> None:
    _world_to_commit(app)
    id = _subscribe(app, hook, "referral-notice", f"Communication?recipient={PROVIDER}")
    acting.as_(GOLDEN_STAFF)
    _assign(app, referral="ServiceRequest/ref-1", mode="commit")
    acting.as_(LOCAL)
    found = ok(app.get(f"/fhir/Communication?recipient={PROVIDER}"))
    notices = [e["resource"] for e in found.get("entry") or ()]
    assert [n["reasonCode"][0]["coding"][0]["code"] for n in notices] == ["ecm-assignment"]
    _expect(app, hook, id, [f"Communication/{notices[0]['id']}/_history/1"])
