"""The audit trail over HTTP on both stores, with real SMART tokens: one AuditEvent per
interaction (reads, searches, refusals by authentication, by scope and by the door; writes
from the outbox), read through the read-only ``AuditEvent`` view by an auditor only.

Expectations by hand: a reader client (``system/Patient.rs``) reads ``au-p1`` twice, searches
``Patient?_id=au-p1``, reads the unknown ``au-none`` (404), an Observation (403: no scope),
and one request comes without a token (401). Each is one AuditEvent; reading AuditEvent is none.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import FHIR_JSON, TestClient, fhir_client, put

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
INTERACTION = "http://hl7.org/fhir/restful-interaction"


def _token(smart: TestClient, partner: Partner, scope: str) -> dict[str, str]:
    response = smart.post(
        "/fhir/auth/token", headers=FORM, data=token_form(partner.assertion(TOKEN_URL), scope)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def scene(local: TestClient) -> None:
    for body in (
        {"resourceType": "Patient", "id": "au-p1", "name": [{"family": "Audited"}]},
        {"resourceType": "Observation", "id": "au-o1", "status": "final",
         "code": {"text": "x"}, "subject": {"reference": "Patient/au-p1"}},
    ):
        assert put(local, body).status_code in (200, 201)


@pytest.fixture(scope="module")
def reader(database_url: str, tmp: Path, smart: TestClient, scene: None) -> dict[str, Any]:
    partner = Partner("RS384")
    partner.register(database_url, tmp, organization=ORGANIZATION, scope="system/Patient.rs")
    return {"id": partner.client_id,
            "headers": _token(smart, partner, "system/Patient.rs")}


@pytest.fixture(scope="module")
def auditor(database_url: str, tmp: Path, smart: TestClient) -> dict[str, Any]:
    partner = Partner("ES384")
    partner.register(database_url, tmp, organization=ORGANIZATION, role="auditor",
                     scope="system/AuditEvent.rs")
    return {"id": partner.client_id,
            "headers": _token(smart, partner, "system/AuditEvent.rs")}


@pytest.fixture(scope="module")
def interactions(smart: TestClient, reader: dict[str, Any]) -> None:
    headers = reader["headers"]
    assert smart.get("/fhir/Patient/au-p1", headers=headers).status_code == 200
    assert smart.get("/fhir/Patient/au-p1", headers=headers).status_code == 200
    assert smart.get("/fhir/Patient?_id=au-p1", headers=headers).status_code == 200
    assert smart.get("/fhir/Patient/au-none", headers=headers).status_code == 404
    assert smart.get("/fhir/Observation/au-o1", headers=headers).status_code == 403
    assert smart.get("/fhir/Patient/au-p1").status_code == 401
    smart.app.state.audit.flush()


def _events(smart: TestClient, auditor: dict[str, Any], query: str) -> list[dict[str, Any]]:
    response = smart.get(f"/fhir/AuditEvent?{query}", headers=auditor["headers"])
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _subtype(event: dict[str, Any]) -> str:
    coding = event["subtype"][0]
    assert coding["system"] == INTERACTION
    return str(coding["code"])


def _requestor(event: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in event["agent"] if a["requestor"])


def test_each_read_and_search_is_one_event_with_what_it_returned(
    smart: TestClient, reader: dict[str, Any], auditor: dict[str, Any], interactions: None
) -> None:
    events = _events(smart, auditor, f"agent={reader['id']}")
    assert sorted(_subtype(e) for e in events) == ["read", "read", "read", "read", "search-type"]
    reads = [e for e in events if _subtype(e) == "read" and e["outcome"] == "0"]
    assert len(reads) == 2
    for event in reads:
        assert event["type"]["code"] == "rest" and event["action"] == "R"
        whats = [x["what"]["reference"] for x in event["entity"]]
        assert "Patient/au-p1/_history/1" in whats
        agent = _requestor(event)
        assert agent["who"]["identifier"]["value"] == reader["id"]
        assert agent["network"]["address"] == "127.0.0.1"
        assert {"reference": ORGANIZATION} in [a["who"] for a in event["agent"]]
        purposes = {c["coding"][0]["code"] for c in event["purposeOfEvent"]}
        assert purposes == {"TREAT", "HPAYMT", "HOPERAT"}
    (search,) = [e for e in events if _subtype(e) == "search-type"]
    query = next(x["query"] for x in search["entity"] if "query" in x)
    assert base64.b64decode(query).decode() == "_id=au-p1"
    assert "Patient/au-p1/_history/1" in [x.get("what", {}).get("reference")
                                          for x in search["entity"]]


def test_refusals_are_recorded(
    smart: TestClient, reader: dict[str, Any], auditor: dict[str, Any], interactions: None
) -> None:
    failed = _events(smart, auditor, f"agent={reader['id']}&outcome=4")
    assert sorted(e["outcomeDesc"] for e in failed) == ["HTTP 403", "HTTP 404"]
    missing = next(e for e in failed if e["outcomeDesc"] == "HTTP 404")
    assert missing["entity"][0]["what"]["reference"] == "Patient/au-none"
    anonymous = [e for e in _events(smart, auditor, "entity=Patient/au-p1&outcome=4")
                 if e["outcomeDesc"] == "HTTP 401"]
    assert len(anonymous) == 1
    assert anonymous[0]["agent"][0]["who"] == {"display": "unauthenticated"}


def test_search_parameters(
    smart: TestClient, reader: dict[str, Any], auditor: dict[str, Any], interactions: None
) -> None:
    mine = f"agent={reader['id']}"
    assert len(_events(smart, auditor, f"{mine}&subtype=read")) == 4
    assert len(_events(smart, auditor, f"{mine}&subtype={INTERACTION}|search-type")) == 1
    assert _events(smart, auditor, f"{mine}&subtype=urn:other|read") == []
    assert len(_events(smart, auditor, f"{mine}&type=rest")) == 5
    assert _events(smart, auditor, f"{mine}&type=login") == []
    assert len(_events(smart, auditor, f"{mine}&patient=au-p1")) == 3
    assert len(_events(smart, auditor, f"{mine}&entity=Patient/au-p1")) == 3
    assert len(_events(smart, auditor, f"{mine}&date=ge2000-01-01")) == 5
    assert _events(smart, auditor, f"{mine}&date=lt2000-01-01") == []
    assert len(_events(smart, auditor, f"{mine}&outcome=0,4")) == 5
    first = smart.get(f"/fhir/AuditEvent?{mine}&_count=3", headers=auditor["headers"]).json()
    assert len(first["entry"]) == 3
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = smart.get(nxt, headers=auditor["headers"]).json()
    assert len(second["entry"]) == 2
    ids = {e["resource"]["id"] for e in first["entry"] + second["entry"]}
    assert len(ids) == 5
    bad = smart.get("/fhir/AuditEvent?name=x", headers=auditor["headers"])
    assert bad.status_code == 400
    one = first["entry"][0]["resource"]
    read = smart.get(f"/fhir/AuditEvent/{one['id']}", headers=auditor["headers"])
    assert read.status_code == 200 and read.json() == one
    assert smart.get("/fhir/AuditEvent/nope", headers=auditor["headers"]).status_code == 404


def test_writes_are_recorded_from_the_outbox(
    smart: TestClient, local: TestClient, auditor: dict[str, Any], interactions: None
) -> None:
    body = {"resourceType": "Patient", "id": "au-w1", "name": [{"family": "Written"}]}
    assert put(local, body).status_code == 201
    body["name"] = [{"family": "Rewritten"}]
    assert put(local, body).status_code == 200
    smart.app.state.audit.flush()
    events = _events(smart, auditor, "entity=Patient/au-w1")
    assert sorted((_subtype(e), e["action"]) for e in events) == [
        ("update", "C"), ("update", "U")  # PUT made it (update as create), then changed it
    ]
    whats = sorted(e["entity"][0]["what"]["reference"] for e in events)
    assert whats == ["Patient/au-w1/_history/1", "Patient/au-w1/_history/2"]
    assert all(_requestor(e)["who"]["identifier"]["value"] == "local" for e in events)


def test_only_an_auditor_reads_audit_events_and_nobody_writes_them(
    smart: TestClient, reader: dict[str, Any], auditor: dict[str, Any], interactions: None
) -> None:
    assert smart.get("/fhir/AuditEvent", headers=reader["headers"]).status_code == 403
    assert smart.get("/fhir/AuditEvent").status_code == 401
    event = {"resourceType": "AuditEvent", "id": "x"}
    for method, path in (("POST", "/fhir/AuditEvent"), ("PUT", "/fhir/AuditEvent/x"),
                         ("DELETE", "/fhir/AuditEvent/x")):
        response = smart.request(method, path, json=event,
                                 headers={**auditor["headers"], "Content-Type": FHIR_JSON})
        assert response.status_code == 405, (method, response.text)
    smart.app.state.audit.flush()
    # reading (or trying to) AuditEvent is never itself an event
    assert _events(smart, auditor, f"agent={auditor['id']}") == []
    assert len(_events(smart, auditor, f"agent={reader['id']}")) == 5  # its refusal is not one


@pytest.fixture(scope="module")
def synchronous(database_url: str, scene: None) -> Iterator[TestClient]:
    with fhir_client(database_url, audit_reads="sync", audit_flush_seconds=60) as client:
        yield client


def test_sync_reads_are_durable_before_the_answer(synchronous: TestClient) -> None:
    before = synchronous.get("/fhir/AuditEvent?entity=Observation/au-o1&subtype=read").json()
    assert synchronous.get("/fhir/Observation/au-o1").status_code == 200
    # no flush: the record was committed before the answer
    after = synchronous.get("/fhir/AuditEvent?entity=Observation/au-o1&subtype=read").json()
    assert len(after.get("entry", [])) == len(before.get("entry", [])) + 1
    event = after["entry"][0]["resource"]
    assert "Patient/au-p1" in [x["what"]["reference"] for x in event["entity"]]


def test_reads_off_records_writes_only(database_url: str, scene: None) -> None:
    query = "/fhir/AuditEvent?entity=Patient/au-p1&subtype=read&agent=local"
    with fhir_client(database_url, audit_reads="off") as client:
        before = len(client.get(query).json().get("entry", []))
        assert client.get("/fhir/Patient/au-p1").status_code == 200
        put(client, {"resourceType": "Patient", "id": "au-off", "name": [{"family": "O"}]})
        client.app.state.audit.flush()
        written = client.get("/fhir/AuditEvent?entity=Patient/au-off").json()["entry"]
        assert [e["resource"]["action"] for e in written] == ["C"]
        assert len(client.get(query).json().get("entry", [])) == before


def test_a_transaction_records_each_version_and_a_refused_write_none(
    smart: TestClient, local: TestClient, auditor: dict[str, Any], interactions: None
) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": f"au-t{n}"},
         "request": {"method": "PUT", "url": f"Patient/au-t{n}"}} for n in (1, 2)
    ]}
    response = local.post("/fhir", json=bundle, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    bad = {"resourceType": "Patient", "id": "au-t3", "gender": "neither"}
    assert put(local, bad).status_code in (400, 422)
    local.app.state.audit.flush()
    for n in (1, 2):
        writes = _events(smart, auditor, f"entity=Patient/au-t{n}&subtype=update")
        assert [(e["action"], e["entity"][0]["what"]["reference"]) for e in writes] == [
            ("C", f"Patient/au-t{n}/_history/1")
        ]
    (transaction,) = _events(smart, auditor, "entity=Patient/au-t1&subtype=transaction")
    assert transaction["action"] == "E"
    (refused,) = _events(smart, auditor, "entity=Patient/au-t3")
    assert (_subtype(refused), refused["outcome"]) == ("update", "4")


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
def test_a_large_search_answer_lists_every_entity_compressed_or_not(
    database_url: str, tmp: Path, smart: TestClient, local: TestClient,
    auditor: dict[str, Any], encoding: str,
) -> None:
    ids = [f"au-big-{encoding}-{n:02d}" for n in range(30)]
    for rid in ids:  # a long name each: the page is far above gzip's minimum
        body = {"resourceType": "Patient", "id": rid,
                "name": [{"family": f"Large-{encoding}", "given": ["G" * 200]}]}
        assert put(local, body).status_code in (200, 201)
    partner = Partner("RS384")
    partner.register(database_url, tmp, organization=ORGANIZATION, scope="system/Patient.rs")
    headers = {**_token(smart, partner, "system/Patient.rs"), "Accept-Encoding": encoding}
    response = smart.get(f"/fhir/Patient?family=Large-{encoding}&_count=50", headers=headers)
    assert response.status_code == 200
    assert (response.headers.get("content-encoding") == "gzip") == (encoding == "gzip")
    assert len(response.json()["entry"]) == 30
    smart.app.state.audit.flush()
    (event,) = _events(smart, auditor, f"agent={partner.client_id}")
    whats = {x["what"]["reference"] for x in event["entity"] if "what" in x}
    returned = {w for w in whats if "/_history/" in w}
    assert returned == {f"Patient/{rid}/_history/1" for rid in ids}
    assert len(_events(smart, auditor, f"agent={partner.client_id}&patient={ids[7]}")) == 1
