"""The vendored HL7 R4 definitions (``server/fhir/data``), loaded once per process."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).parent / "data"


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
