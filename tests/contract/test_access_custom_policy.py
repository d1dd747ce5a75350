"""A policy written the way SMART scopes will plug in (``patient/Observation.rs?code=…``,
``patient/Patient.rs``): per type, refused or narrowed by a search clause; for a system-level
search, one clause spanning the granted types (``AnyClause`` of ``AllClause(TypeClause, …)``).

Expectations by hand from ``tests/access_scene.py``: Observations with code ``c-any`` are o1,
o2, o3, o5, o6 and o8 (o4 has ``c-hidden``, o7 ``c-p2``); Patients p1, p2, p3.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server.auth.interactions import WRITES, Interaction
from server.auth.policy import NOTHING, Facts, Narrowing, where
from server.auth.principal import Principal
from server.search.query import AllClause, AnyClause, TokenClause, TypeClause
from tests.access_scene import caller, seed
from tests.support import TestClient, all_pages, fhir_client, outcome

CODE = TokenClause("code", (("urn:test:codes", "c-any"),))


class ScopedPolicy:
    """Reads of Observations with code c-any and of every Patient; nothing else."""

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        if interaction in WRITES:
            return NOTHING
        if type == "Observation":
            return where(CODE)
        if type == "Patient":
            return Narrowing()
        if type is None:
            granted = AnyClause(
                (AllClause((TypeClause(("Observation",)), CODE)), TypeClause(("Patient",)))
            )
            return where(granted)
        return NOTHING

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return facts.type in ("Observation", "Patient")


@pytest.fixture(scope="module")
def apps(database_url: str) -> Iterator[dict[str, TestClient]]:
    with fhir_client(database_url) as operator:
        seed(operator)
        with fhir_client(
            database_url, principals=caller, policies=[ScopedPolicy()], access_safety_net="fail"
        ) as scoped:
            yield {"operator": operator, "scoped": scoped}


def _keys(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries)


OBSERVATIONS = [f"Observation/o{n}" for n in (1, 2, 3, 5, 6, 8)]
PATIENTS = ["Patient/p1", "Patient/p2", "Patient/p3"]


def test_a_type_search_is_narrowed_by_the_scope_clause(apps: dict[str, TestClient]) -> None:
    assert _keys(all_pages(apps["scoped"], "/fhir/Observation?_count=4")) == OBSERVATIONS
    assert apps["scoped"].get("/fhir/Observation/o4").status_code == 404


def test_a_system_search_spans_the_granted_types_only(apps: dict[str, TestClient]) -> None:
    entries = all_pages(apps["scoped"], "/fhir?_count=4")
    assert _keys(entries) == sorted(OBSERVATIONS + PATIENTS)


def test_a_type_without_a_grant_is_refused(apps: dict[str, TestClient]) -> None:
    outcome(apps["scoped"].get("/fhir/Practitioner"), 403)
    body = {"resourceType": "Patient"}
    outcome(apps["scoped"].post("/fhir/Patient", json=body), 403)


def test_an_include_adds_only_granted_types(apps: dict[str, TestClient]) -> None:
    bundle = (
        apps["scoped"]
        .get("/fhir/Observation?_id=o1&_include=Observation:subject&_include=Observation:performer")
        .json()
    )
    assert _keys(bundle["entry"]) == ["Observation/o1", "Patient/p1"]
