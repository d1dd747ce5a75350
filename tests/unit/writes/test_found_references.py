"""Finding a resource's conditional references (``writes.references.found``): every one is
found wherever it sits, including in resources the JSON serialiser cannot write."""

from __future__ import annotations

from typing import Any

from server.writes.references import found

_CONDITIONAL = "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345"


def _nested(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = leaf
    for _ in range(depth):
        node = {"extension": [{"url": "http://example.org/x", "extension": [node]}]}
    return node


def test_none_in_a_resource_without_any() -> None:
    resource = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/1"},
        "note": [{"text": "a question?"}],  # a '?' elsewhere is not a reference
    }
    assert found(resource) == {}


def test_each_found_once_with_its_first_path() -> None:
    resource = {
        "resourceType": "Encounter",
        "participant": [
            {"individual": {"reference": _CONDITIONAL}},
            {"individual": {"reference": _CONDITIONAL}},
        ],
        "subject": {"reference": "Patient?identifier=urn:x|1"},
        "serviceProvider": {"reference": "Organization/2"},
    }
    out = found(resource)
    assert set(out) == {_CONDITIONAL, "Patient?identifier=urn:x|1"}
    assert out["Patient?identifier=urn:x|1"] == "subject.reference"
    assert out[_CONDITIONAL].startswith("participant[")


def test_found_beyond_the_serialisers_nesting_limit() -> None:
    resource = {"resourceType": "Basic", **_nested(300, {"reference": _CONDITIONAL})}
    assert list(found(resource)) == [_CONDITIONAL]


def test_found_beside_an_integer_the_serialiser_refuses() -> None:
    resource = {
        "resourceType": "Observation",
        "valueInteger": 10**30,
        "performer": [{"reference": _CONDITIONAL}],
    }
    assert found(resource) == {_CONDITIONAL: "performer[0].reference"}
