"""Break the glass over HTTP on both stores, with real SMART tokens: ``ETREAT`` is asserted
per request (``X-Purpose-Of-Use: ETREAT``) and only by a client registered with it; every
assertion, granted or refused, is audited with ``purposeOfEvent`` ETREAT and reported by
``AuditEvent?purpose=ETREAT``.

Expectations by hand: ``medic`` (registered ``TREAT,ETREAT``) reads ``bg-p1`` once without
the header (purposes TREAT only: ETREAT is never ambient) and once with it (TREAT, ETREAT),
searches ``POST Patient/_search`` with it (200) and tries a ``PUT`` with it (403: break the
glass reads only, refused before its scope is looked at); ``plain`` (the default purposes)
asserts it once (403) and sends ``TREAT`` as the header once (400: only ETREAT is asserted).
The report holds exactly medic's read, search and refused write and plain's refused read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import TestClient, fhir_client, put

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
GLASS = {"X-Purpose-Of-Use": "ETREAT"}


def _client(database_url: str, tmp: Path, smart: TestClient, scope: str,
            **register: Any) -> dict[str, Any]:
    partner = Partner("RS384")
    partner.register(database_url, tmp, organization=ORGANIZATION, scope=scope, **register)
    response = smart.post(
        "/fhir/auth/token", headers=FORM, data=token_form(partner.assertion(TOKEN_URL), scope)
    )
    assert response.status_code == 200, response.text
    return {"id": partner.client_id,
            "headers": {"Authorization": f"Bearer {response.json()['access_token']}"}}


@pytest.fixture(scope="module")
def clients(database_url: str, tmp: Path, smart: TestClient, local: TestClient
            ) -> dict[str, dict[str, Any]]:
    assert put(local, {"resourceType": "Patient", "id": "bg-p1"}).status_code in (200, 201)
    scope = "system/Patient.rs"
    return {
        "medic": _client(database_url, tmp, smart, scope,
                         extra=("--purpose", "TREAT,ETREAT")),
        "plain": _client(database_url, tmp, smart, scope),
        "auditor": _client(database_url, tmp, smart, "system/AuditEvent.rs", role="auditor"),
    }


@pytest.fixture(scope="module")
def requests(smart: TestClient, clients: dict[str, dict[str, Any]]) -> None:
    medic, plain = clients["medic"]["headers"], clients["plain"]["headers"]
    assert smart.get("/fhir/Patient/bg-p1", headers=medic).status_code == 200
    assert smart.get("/fhir/Patient/bg-p1", headers={**medic, **GLASS}).status_code == 200
    searched = smart.post("/fhir/Patient/_search", data={"_id": "bg-p1"},
                          headers={**medic, **GLASS})
    assert searched.status_code == 200 and searched.json()["total"] == 1
    written = smart.put("/fhir/Patient/bg-p1", json={"resourceType": "Patient", "id": "bg-p1"},
                        headers={**medic, **GLASS, "Content-Type": "application/fhir+json"})
    assert written.status_code == 403
    assert "reads only" in written.json()["issue"][0]["diagnostics"]
    refused = smart.get("/fhir/Patient/bg-p1", headers={**plain, **GLASS})
    assert refused.status_code == 403
    assert "ETREAT" in refused.json()["issue"][0]["diagnostics"]
    wrong = smart.get("/fhir/Patient/bg-p1", headers={**plain, "X-Purpose-Of-Use": "TREAT"})
    assert wrong.status_code == 400
    smart.app.state.audit.flush()


def _events(smart: TestClient, clients: dict[str, dict[str, Any]], query: str
            ) -> list[dict[str, Any]]:
    agents = f"{clients['medic']['id']},{clients['plain']['id']}"
    response = smart.get(f"/fhir/AuditEvent?agent={agents}&{query}",
                         headers=clients["auditor"]["headers"])
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _who(event: dict[str, Any]) -> str:
    agent = next(a for a in event["agent"] if a["requestor"])
    return str(agent["who"]["identifier"]["value"])


def _purposes(event: dict[str, Any]) -> list[str]:
    return sorted(c["coding"][0]["code"] for c in event.get("purposeOfEvent", []))


def test_etreat_is_never_ambient_and_every_assertion_is_audited(
    smart: TestClient, clients: dict[str, dict[str, Any]], requests: None
) -> None:
    events = _events(smart, clients, "_count=50")
    medic = [e for e in events if _who(e) == clients["medic"]["id"]]
    assert sorted((e["outcomeDesc"], _purposes(e)) for e in medic) == [
        ("HTTP 200", ["ETREAT", "TREAT"]), ("HTTP 200", ["ETREAT", "TREAT"]),
        ("HTTP 200", ["TREAT"]), ("HTTP 403", ["ETREAT", "TREAT"])]
    plain = {e["outcomeDesc"]: _purposes(e) for e in events
             if _who(e) == clients["plain"]["id"]}
    assert plain == {"HTTP 403": ["ETREAT", "HOPERAT", "HPAYMT", "TREAT"],
                     "HTTP 400": ["HOPERAT", "HPAYMT", "TREAT"]}


@pytest.mark.parametrize("purpose", ["ETREAT", f"{ACT_REASON}|ETREAT", "ETREAT,CAREMGT"])
def test_the_break_glass_report(
    smart: TestClient, clients: dict[str, dict[str, Any]], requests: None, purpose: str
) -> None:
    report = _events(smart, clients, f"purpose={purpose}")
    medic, plain = clients["medic"]["id"], clients["plain"]["id"]
    assert sorted((_who(e), e["outcomeDesc"]) for e in report) == sorted(
        [(medic, "HTTP 200"), (medic, "HTTP 200"), (medic, "HTTP 403"), (plain, "HTTP 403")]
    )
    for event in report:
        assert "ETREAT" in _purposes(event)
        whats = [x["what"].get("reference", "") for x in event["entity"] if "what" in x]
        assert any(w.startswith("Patient/bg-p1") for w in whats), event


def test_report_matches_whole_codes_only(
    smart: TestClient, clients: dict[str, dict[str, Any]], requests: None
) -> None:
    assert _events(smart, clients, "purpose=TREAT") != []
    assert _events(smart, clients, "purpose=TREA") == []
    both = _events(smart, clients, "purpose=ETREAT&purpose=HPAYMT")  # each param must hold
    assert [(_who(e), e["outcomeDesc"]) for e in both] == [(clients["plain"]["id"], "HTTP 403")]
    assert _events(smart, clients, "purpose=http://other.example|ETREAT") == []


@pytest.fixture(scope="module")
def narrowed(database_url: str, local: TestClient) -> Iterator[TestClient]:
    """The app with care relationships on; an emergency department (a provider) with no
    relationship to member ``bg-p2``."""
    for body in (
        {"resourceType": "Organization", "id": "bg-er", "name": "ER", "type": [{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/organization-type",
             "code": "prov"}]}]},
        {"resourceType": "Patient", "id": "bg-p2"},
        {"resourceType": "Condition", "id": "bg-c2", "code": {"text": "x"},
         "subject": {"reference": "Patient/bg-p2"}},
    ):
        assert put(local, body).status_code in (200, 201)
    with fhir_client(database_url, auth="smart", access_relationships=True) as client:
        yield client


def test_asserted_break_the_glass_reaches_a_member_without_a_relationship(
    database_url: str, tmp: Path, narrowed: TestClient
) -> None:
    scope = "system/Patient.rs system/Condition.rs"
    partner = Partner("RS384")
    partner.register(database_url, tmp, organization="Organization/bg-er", scope=scope,
                     extra=("--purpose", "TREAT,ETREAT"))
    response = narrowed.post("/fhir/auth/token", headers=FORM,
                             data=token_form(partner.assertion(TOKEN_URL), scope))
    assert response.status_code == 200, response.text
    er = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert narrowed.get("/fhir/Condition/bg-c2", headers=er).status_code == 404
    assert narrowed.get("/fhir/Condition/bg-c2", headers={**er, **GLASS}).status_code == 200
    found = narrowed.get("/fhir/Condition?subject=Patient/bg-p2", headers={**er, **GLASS})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == ["bg-c2"]
    assert narrowed.get("/fhir/Condition?subject=Patient/bg-p2", headers=er).json().get(
        "entry", []) == []
