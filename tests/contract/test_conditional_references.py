"""Conditional references (``Practitioner?identifier=...``) outside transactions: batch
entries, REST creates, updates and patches resolve them, each write on its own; a reference that
matches nothing or several resources fails that write and is never stored as text."""

from __future__ import annotations

from typing import Any

from tests.support import (
    TestClient,
    create,
    expressions,
    history_total,
    observation,
    outcome,
    patient,
    put,
)

SYS = "http://example.org/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi"


def _practitioner(npi: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": NPI, "value": npi}],
        "name": [{"family": "Doc"}],
    }


def _npi(value: str) -> dict[str, str]:
    return {"reference": f"Practitioner?identifier={NPI}|{value}"}


def _batch(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources
        ],
    }


def test_batch_entries_resolve_conditional_references_each_on_its_own(client: TestClient
                                                                      ) -> None:
    doc = create(client, _practitioner("111"))
    create(client, _practitioner("222"))
    create(client, _practitioner("222"))
    before = history_total(client)
    response = client.post("/fhir", json=_batch(
        patient("Resolved", generalPractitioner=[_npi("111")]),
        patient("NoMatch", generalPractitioner=[_npi("999")]),
        patient("Several", generalPractitioner=[_npi("222")]),
        patient("Plain"),
    ))
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201", "400", "412", "201"]
    stored = client.get("/fhir/" + entries[0]["response"]["location"].split("/_history")[0])
    assert stored.json()["generalPractitioner"] == [{"reference": f"Practitioner/{doc['id']}"}]
    no_match = entries[1]["response"]["outcome"]
    assert no_match["issue"][0]["code"] == "not-found"
    assert "matches no resource" in no_match["issue"][0]["diagnostics"]
    assert expressions(no_match) == ["Bundle.entry[1].resource.generalPractitioner[0].reference"]
    several = entries[2]["response"]["outcome"]
    assert several["issue"][0]["code"] == "multiple-matches"
    assert history_total(client) == before + 2, "only the resolved and the plain entries"
    # nothing stored keeps a conditional reference as text
    gp = {"general-practitioner": f"Practitioner/{doc['id']}"}
    found = client.get("/fhir/Patient", params=gp)
    assert [p["resource"]["name"][0]["family"] for p in found.json()["entry"]] == ["Resolved"]


def test_rest_create_update_and_patch_resolve_conditional_references(client: TestClient
                                                                     ) -> None:
    subject = create(client, patient("Subject", identifier=(SYS, "s1")))
    other = create(client, patient("Other", identifier=(SYS, "s2")))
    created = create(client, observation(f"Patient?identifier={SYS}|s1"))
    assert created["subject"]["reference"] == f"Patient/{subject['id']}"
    # a search the server can read back: the reference is indexed as resolved
    found = client.get("/fhir/Observation", params={"subject": f"Patient/{subject['id']}"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [created["id"]]
    updated = put(client, {**created, "subject": {"reference": f"Patient?identifier={SYS}|s2"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["subject"]["reference"] == f"Patient/{other['id']}"
    patched = client.patch(
        f"/fhir/Observation/{created['id']}",
        json=[{"op": "replace", "path": "/subject/reference",
               "value": f"Patient?identifier={SYS}|s1"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["subject"]["reference"] == f"Patient/{subject['id']}"


def test_a_write_with_an_unresolvable_conditional_reference_changes_nothing(client: TestClient
                                                                            ) -> None:
    before = history_total(client)
    body = outcome(client.post(
        "/fhir/Observation", json=observation(f"Patient?identifier={SYS}|nobody"),
        headers={"Content-Type": "application/fhir+json"},
    ), 400)
    assert expressions(body) == ["Observation.subject.reference"], body
    bad = outcome(client.post(
        "/fhir/Observation", json=observation("Patient?bogus-parameter=1"),
        headers={"Content-Type": "application/fhir+json"},
    ), 400)
    assert "Conditional reference" in bad["issue"][0]["diagnostics"]
    assert history_total(client) == before
