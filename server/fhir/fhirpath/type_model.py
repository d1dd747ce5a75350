"""The FHIRPath view of the R4 element model (:mod:`server.fhir.element_paths`): how each
member of a type is read from JSON, and which concrete types a type specifier stands for.

A member is read through its *variants* ``(JSON name, FHIR type, shape)``: one for a plain
element, one per allowed type for a choice (``value`` on an Observation reads
``valueQuantity`` as ``Quantity``, ``valueString`` as ``string``...). The shape says what a
value of that type looks like in JSON, so that a value of the wrong shape is skipped:
``PRIMITIVE`` (a string, number or boolean of the JSON class of its type), ``COMPLEX`` (an
object) or ``RESOURCE`` (an object typed by its ``resourceType``).

A type specifier (``Quantity``, ``FHIR.Quantity``, ``System.DateTime``, ``DateTime``,
``Resource``) stands for the concrete types whose values are of it: the type itself and its
specialisations (``Quantity`` → ``Age``, ``Duration``...; ``string`` → ``code``, ``id``,
``markdown``), every resource type for ``Resource``, the FHIR primitives of a system type.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from server.fhir.element_paths import SPECIALISATIONS, ElementModel, element_model
from server.fhir.fhirpath.errors import FhirPathError

PRIMITIVE = 0  # a JSON string, number or boolean
COMPLEX = 1  # a JSON object
RESOURCE = 2  # a JSON object whose ``resourceType`` is its type

Variant = tuple[str, str, int]  # (JSON name, FHIR type, shape)

# FHIRPath system types and the FHIR primitive types whose values they are
SYSTEM_TYPES: Mapping[str, tuple[str, ...]] = {
    "Boolean": ("boolean",),
    "String": ("string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid"),
    "Integer": ("integer", "positiveInt", "unsignedInt"),
    "Decimal": ("decimal",),
    "Date": ("date",),
    "DateTime": ("dateTime", "instant"),
    "Time": ("time",),
    "Quantity": ("Quantity",),
}
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})

# the JSON classes a primitive type is stored as (``true`` is not an integer)
_NUMBER_CLASSES: Mapping[str, frozenset[type]] = {
    "boolean": frozenset((bool,)),
    "integer": frozenset((int,)),
    "positiveInt": frozenset((int,)),
    "unsignedInt": frozenset((int,)),
    "decimal": frozenset((int, float)),
}
_TEXT_CLASSES: frozenset[type] = frozenset((str,))


def json_classes(type: str) -> frozenset[type]:
    """The JSON value classes a primitive of ``type`` is stored as."""
    return _NUMBER_CLASSES.get(type, _TEXT_CLASSES)


class TypeModel:
    """Members and type sets of R4 (see the module docstring)."""

    def __init__(self, elements: ElementModel) -> None:
        self.elements = elements
        self.resources = elements.resources
        self.primitives = elements.primitives
        self._members: dict[str, Mapping[str, tuple[Variant, ...]]] = {}
        self._type_sets: dict[str, frozenset[str]] = {}

    def is_complex(self, type: str) -> bool:
        """Whether ``type`` has elements (a resource, complex datatype or backbone element)."""
        return bool(self.elements.elements(type))

    def members(self, type: str) -> Mapping[str, tuple[Variant, ...]]:
        """The members of ``type`` by FHIRPath name (``value`` for ``value[x]``)."""
        table = self._members.get(type)
        if table is None:
            built: dict[str, tuple[Variant, ...]] = {}
            for info in self.elements.elements(type).values():
                if info.variants:
                    built[info.base] = tuple(
                        (key, child, self._shape(child)) for key, child in info.variants
                    )
            table = self._members[type] = built
        return table

    def _shape(self, type: str) -> int:
        if type == "Resource":
            return RESOURCE
        return PRIMITIVE if type in self.primitives else COMPLEX

    def output_types(self, variants: tuple[Variant, ...]) -> frozenset[str]:
        """The types the values read through ``variants`` can have."""
        out: set[str] = set()
        for _, type, shape in variants:
            if shape == RESOURCE:
                out |= self.resources
            else:
                out.add(type)
        return frozenset(out)

    def type_set(self, name: str) -> frozenset[str]:
        """The concrete types a type specifier stands for; ``FhirPathError`` if none."""
        found = self._type_sets.get(name)
        if found is None:
            found = self._type_sets[name] = self._resolve(name)
        return found

    def _resolve(self, name: str) -> frozenset[str]:
        bare = name.removeprefix("FHIR.")
        if bare == "Resource":
            return self.resources
        if bare == "DomainResource":
            return self.resources - _NOT_DOMAIN
        if bare == "BackboneElement":
            return frozenset(t for t in self.elements.complex_types() if "_" in t)
        if bare == "Element":
            return (self.elements.complex_types() - self.resources) | self.primitives
        if not bare.startswith("System.") and (
            self.elements.known(bare) or bare in SPECIALISATIONS
        ):
            return self._subtypes(bare)
        system = SYSTEM_TYPES.get(bare.removeprefix("System."))
        if system is None:
            raise FhirPathError(f"unknown type {name!r}")
        out: set[str] = set()
        for fhir_type in system:
            out |= self._subtypes(fhir_type)
        return frozenset(out)

    @staticmethod
    def _subtypes(name: str) -> frozenset[str]:
        return frozenset({name, *(c for c, parent in SPECIALISATIONS.items() if parent == name)})


@cache
def type_model() -> TypeModel:
    """The process-wide :class:`TypeModel` of R4."""
    return TypeModel(element_model())
