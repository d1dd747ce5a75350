"""The code system a token parameter's ``code`` values carry: that of their required binding
(R4 definitions: Task.status -> task-status, ...), written by hand from the R4 spec pages."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from server.search.bindings import bound_system
from server.search.registry import _digest


@pytest.mark.parametrize(
    ("type", "expression", "system"),
    [
        ("Task", "Task.status", "http://hl7.org/fhir/task-status"),
        ("Patient", "Patient.gender", "http://hl7.org/fhir/administrative-gender"),
        # through a complex datatype: Address.use
        ("Patient", "Patient.address.use", "http://hl7.org/fhir/address-use"),
        ("Bundle", "Bundle.type", "http://hl7.org/fhir/bundle-type"),
        # one path of a union for this type
        ("Coverage", "Account.status | Coverage.status", "http://hl7.org/fhir/fm-status"),
    ],
)
def test_required_bound_codes_have_their_system(type: str, expression: str, system: str) -> None:
    assert bound_system(type, expression) == system


@pytest.mark.parametrize(
    ("type", "expression"),
    [
        ("Observation", "Observation.code"),  # a CodeableConcept: its codings carry systems
        ("Task", "Task.intent"),  # task-intent draws on two code systems
        ("Patient", "Patient.name.family"),  # a string
        ("Patient", "Patient.extension.where(url='x').value"),  # not a simple path
        ("Patient", "Patient.nonsense"),
    ],
)
def test_other_values_have_none(type: str, expression: str) -> None:
    assert bound_system(type, expression) is None


def _digest_without_systems(definition: dict[str, object]) -> str:
    keys = ("code", "type", "base", "expression", "target", "component")
    relevant = {k: definition.get(k) for k in keys}
    return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def test_a_bound_parameters_digest_changes_so_stores_indexed_before_reindex_it() -> None:
    status = {"code": "status", "type": "token", "base": ["Task"], "expression": "Task.status"}
    assert _digest(status) != _digest_without_systems(status)
    intent = {"code": "intent", "type": "token", "base": ["Task"], "expression": "Task.intent"}
    assert _digest(intent) == _digest_without_systems(intent)
