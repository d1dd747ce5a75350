"""The R4 element model read off the HL7 JSON schema: which elements a type has, how each is
spelled in JSON, its datatype and whether it repeats.

Types are named as the schema names its definitions: resource types (``ServiceRequest``),
datatypes (``CodeableConcept``, ``string``) and backbone elements (``Observation_Component``,
whose FHIR path is ``Observation.component``). An element is keyed by its FHIR name
(``category``, ``value[x]``); a choice element lists one variant per allowed type
(``valueQuantity`` → ``Quantity``), read from ``data/choice-elements.json`` or, for a choice
that list lacks, from the schema (two or more properties ``<element><Type>`` of that type
sharing one description, with no property ``<element>``). An element whose
schema is an ``enum`` has the type ``code``; ``contained`` and other resource-valued elements
have the type ``Resource``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from server.fhir.definitions import DATA, r4_schema

# FHIR types whose values are values of another type (R4 StructureDefinition.baseDefinition)
SPECIALISATIONS: Mapping[str, str] = {
    "Age": "Quantity",
    "Count": "Quantity",
    "Distance": "Quantity",
    "Duration": "Quantity",
    "MoneyQuantity": "Quantity",
    "SimpleQuantity": "Quantity",
    "code": "string",
    "id": "string",
    "markdown": "string",
    "canonical": "uri",
    "oid": "uri",
    "url": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
}


@dataclass(frozen=True, slots=True)
class ElementInfo:
    """One element of a type: ``name`` (``value[x]`` for a choice), its JSON spellings with
    their types, and whether it is an array."""

    name: str
    variants: tuple[tuple[str, str], ...]  # (JSON name, type)
    array: bool

    @property
    def choice(self) -> bool:
        return self.name.endswith("[x]")

    @property
    def base(self) -> str:
        """The name without ``[x]`` (``value``), as FHIRPath spells it."""
        return self.name.removesuffix("[x]")


def _ref(spec: Mapping[str, Any]) -> str | None:
    ref = spec.get("$ref") or spec.get("items", {}).get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


class ElementModel:
    """Element tables for every schema definition (see the module docstring)."""

    def __init__(self, schema: Mapping[str, Any], choices: Mapping[str, list[str]]) -> None:
        definitions: Mapping[str, Any] = schema["definitions"]
        self.primitives = frozenset(
            name
            for name, spec in definitions.items()
            if "properties" not in spec and name[0].islower()
        )
        self.resources = frozenset(
            _ref(option) or "" for option in definitions["ResourceList"]["oneOf"]
        )
        self.paths = self._paths(definitions)
        self._tables: dict[str, dict[str, ElementInfo]] = {}
        self._json: dict[str, dict[str, tuple[ElementInfo, str]]] = {}
        for name, spec in definitions.items():
            if "properties" in spec:
                self._tables[name] = self._table(name, spec["properties"], choices)
                self._json[name] = {
                    json_name: (info, type)
                    for info in self._tables[name].values()
                    for json_name, type in info.variants
                }

    @staticmethod
    def _paths(definitions: Mapping[str, Any]) -> dict[str, str]:
        """The FHIR path of every definition (``Observation_Component`` →
        ``Observation.component``), following the schema's references breadth first."""
        queue = [n for n in definitions if "_" not in n and "properties" in definitions[n]]
        paths = {name: name for name in queue}
        while queue:
            name = queue.pop(0)
            for prop, spec in definitions[name].get("properties", {}).items():
                target = _ref(spec)
                if target and "_" in target and target not in paths and target in definitions:
                    paths[target] = f"{paths[name]}.{prop}"
                    queue.append(target)
        return paths

    def _table(
        self, name: str, properties: Mapping[str, Any], choices: Mapping[str, list[str]]
    ) -> dict[str, ElementInfo]:
        path = self.paths.get(name, name)
        table: dict[str, ElementInfo] = {}
        taken: set[str] = set()
        for choice_path, variants in choices.items():
            owner, _, element = choice_path.rpartition(".")
            if owner != path:
                continue
            present = [v for v in variants if v in properties]
            base = element.removesuffix("[x]")
            typed = tuple((v, self._variant_type(base, v)) for v in present)
            table[element] = ElementInfo(element, typed, False)
            taken.update(present)
        for base, present in _schema_choices(properties, self.primitives).items():
            if f"{base}[x]" in table or taken.intersection(present):
                continue
            typed = tuple((v, self._variant_type(base, v)) for v in present)
            table[f"{base}[x]"] = ElementInfo(f"{base}[x]", typed, False)
            taken.update(present)
        for prop, spec in properties.items():
            if prop.startswith("_") or prop == "resourceType" or prop in taken:
                continue
            array = spec.get("type") == "array"
            target = _ref(spec)
            if target == "ResourceList":
                type = "Resource"
            elif target is not None:
                type = target
            elif "enum" in spec or "enum" in spec.get("items", {}):
                type = "code"
            else:
                continue
            table[prop] = ElementInfo(prop, ((prop, type),), array)
        return table

    def _variant_type(self, base: str, json_name: str) -> str:
        suffix = json_name[len(base) :]
        lowered = suffix[:1].lower() + suffix[1:]
        return lowered if lowered in self.primitives else suffix

    # -- queries ---------------------------------------------------------------------------

    def known(self, type: str) -> bool:
        return type in self._tables or type in self.primitives

    def complex_types(self) -> frozenset[str]:
        """Every type with elements: resources, datatypes, backbone elements."""
        return frozenset(self._tables)

    def elements(self, type: str) -> Mapping[str, ElementInfo]:
        """The elements of ``type`` by FHIR name (empty for primitives and unknown types)."""
        return self._tables.get(type, {})

    def by_json(self, type: str) -> Mapping[str, tuple[ElementInfo, str]]:
        """JSON property name → (element, the type that spelling stands for)."""
        return self._json.get(type, {})

    def path_of(self, type: str) -> str:
        """The FHIR path a definition stands for (``Observation.component``), or the type."""
        return self.paths.get(type, type)

    def is_primitive(self, type: str) -> bool:
        return type in self.primitives

    def is_backbone(self, type: str) -> bool:
        return "_" in type

    def ancestors(self, type: str) -> tuple[str, ...]:
        """``type`` and the FHIR types its values are also values of, nearest first
        (``SimpleQuantity`` → ``Quantity``, ``Element``; ``Patient`` → ``DomainResource``,
        ``Resource``)."""
        out = [type]
        while out[-1] in SPECIALISATIONS:
            out.append(SPECIALISATIONS[out[-1]])
        if type in self.resources:
            return (*out, "DomainResource", "Resource") if type not in _BARE else (*out, "Resource")
        if self.is_backbone(type):
            return (*out, "BackboneElement", "Element")
        return (*out, "Element")


_BARE = frozenset({"Bundle", "Binary", "Parameters"})


def _schema_choices(
    properties: Mapping[str, Any], primitives: frozenset[str]
) -> dict[str, list[str]]:
    """Choice elements read off a definition's properties: two or more properties named
    ``<element><Type>`` whose schema type is that type, sharing one description, with no
    property named ``<element>`` itself (``Task.instantiatesCanonical`` and
    ``Task.instantiatesUri`` are separate elements: their descriptions differ)."""
    groups: dict[str, list[str]] = {}
    for prop, spec in properties.items():
        if prop.startswith("_"):
            continue
        for split in range(1, len(prop)):
            if not prop[split].isupper() or prop[:split] in properties:
                continue
            suffix = prop[split:]
            lowered = suffix[:1].lower() + suffix[1:]
            ref = spec.get("$ref")
            if ref is not None:
                fits = ref.rsplit("/", 1)[-1] in (suffix, lowered)
            else:
                fits = lowered in primitives and "pattern" in spec
            if fits:
                groups.setdefault(prop[:split], []).append(prop)
    return {
        element: names
        for element, names in groups.items()
        if len(names) >= 2 and len({properties[n].get("description") for n in names}) == 1
    }


@cache
def element_model() -> ElementModel:
    """The process-wide :class:`ElementModel` of R4."""
    choices: dict[str, list[str]] = orjson.loads((DATA / "choice-elements.json").read_bytes())
    return ElementModel(r4_schema(), choices)
