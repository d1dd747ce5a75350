"""The notification Bundle's events, as a receiver gets them: each event's parameter and entry
(spliced into every subscription's Bundle as serialised JSON) per the backport profile, and
``$events`` the same, indented on ``_pretty=true``."""

from __future__ import annotations

import json
from typing import Any

from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_subscriptions import (
    active,
    kind,
    numbers,
    params,
    subscription,
    task,
)
from tests.support import TestClient, create


def _events(bundles: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each event-notification's parameters and its entries after the status."""
    return [(params(b), b["entry"][1:]) for b in bundles if kind(b) == "event-notification"]


def _base(bundle_params: dict[str, Any]) -> str:
    reference = str(bundle_params["subscription"][0]["valueReference"]["reference"])
    return reference.rsplit("/Subscription/", 1)[0]


def test_full_resource_events_carry_each_version_as_stored(client: TestClient,
                                                           hook: Receiver) -> None:
    active(client, hook, subscription(hook.url, content="full-resource"))
    id = create(client, task())["id"]
    updated = client.put(f"/fhir/Task/{id}", json={**task(status="received"), "id": id})
    assert updated.status_code == 200
    assert client.delete(f"/fhir/Task/{id}").status_code in (200, 204)
    hook.wait_for(lambda bs: numbers(bs) == [1, 2, 3])
    first = client.get(f"/fhir/Task/{id}/_history/1").json()
    second = client.get(f"/fhir/Task/{id}/_history/2").json()

    p, entries = [], []
    for bundle_params, bundle_entries in _events(hook.bundles()):
        p += bundle_params["notification-event"]
        entries += bundle_entries
        base = _base(bundle_params)
    assert [e["part"][0] for e in p] == [
        {"name": "event-number", "valueString": str(n)} for n in (1, 2, 3)
    ]
    assert [[q["name"] for q in e["part"]] for e in p] == [
        ["event-number", "timestamp", "focus"]
    ] * 3
    assert [e["part"][2]["valueReference"]["reference"] for e in p] == [
        f"{base}/Task/{id}/_history/{v}" for v in (1, 2, 3)
    ]
    assert entries == [
        {"fullUrl": f"{base}/Task/{id}/_history/1", "request": {"method": "POST", "url": "Task"},
         "response": {"status": "201"}, "resource": first},
        {"fullUrl": f"{base}/Task/{id}/_history/2",
         "request": {"method": "PUT", "url": f"Task/{id}"}, "response": {"status": "200"},
         "resource": second},
        {"fullUrl": f"{base}/Task/{id}/_history/3",
         "request": {"method": "DELETE", "url": f"Task/{id}"}, "response": {"status": "204"}},
    ]


def test_empty_events_carry_numbers_and_timestamps_only(client: TestClient,
                                                         hook: Receiver) -> None:
    active(client, hook, subscription(hook.url, content="empty"))
    create(client, task())
    create(client, task())
    hook.wait_for(lambda bs: numbers(bs) == [1, 2])
    for bundle_params, entries in _events(hook.bundles()):
        assert entries == []
        assert "topic" not in bundle_params
        for event in bundle_params["notification-event"]:
            assert [q["name"] for q in event["part"]] == ["event-number", "timestamp"]


def test_events_pretty_is_the_same_bundle_indented(client: TestClient, hook: Receiver) -> None:
    id = active(client, hook, subscription(hook.url))
    create(client, task())
    create(client, task())
    hook.wait_for(lambda bs: numbers(bs) == [1, 2])
    url = f"/fhir/Subscription/{id}/$events?content=full-resource"
    plain = client.get(url)
    pretty = client.get(url + "&_pretty=true")
    assert plain.status_code == pretty.status_code == 200
    assert "\n  " in pretty.text and "\n" not in plain.text
    a, b = json.loads(plain.text), json.loads(pretty.text)
    for bundle in (a, b):  # generated per answer
        bundle.pop("id")
        bundle.pop("timestamp")
        bundle["entry"][0].pop("fullUrl")
    assert a == b
    assert [e["part"][0]["valueString"] for e in params(a)["notification-event"]] == ["1", "2"]
    assert [e["resource"]["resourceType"] for e in a["entry"][1:]] == ["Task", "Task"]
