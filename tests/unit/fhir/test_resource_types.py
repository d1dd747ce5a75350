from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.fhir.resource_types import RESOURCE_TYPES, is_supported

REQUIRED = """Patient ServiceRequest Task Consent CarePlan CareTeam EpisodeOfCare Procedure
HealthcareService Organization Practitioner PractitionerRole Coverage Encounter Condition
Observation Group List Bundle OperationOutcome Parameters CapabilityStatement""".split()


@pytest.mark.parametrize("name", REQUIRED)
def test_project_resource_types_are_supported(name: str) -> None:
    assert is_supported(name)
    assert name in RESOURCE_TYPES


@pytest.mark.parametrize(
    "name",
    [
        "MadeUpResource",
        "patient",
        "",
        "Resource",
        "DomainResource",
        "HumanName",
        # R4-only types (dropped or restructured in R4B)
        "MedicinalProduct",
        "EffectEvidenceSynthesis",
        "SubstancePolymer",
        "Evidence",
    ],
)
def test_unknown_abstract_datatype_and_r4_only_names_are_not_supported(name: str) -> None:
    assert not is_supported(name)


def test_list_is_a_sorted_frozenset_matching_the_data_file() -> None:
    path = Path(__file__).resolve().parents[3] / "server/fhir/data/resource-types.json"
    names = json.loads(path.read_text())
    assert names == sorted(names)
    assert isinstance(RESOURCE_TYPES, frozenset)
    assert RESOURCE_TYPES == frozenset(names)
    assert 100 < len(RESOURCE_TYPES) < 146


def test_docs_list_excluded_types_with_reasons() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs/resource-types.md").read_text()
    assert "| EffectEvidenceSynthesis | no such resource type in R4B |" in doc
    for name in REQUIRED:
        assert f"- {name}\n" in doc
