"""GET [base]/metadata: the CapabilityStatement, and that it matches what the server does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import TestClient, outcome

TYPE_INTERACTIONS = {
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
}
READ_ONLY = {"read", "vread", "history-instance", "history-type", "search-type"}
CONFORMANCE_TYPES = {
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "SearchParameter",
    "OperationDefinition",
}
SYSTEM_INTERACTIONS = {"transaction", "batch", "history-system"}

#: Minimal valid instances of types a CalAIM client uses (required elements only).
SAMPLES: dict[str, dict[str, Any]] = {
    "Patient": {},
    "Organization": {"name": "Org"},
    "Practitioner": {},
    "Observation": {"status": "final", "code": {"text": "x"}},
    "Condition": {"subject": {"reference": "Patient/p"}},
    "Encounter": {
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    },
    "CarePlan": {"status": "active", "intent": "plan", "subject": {"reference": "Patient/p"}},
    "ServiceRequest": {
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p"},
    },
    "Task": {"status": "requested", "intent": "order"},
    "Goal": {
        "lifecycleStatus": "active",
        "description": {"text": "x"},
        "subject": {"reference": "Patient/p"},
    },
    "Coverage": {
        "status": "active",
        "beneficiary": {"reference": "Patient/p"},
        "payor": [{"reference": "Organization/o"}],
    },
    "QuestionnaireResponse": {"status": "completed"},
    "Consent": {"status": "active", "scope": {"text": "x"}, "category": [{"text": "x"}]},
}

#: Real R4 resource types this server excludes (see docs/resource-types.md).
NOT_LISTED_CANDIDATES = (
    "PlanDefinition",
    "ActivityDefinition",
    "MedicinalProduct",
    "EffectEvidenceSynthesis",
)


@pytest.fixture
def statement(client: TestClient) -> dict[str, Any]:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    return body


def _resources(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["type"]: r for r in statement["rest"][0]["resource"]}


def test_capability_statement_basics(statement: dict[str, Any]) -> None:
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["format"] == ["json"]
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert statement["patchFormat"] == [
        "application/json-patch+json",  # JSON Patch
        "application/fhir+json",  # FHIRPath Patch
        "application/merge-patch+json",  # JSON Merge Patch
    ]
    rest = statement["rest"]
    assert len(rest) == 1 and rest[0]["mode"] == "server"
    system = {i["code"] for i in rest[0].get("interaction", [])}
    assert SYSTEM_INTERACTIONS <= system, system


def test_every_listed_type_has_the_interactions_and_search_params(
    statement: dict[str, Any],
) -> None:
    resources = _resources(statement)
    assert len(resources) > 100
    for type_, resource in resources.items():
        codes = {i["code"] for i in resource["interaction"]}
        params = {p["name"] for p in resource.get("searchParam", [])}
        assert {"_id", "_lastUpdated"} <= params, f"{type_}: {params}"
        if type_ in CONFORMANCE_TYPES:  # the server's definitions: read-only
            assert codes == READ_ONLY, f"{type_}: {codes}"
            assert resource.get("conditionalCreate") is False
            continue
        assert TYPE_INTERACTIONS <= codes, f"{type_}: missing {TYPE_INTERACTIONS - codes}"
        assert resource.get("conditionalCreate") is True
        assert resource.get("conditionalUpdate") is True
        assert resource.get("conditionalDelete") in ("single", "multiple")
        assert resource.get("versioning") in ("versioned", "versioned-update")
    assert "identifier" in {p["name"] for p in resources["Patient"]["searchParam"]}


def test_listed_types_really_work(client: TestClient, statement: dict[str, Any]) -> None:
    resources = _resources(statement)
    missing = [t for t in SAMPLES if t not in resources]
    assert not missing, f"CalAIM types not listed: {missing}"
    for type_, minimal in SAMPLES.items():
        created = client.post(f"/fhir/{type_}", json={"resourceType": type_, **minimal})
        assert created.status_code == 201, f"{type_}: {created.text}"
        rid = created.json()["id"]
        read = client.get(f"/fhir/{type_}/{rid}")
        assert read.status_code == 200 and read.json()["id"] == rid, type_
        search = client.get(f"/fhir/{type_}", params={"_id": rid})
        assert search.status_code == 200, f"{type_}: {search.text}"
        assert [e["resource"]["id"] for e in search.json().get("entry", [])] == [rid], type_
        history = client.get(f"/fhir/{type_}/{rid}/_history")
        assert history.status_code == 200 and len(history.json()["entry"]) == 1


def test_a_type_not_listed_is_404(client: TestClient, statement: dict[str, Any]) -> None:
    resources = _resources(statement)
    unlisted = [t for t in NOT_LISTED_CANDIDATES if t not in resources]
    assert unlisted, "expected some R4 types to be excluded"
    for type_ in unlisted:
        outcome(client.get(f"/fhir/{type_}"), 404)
        outcome(client.post(f"/fhir/{type_}", json={"resourceType": type_, "status": "draft"}), 404)
    outcome(client.get("/fhir/NotAType/1"), 404)


def test_metadata_honours_pretty_and_format(client: TestClient) -> None:
    pretty = client.get("/fhir/metadata", params={"_pretty": "true"})
    assert pretty.status_code == 200 and b"\n  " in pretty.content
    outcome(client.get("/fhir/metadata", params={"_format": "xml"}), 406)


# -- caching and shaping of /metadata ---------------------------------------------------------


def test_metadata_has_an_etag_and_honours_if_none_match(client: TestClient) -> None:
    first = client.get("/fhir/metadata")
    tag = first.headers["etag"]
    assert tag.startswith('W/"') and len(tag) > 6
    assert client.get("/fhir/metadata").headers["etag"] == tag  # stable
    for header in (tag, tag.removeprefix("W/"), f'W/"other", {tag}', "*"):
        again = client.get("/fhir/metadata", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == tag
    changed = client.get("/fhir/metadata", headers={"If-None-Match": 'W/"other"'})
    assert changed.status_code == 200 and changed.json()["resourceType"] == "CapabilityStatement"


def test_metadata_summary_and_elements(client: TestClient) -> None:
    full = client.get("/fhir/metadata")
    elements = client.get("/fhir/metadata?_elements=fhirVersion,format")
    assert elements.status_code == 200
    body = elements.json()
    assert body["fhirVersion"] == "4.0.1" and body["format"] == ["json"]
    assert "rest" not in body and "software" not in body
    assert any(t.get("code") == "SUBSETTED" for t in body["meta"]["tag"])
    assert len(elements.content) * 100 < len(full.content)
    assert elements.headers["etag"] != full.headers["etag"]
    summary = client.get("/fhir/metadata?_summary=true")
    assert summary.status_code == 200
    assert summary.json()["fhirVersion"] == "4.0.1"
    assert summary.headers["etag"] not in (full.headers["etag"], elements.headers["etag"])
    tag = elements.headers["etag"]
    assert client.get("/fhir/metadata?_elements=fhirVersion,format",
                      headers={"If-None-Match": tag}).status_code == 304
    assert client.get("/fhir/metadata", headers={"If-None-Match": tag}).status_code == 200
    assert client.get("/fhir/metadata?mode=full").status_code == 200
    outcome(client.get("/fhir/metadata?_summary=nope"), 400)
    outcome(client.get("/fhir/metadata?mode=terminology"), 400)
