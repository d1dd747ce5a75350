"""Fifty submitters of one ECM referral at once create exactly one; fifty different referrals
for one member at once leave exactly one open referral and 49 duplicates linked to it — on real
servers, one process and two, on both stores (docs/ecm-workflow.md, "Duplicates": decided in
the write unit under the locked (member, program) criteria)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.durability.conftest import Server, ServerFactory, store_consistency

SUBMITTERS = 50
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "resources"
REFERRAL_STATUS = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-referral-status"
DUPLICATE_OF = "http://calaim-fhir.org/fhir/StructureDefinition/referral-duplicate-of"
MEMBER = "Patient/ecm-member-example"


def _servers(start_server: ServerFactory, url: str, store: str, topology: str) -> list[Server]:
    if topology == "one-process":
        return [start_server(url)]
    if store == "postgresql":
        return [start_server(url, workers=2)]
    servers = [start_server(url, ready=False) for _ in range(2)]
    for server in servers:
        server.wait_ready()
    return servers


def _load_examples(client: httpx.Client) -> int:
    """The example resources the referrals name (not the example referral and its Task)."""
    entries = [
        {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        for resource in (json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json")))
        if resource["resourceType"] not in ("Task", "ServiceRequest")
    ]
    answer = client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                   "entry": entries})
    assert answer.status_code == 200, answer.text[:500]
    return len(entries)


def _intake(number: str) -> dict[str, Any]:
    referral = json.loads((EXAMPLES / "ServiceRequest-ecm-referral-example.json").read_text())
    referral.pop("id")
    referral["identifier"] = [{"system": "https://calaim-fhir.org/fhir/sid/ecm-referral",
                               "value": number}]
    url = "urn:uuid:6d1f2b4e-0000-4000-8000-" + number[-12:].rjust(12, "0")
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": url},
        "for": {"reference": MEMBER},
        "requester": {"reference": "Organization/casa-segura-housing"},
        "owner": {"reference": "Organization/golden-poppy-health-plan"},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": url, "resource": referral,
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }


def _race(servers: list[Server], bundles: list[dict[str, Any]]) -> list[httpx.Response]:
    answers: list[httpx.Response | None] = [None] * len(bundles)
    failures: list[str] = []
    barrier = threading.Barrier(len(bundles), timeout=60)

    def submit(i: int) -> None:
        try:
            with servers[i % len(servers)].client(timeout=120) as client:
                barrier.wait()
                answers[i] = client.post("", json=bundles[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=submit, args=(i,), daemon=True)
               for i in range(len(bundles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not any(t.is_alive() for t in threads), "a submitter hung"
    assert failures == []
    return [a for a in answers if a is not None]


def _all(client: httpx.Client, query: str) -> list[dict[str, Any]]:
    bundle = client.get(f"/{query}&_count=200").json()
    return [e["resource"] for e in bundle.get("entry") or ()]


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["one-process", "two-processes"])
def test_fifty_submitters_of_one_referral_create_exactly_one(
    start_server: ServerFactory, database_url: str, store: str, topology: str
) -> None:
    servers = _servers(start_server, database_url, store, topology)
    with servers[0].client() as client:
        loaded = _load_examples(client)
    answers = _race(servers, [_intake("REF-RACE-000000000001")] * SUBMITTERS)
    assert [a.status_code for a in answers] == [200] * SUBMITTERS, [
        a.text[:300] for a in answers if a.status_code != 200
    ]
    statuses = [[e["response"]["status"] for e in a.json()["entry"]] for a in answers]
    assert sorted(statuses).count(["201 Created", "201 Created"]) == 1
    assert sorted(statuses).count(["200 OK", "200 OK"]) == SUBMITTERS - 1
    locations = {
        tuple(e["response"]["location"].split("/_history")[0] for e in a.json()["entry"])
        for a in answers
    }
    assert len(locations) == 1
    with servers[-1].client() as client:
        requests = _all(client, "ServiceRequest?identifier=https://calaim-fhir.org/fhir/sid/"
                                "ecm-referral|REF-RACE-000000000001")
        tasks = _all(client, f"Task?subject={MEMBER}")
    assert len(requests) == 1 and len(tasks) == 1
    assert tasks[0]["businessStatus"]["coding"][0]["code"] == "received"
    assert store_consistency(database_url) == {"resources": loaded + 2, "history": loaded + 2}


@pytest.mark.slow
def test_fifty_referrals_for_one_member_leave_one_open_and_49_duplicates(
    start_server: ServerFactory, database_url: str, store: str
) -> None:
    servers = _servers(start_server, database_url, store, "two-processes")
    with servers[0].client() as client:
        _load_examples(client)
    bundles = [_intake(f"REF-MANY-{i:012d}") for i in range(SUBMITTERS)]
    answers = _race(servers, bundles)
    assert [a.status_code for a in answers] == [200] * SUBMITTERS
    with servers[-1].client() as client:
        tasks = _all(client, f"Task?subject={MEMBER}")
    assert len(tasks) == SUBMITTERS
    by_status: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_status.setdefault(task["businessStatus"]["coding"][0]["code"], []).append(task)
    assert sorted((k, len(v)) for k, v in by_status.items()) == [
        ("duplicate", SUBMITTERS - 1),
        ("received", 1),
    ]
    (original,) = by_status["received"]
    for duplicate in by_status["duplicate"]:
        links = [e for e in duplicate["extension"] if e["url"] == DUPLICATE_OF]
        assert links == [{"url": DUPLICATE_OF,
                          "valueReference": {"reference": f"Task/{original['id']}"}}]
        # the clock is the open referral's
        assert duplicate["restriction"] == original["restriction"]
