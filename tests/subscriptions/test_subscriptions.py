"""Topic-based subscriptions over HTTP with a real receiver on 127.0.0.1 (docs/subscriptions.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.subscriptions.receiver import Receiver
from tests.support import TestClient, create, expressions, outcome

TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def subscription(endpoint: str, *, content: str = "id-only", filters: tuple[str, ...] = (),
                 payload: str = "application/fhir+json", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": TASK_TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": payload,
            "_payload": {"extension": [{"url": f"{BP}/backport-payload-content",
                                        "valueCode": content}]},
        },
    }
    if filters:
        body["_criteria"] = {"extension": [{"url": f"{BP}/backport-filter-criteria",
                                            "valueString": f} for f in filters]}
    body.update(extra)
    return body


def task(owner: str = "Organization/o1", status: str = "requested") -> dict[str, Any]:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "owner": {"reference": owner}}


def params(bundle: dict[str, Any]) -> dict[str, Any]:
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    out: dict[str, Any] = {}
    for p in parameters["parameter"]:
        out.setdefault(p["name"], []).append(p)
    return out


def kind(bundle: dict[str, Any]) -> str:
    return str(params(bundle)["type"][0]["valueCode"])


def numbers(bundles: list[dict[str, Any]]) -> list[int]:
    return [int(part["valueString"]) for b in bundles if kind(b) == "event-notification"
            for ev in params(b).get("notification-event", [])
            for part in ev["part"] if part["name"] == "event-number"]


def wait_status(client: TestClient, id: str, status: str, seconds: float = 20.0) -> None:
    """Until Subscription ``id`` reads with ``status`` (bounded wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get(f"/fhir/Subscription/{id}").json()["status"] == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"Subscription/{id} not {status} after {seconds}s")


def matched(client: TestClient, seconds: float = 20.0) -> None:
    """Until the matcher has read every outbox event (bounded wait)."""
    store = client.app.state.store.subscriptions
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if store.lag() == 0:
            return
        time.sleep(0.02)
    raise AssertionError("the matcher did not catch up")


def active(client: TestClient, hook: Receiver, body: dict[str, Any]) -> str:
    sub = create(client, body)
    hook.wait_for(lambda bs: any(kind(b) == "handshake" for b in bs))
    wait_status(client, sub["id"], "active")
    return str(sub["id"])


def test_topics_are_advertised(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    canonicals = [e["valueCanonical"] for e in entry["extension"]
                  if e["url"] == f"{BP}/capabilitystatement-subscriptiontopic-canonical"]
    assert f"{TASK_TOPIC}|2.3.0" in canonicals
    assert ("http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Servicerequest|2.3.0"
            in canonicals)
    assert "application/fhir+xml" in entry["documentation"]
    operations = {op["name"]: op["definition"] for op in entry["operation"]}
    assert operations["status"].endswith("/OperationDefinition/backport-subscription-status")
    assert operations["events"].endswith("/OperationDefinition/backport-subscription-events")


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"criteria": "Task?status=requested"}, "Subscription.criteria"),
        ({"criteria": "http://example.org/SubscriptionTopic/unknown"}, "Subscription.criteria"),
        ({"_criteria": {"extension": [{"url": f"{BP}/backport-filter-criteria",
                                       "valueString": "Task?patient=Patient/1"}]}},
         "Subscription.criteria.extension[0]"),
        ({"_criteria": {"extension": [{"url": f"{BP}/backport-filter-criteria",
                                       "valueString": "Patient?_id=1"}]}},
         "Subscription.criteria.extension[0]"),
        ({"status": "active"}, "Subscription.status"),
        ({"status": "error"}, "Subscription.status"),
    ],
)
def test_subscription_refusals(client: TestClient, change: dict[str, Any], expression: str
                               ) -> None:
    body = {**subscription("https://example.org/hook"), **change}
    response = client.post("/fhir/Subscription", json=body)
    assert expression in expressions(outcome(response, 422))
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


@pytest.mark.parametrize(
    ("channel", "expression"),
    [
        ({"payload": "application/fhir+xml"}, "Subscription.channel.payload"),
        ({"payload": "application/fhir+json; fhirVersion=4.3"}, "Subscription.channel.payload"),
        ({"payload": "text/plain"}, "Subscription.channel.payload"),
        ({"_payload": {"extension": [{"url": f"{BP}/backport-payload-content",
                                      "valueCode": "everything"}]}},
         "Subscription.channel.payload"),
        ({"type": "websocket"}, "Subscription.channel.type"),
        ({"type": "email", "endpoint": "mailto:a@example.org"}, "Subscription.channel.type"),
        ({"endpoint": "ftp://example.org/x"}, "Subscription.channel.endpoint"),
        ({"header": ["no colon here"]}, "Subscription.channel.header[0]"),
    ],
)
def test_channel_refusals(client: TestClient, channel: dict[str, Any], expression: str) -> None:
    body = subscription("https://example.org/hook")
    body["channel"] = {**body["channel"], **channel}
    response = client.post("/fhir/Subscription", json=body)
    assert expression in expressions(outcome(response, 422))


def test_handshake_activates_and_headers_are_write_only(client: TestClient, hook: Receiver
                                                        ) -> None:
    body = subscription(hook.url)
    body["channel"]["header"] = ["Authorization: Bearer s3cret"]
    id = active(client, hook, body)
    stored = client.get(f"/fhir/Subscription/{id}").json()
    assert stored["channel"]["header"] == ["Authorization: ****"]
    assert "s3cret" not in client.get(f"/fhir/Subscription/{id}/_history").text
    headers, bundle = hook.received[0]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["content-type"].startswith("application/fhir+json")
    assert bundle["type"] == "history"
    status = params(bundle)
    assert status["events-since-subscription-start"][0]["valueString"] == "0"
    assert status["subscription"][0]["valueReference"]["reference"].endswith(f"Subscription/{id}")
    # sending the masked value back keeps the secret
    stored["reason"] = "changed"
    assert client.put(f"/fhir/Subscription/{id}", json=stored).status_code == 200
    create(client, task())
    found = hook.wait_for(lambda bs: numbers(bs) == [1])
    assert hook.received[-1][0]["authorization"] == "Bearer s3cret"
    assert kind(found[-1]) == "event-notification"


def test_numbered_in_order_with_filters_and_payloads(client: TestClient, hook: Receiver) -> None:
    full = active(client, hook, subscription(hook.url, content="full-resource",
                                             filters=("Task?owner=Organization/o1",)))
    t = create(client, task())
    create(client, task(owner="Organization/other"))  # filtered out
    for status in ("received", "accepted", "in-progress"):
        t["status"] = status
        assert client.put(f"/fhir/Task/{t['id']}", json=t).status_code == 200
    client.delete(f"/fhir/Task/{t['id']}")
    found = hook.wait_for(lambda bs: numbers(bs) == [1, 2, 3, 4, 5])
    events = [b for b in found if kind(b) == "event-notification"]
    entries = [e for b in events for e in b["entry"][1:]]
    statuses = [e["resource"]["status"] for e in entries if "resource" in e]
    assert statuses == ["requested", "received", "accepted", "in-progress"]
    assert entries[-1]["request"]["method"] == "DELETE"
    focus = [part["valueReference"]["reference"] for b in events
             for ev in params(b)["notification-event"] for part in ev["part"]
             if part["name"] == "focus"]
    assert [f.rsplit("/", 1)[-1] for f in focus] == ["1", "2", "3", "4", "5"]
    assert full


def test_empty_payload_has_no_focus(client: TestClient, hook: Receiver) -> None:
    active(client, hook, subscription(hook.url, content="empty"))
    create(client, task())
    found = hook.wait_for(lambda bs: numbers(bs) == [1])
    bundle = found[-1]
    assert len(bundle["entry"]) == 1
    parts = params(bundle)["notification-event"][0]["part"]
    assert {p["name"] for p in parts} == {"event-number", "timestamp"}
    assert "topic" not in params(bundle)


def test_receiver_down_then_back_gets_every_event_in_order(client: TestClient, hook: Receiver
                                                           ) -> None:
    active(client, hook, subscription(hook.url))
    hook.status = 503
    for _ in range(5):
        create(client, task())
    hook.wait_refused(2)
    hook.status = 200
    found = hook.wait_for(lambda bs: len(numbers(bs)) >= 5)
    got = numbers(found)
    assert got == sorted(got) and sorted(set(got)) == [1, 2, 3, 4, 5]


def test_receiver_that_never_returns_ends_in_error(client: TestClient, hook: Receiver) -> None:
    id = active(client, hook, subscription(hook.url))
    hook.status = 500
    create(client, task())
    wait_status(client, id, "error")
    state = client.app.state.subscriptions._store.state(id)
    assert state is not None and "HTTP 500" in (state.last_error or "")


def test_client_may_turn_off(client: TestClient, hook: Receiver) -> None:
    id = active(client, hook, subscription(hook.url))
    sub = client.get(f"/fhir/Subscription/{id}").json()
    sub["status"] = "off"
    assert client.put(f"/fhir/Subscription/{id}", json=sub).status_code == 200
    create(client, task())
    create(client, task())
    matched(client)
    state = client.app.state.subscriptions._store.state(id)
    assert state is not None and state.status == "off" and state.events == 0
    assert numbers(hook.bundles()) == []


def test_status_and_events_recover_missed_notifications(client: TestClient, hook: Receiver
                                                        ) -> None:
    id = active(client, hook, subscription(hook.url, content="id-only"))
    for _ in range(3):
        create(client, task())
    hook.wait_for(lambda bs: numbers(bs) == [1, 2, 3])
    status = client.get(f"/fhir/Subscription/{id}/$status").json()
    assert status["resourceType"] == "Bundle"
    p = params(status)
    assert p["type"][0]["valueCode"] == "query-status"
    assert p["status"][0]["valueCode"] == "active"
    assert p["events-since-subscription-start"][0]["valueString"] == "3"
    every = client.get("/fhir/Subscription/$status").json()
    assert every["total"] == 1
    assert client.get("/fhir/Subscription/$status?status=error").json()["total"] == 0

    events = client.get(
        f"/fhir/Subscription/{id}/$events?eventsSinceNumber=2&eventsUntilNumber=3"
        "&content=full-resource"
    ).json()
    assert kind(events) == "query-event"
    got = [int(part["valueString"]) for ev in params(events)["notification-event"]
           for part in ev["part"] if part["name"] == "event-number"]
    assert got == [2, 3]
    assert [e["resource"]["resourceType"] for e in events["entry"][1:]] == ["Task", "Task"]
    posted = client.post(f"/fhir/Subscription/{id}/$events", json={
        "resourceType": "Parameters",
        "parameter": [{"name": "eventsSinceNumber", "valueString": "3"}]})
    assert posted.status_code == 200
    assert len(params(posted.json())["notification-event"]) == 1
    bad = client.get(f"/fhir/Subscription/{id}/$events?content=everything")
    assert "content" in expressions(outcome(bad, 400))
    assert client.get("/fhir/Subscription/nope/$status").status_code == 404


def test_subscription_search_by_url_and_status(client: TestClient, hook: Receiver) -> None:
    active(client, hook, subscription(hook.url))
    create(client, subscription("https://example.org/other"))
    found = client.get("/fhir/Subscription", params={"url": hook.url}).json()
    assert found["total"] == 1
    found = client.get("/fhir/Subscription", params={"status": "active"}).json()
    assert found["total"] == 1


def test_signed_notifications(client: TestClient, hook: Receiver) -> None:
    import hashlib
    import hmac

    id = active(client, hook, subscription(hook.url))
    response = client.post(f"/fhir/Subscription/{id}/$signing-key")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    key = next(p["valueString"] for p in response.json()["parameter"] if p["name"] == "key")
    create(client, task())
    hook.wait_for(lambda bs: numbers(bs) == [1])
    headers, _ = hook.received[-1]
    raw = hook.raw[-1]
    t, v1 = (part.split("=", 1)[1] for part in headers["x-calaim-signature"].split(","))
    expected = hmac.new(key.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    # rotation: the next notification is signed with the new key only
    rotated = client.post(f"/fhir/Subscription/{id}/$signing-key").json()
    new_key = next(p["valueString"] for p in rotated["parameter"] if p["name"] == "key")
    assert new_key != key
    assert client.post("/fhir/Subscription/nope/$signing-key").status_code == 404


def test_heartbeat(client: TestClient, hook: Receiver) -> None:
    body = subscription(hook.url, content="empty")
    body["channel"]["extension"] = [{"url": f"{BP}/backport-heartbeat-period",
                                     "valueUnsignedInt": 1}]
    active(client, hook, body)
    found = hook.wait_for(lambda bs: any(kind(b) == "heartbeat" for b in bs), seconds=20)
    beat = next(b for b in found if kind(b) == "heartbeat")
    assert params(beat)["events-since-subscription-start"][0]["valueString"] == "0"


def test_end_turns_it_off(client: TestClient, hook: Receiver) -> None:
    id = active(client, hook, subscription(hook.url))
    sub = client.get(f"/fhir/Subscription/{id}").json()
    sub["end"] = "2020-01-01T00:00:00Z"
    assert client.put(f"/fhir/Subscription/{id}", json=sub).status_code == 200
    wait_status(client, id, "off")


def test_cli_lists_state_lag_and_last_error(client: TestClient, hook: Receiver, database: str
                                            ) -> None:
    import orjson
    from typer.testing import CliRunner

    from server.cli import app as cli

    id = active(client, hook, subscription(hook.url))
    hook.status = 500
    create(client, task())
    create(client, task())
    hook.wait_refused(1)
    result = CliRunner().invoke(cli, ["subscriptions", "--database-url", database])
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    row = next(r for r in rows if r["id"] == id)
    assert row["status"] == "active"
    assert row["lag"] == 2 and row["events"] == 2 and row["delivered"] == 0
    assert "HTTP 500" in row["last_error"]
    assert row["endpoint"] == hook.url


def test_the_example_subscription_is_accepted(client: TestClient, hook: Receiver) -> None:
    import orjson

    path = Path(__file__).parents[2] / "examples/subscriptions/subscription-task-owner.json"
    body = orjson.loads(path.read_bytes())
    body["channel"]["endpoint"] = hook.url  # no traffic beyond 127.0.0.1
    id = active(client, hook, body)
    create(client, task(owner="Organization/cbo-1"))
    create(client, task(owner="Organization/elsewhere"))
    hook.wait_for(lambda bs: numbers(bs) == [1])
    assert hook.received[0][0]["authorization"] == "Bearer replace-me"
    assert id
