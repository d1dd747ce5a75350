"""Where the server's definitions live, and the vendored HL7 R4 ones, loaded once per process.

The one owner of the locations: ``PROFILES`` (the package's own conformance resources,
``profiles/``, read by :mod:`server.fhir.conformance`) and ``DATA`` (the vendored R4 data of
``server/fhir/data``: schema, base terminology, SearchParameters, compartment; see its
README). Other modules are handed what they need or read it through these functions.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).resolve().parent / "data"
PROFILES = Path(__file__).resolve().parents[2] / "profiles"


@cache
def r4_schema() -> dict[str, Any]:
    """The HL7 R4 JSON Schema (``fhir.schema.json``)."""
    data: dict[str, Any] = orjson.loads((DATA / "fhir.schema.json").read_bytes())
    return data


@cache
def element_names(type: str) -> frozenset[str]:
    """The JSON property names the R4 schema allows on ``type``."""
    definition = r4_schema().get("definitions", {}).get(type, {})
    return frozenset(definition.get("properties", {}))


@cache
def r4_terminology() -> list[dict[str, Any]]:
    """The vendored R4 base ValueSets and CodeSystems (``r4-terminology.json``): those of the
    required bindings of core elements; empty when the file is absent."""
    path = DATA / "r4-terminology.json"
    if not path.is_file():
        return []
    data: list[dict[str, Any]] = orjson.loads(path.read_bytes())
    return data


@cache
def required_binding_valuesets() -> dict[str, str]:
    """Element path (``Task.status``, ``HumanName.use``) -> the ValueSet of its required
    binding (``required-binding-valuesets.json``); empty when the file is absent."""
    path = DATA / "required-binding-valuesets.json"
    if not path.is_file():
        return {}
    data: dict[str, str] = orjson.loads(path.read_bytes())
    return data


@cache
def r4_search_parameters() -> tuple[dict[str, Any], ...]:
    """The vendored R4 SearchParameters (``search-parameters.json``) of the supported types."""
    data: list[dict[str, Any]] = orjson.loads((DATA / "search-parameters.json").read_bytes())
    return tuple(data)


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """``{resource type: codes of the parameters that put it in a Patient's compartment}``
    (``compartment-patient.json``)."""
    data = orjson.loads((DATA / "compartment-patient.json").read_bytes())
    return {type: tuple(codes) for type, codes in data.items()}
