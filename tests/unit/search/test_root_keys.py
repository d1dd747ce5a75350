"""The properties an index expression needs (``search_root_keys``): passing over the
expressions a resource has no data for leaves every index row as running them all would."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from server.fhir.fhirpath import search_root_keys
from server.search.index import Indexer
from server.search.service import build_search_service
from server.settings import Settings
from tests.example_resources import example_resources


@pytest.mark.parametrize(
    ("expression", "context", "keys"),
    [
        ("Observation.subject", "Observation", {"subject"}),
        ("Observation.code | Observation.component.code", "Observation", {"code", "component"}),
        ("(Observation.value.ofType(Quantity))", "Observation", {"valueQuantity"}),
        ("Observation.value as Period", "Observation", {"valuePeriod"}),
        ("Patient.deceased.ofType(dateTime)", "Patient", {"deceasedDateTime"}),
        ("Observation.subject.where(resolve() is Patient)", "Observation", {"subject"}),
        ("Condition.code | Observation.code", "Observation", {"code"}),
        ("AllergyIntolerance.patient", "Observation", set()),  # another type: never
        ("Resource.meta.profile", "Patient", {"meta"}),
        ("Patient.extension('http://x.org/race').value", "Patient", {"extension"}),
        ("Patient.name[0].family", "Patient", {"name"}),
        ("Observation.performer.first()", "Observation", {"performer"}),
    ],
)
def test_root_keys(expression: str, context: str, keys: set[str]) -> None:
    assert search_root_keys(expression, context) == keys


@pytest.mark.parametrize(
    ("expression", "context"),
    [
        ("Patient.deceased.exists() and Patient.deceased != false", "Patient"),  # a boolean
        ("Observation", "Observation"),  # the resource itself
        ("%resource.subject", "Observation"),
        ("Observation.subject.empty()", "Observation"),
        ("Patient.name.is(HumanName)", "Patient"),
    ],
)
def test_no_root_keys_where_something_may_be_selected_anyway(expression: str, context: str) -> None:
    assert search_root_keys(expression, context) is None


@pytest.fixture(scope="module")
def indexers() -> tuple[Indexer, Indexer]:
    """The server's indexer, and one that runs every expression on every resource."""
    settings = Settings(database_url="sqlite:///:memory:")
    skipping = build_search_service(settings).indexer
    every = build_search_service(settings).indexer
    for type in {r["resourceType"] for r in example_resources()}:
        every._plans[type] = tuple(dataclasses.replace(p, keys=None) for p in every._plan(type))
    return skipping, every


def _variants(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The resource, and the resource without each of its properties in turn."""
    out = [resource]
    out += [{k: v for k, v in resource.items() if k != key} for key in resource if key != "id"]
    return out


def test_rows_as_if_every_expression_ran(indexers: tuple[Indexer, Indexer]) -> None:
    skipping, every = indexers
    checked = 0
    for resource in example_resources():
        type = resource["resourceType"]
        for variant in _variants(resource):
            assert skipping.rows(type, variant) == every.rows(type, variant), (type, variant)
            checked += 1
    assert checked > 1000
