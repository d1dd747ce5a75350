"""Storage errors answered by their cause, on both stores: the driver's own error for each
kind of storage fault (``server/store/faults.py``, ``error:CAUSE``) becomes the status a
client can act on, an OperationOutcome saying why, and one log line with the cause; a
failed write changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from server.store import faults
from tests.support import LogLines, TestClient, create, history_total, logged, outcome, patient

# cause: (status, issue code, words of the diagnostics, Retry-After expected)
CAUSES: dict[str, tuple[int, str, str, bool]] = {
    "busy": (503, "transient", "", True),
    "connection": (503, "transient", "unavailable", True),
    "ioerr": (503, "transient", "unavailable", True),
    "serialization": (503, "transient", "", True),
    "readonly": (503, "transient", "read-only", True),
    "full": (507, "exception", "disk is full", False),
    "corrupt": (500, "exception", "damaged", False),
    "toobig": (400, "too-costly", "too large", False),
}


@pytest.fixture
def store_log() -> Iterator[LogLines]:
    try:
        with logged("calaim_fhir.store") as lines:
            yield lines
    finally:
        faults.disarm()


def _check(response: object, cause: str, log: LogLines) -> None:
    status, code, words, retry = CAUSES[cause]
    body = outcome(response, status)
    issue = body["issue"][0]
    assert issue["code"] == code, body
    assert words.lower() in issue["diagnostics"].lower(), body
    assert ("retry-after" in response.headers) == retry  # type: ignore[attr-defined]
    # one line per failure: the driver's cause and the status it became
    assert any(m.startswith("database error") and m.endswith(f"-> {status}")
               for m in log.messages), log.messages
    log.messages.clear()


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_a_failed_commit_is_answered_by_its_cause_and_writes_nothing(
    client: TestClient, store_log: LogLines, cause: str
) -> None:
    pid = create(client, patient("Kept"))["id"]
    before = history_total(client)
    faults.arm(f"before-commit=error:{cause}")
    _check(client.post("/fhir/Patient", json=patient("Lost")), cause, store_log)
    _check(client.put(f"/fhir/Patient/{pid}", json={**patient("Lost"), "id": pid}), cause,
           store_log)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Lost"), "request": {"method": "POST", "url": "Patient"}}]}
    _check(client.post("/fhir", json=bundle), cause, store_log)
    faults.disarm()
    assert history_total(client) == before
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "Kept"


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_a_failed_read_is_answered_by_its_cause(
    client: TestClient, store_log: LogLines, cause: str
) -> None:
    pid = create(client, patient("Kept"))["id"]
    faults.arm(f"read=error:{cause}")
    _check(client.get(f"/fhir/Patient/{pid}"), cause, store_log)
    _check(client.get("/fhir/Patient?name=Kept"), cause, store_log)
    faults.disarm()
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_the_log_line_names_the_cause_and_no_content(
    client: TestClient, store_log: LogLines
) -> None:
    faults.arm("before-commit=error:full")
    outcome(client.post("/fhir/Patient", json=patient("Zyxwvutsrq")), 507)
    lines = [m for m in store_log.messages if "database error" in m]
    assert lines, store_log.messages
    assert any("full" in m.lower() for m in lines), lines
    assert all("Zyxwvutsrq" not in m for m in store_log.messages)


def test_damage_fails_the_health_check_on_both_stores(
    make_client: Callable[..., AbstractContextManager[TestClient]], store_log: LogLines
) -> None:
    with make_client() as fresh:  # an app of its own: the damage it meets stays with it
        assert fresh.get("/health").status_code == 200
        create(fresh, patient("Damaged"))
        faults.arm("read=error:corrupt")
        outcome(fresh.get("/fhir/Patient?_count=5"), 500)
        faults.disarm()
        health = outcome(fresh.get("/health"), 503)
        assert "damage was met while serving" in health["issue"][0]["diagnostics"]


def _postgresql(database_url: str) -> bool:
    return database_url.startswith(("postgresql:", "postgres:"))


@pytest.mark.parametrize("cause", ["serialization", "deadlock"])
def test_a_transaction_conflict_is_retried_inside_the_server(
    client: TestClient, store_log: LogLines, database_url: str, cause: str
) -> None:
    before = history_total(client)
    faults.arm(f"before-commit=error:{cause}@2")  # the first two commits fail
    response = client.post("/fhir/Patient", json=patient("Retried"))
    faults.disarm()
    if _postgresql(database_url):  # run again inside the server: written once
        assert response.status_code == 201, response.text
        assert history_total(client) == before + 1
        retried = [m for m in store_log.messages if "retried after a transaction conflict" in m]
        assert len(retried) == 2, store_log.messages
    else:  # SQLite has no such conflicts: the fault is its "locked", answered 503 at once
        outcome(response, 503)
        assert history_total(client) == before


def test_a_transaction_bundle_run_again_after_a_conflict_is_written_once(
    client: TestClient, store_log: LogLines, database_url: str
) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8f2c1d0e-4b7a-4e21-9a3c-2d5e6f7a8b9c",
         "resource": patient("Member"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:8f2c1d0e-4b7a-4e21-9a3c-2d5e6f7a8b9c"}},
         "request": {"method": "POST", "url": "Observation"}}]}  # fmt: skip
    before = history_total(client)
    faults.arm("before-commit=error:serialization@1")
    response = client.post("/fhir", json=bundle)
    faults.disarm()
    if not _postgresql(database_url):
        outcome(response, 503)
        assert history_total(client) == before
        return
    assert response.status_code == 200, response.text
    assert history_total(client) == before + 2
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    pid = locations[0].split("/")[1]
    observation = client.get(f"/fhir/{locations[1].rsplit('/_history', 1)[0]}").json()
    assert observation["subject"]["reference"] == f"Patient/{pid}"


def test_a_conflict_that_persists_is_503_and_writes_nothing(
    client: TestClient, store_log: LogLines
) -> None:
    before = history_total(client)
    faults.arm("before-commit=error:deadlock")
    response = client.post("/fhir/Patient", json=patient("Lost"))
    faults.disarm()
    outcome(response, 503)
    assert "retry-after" in response.headers
    assert history_total(client) == before
