"""A StructureDefinition differential read into a tree of element nodes.

Every ``differential.element`` is placed by its ``id`` (``ServiceRequest.category:ecm.coding``:
the element ``category``, its slice ``ecm``, that slice's child ``coding``; an element without
``id`` is placed by its ``path``). Elements the differential does not list but its ids pass
through are created bare. Facts about the base element (does it exist, does it repeat, its
datatype, the JSON names of a choice's variants) come from the R4 schema
(:mod:`server.fhir.element_paths`); an element the schema does not have, a child of an element
whose type is not one single type, re-slicing and the other features outside the profile
compiler contract raise :class:`ProfileError` naming the profile URL and the element id.

A profile whose ``baseDefinition`` is another of our profiles starts from that profile's tree
with its elements marked *inherited*: their rules are the base profile's (checked when the base
profile is), while their slicing, slice discriminator values and type restrictions still shape
the derived tree.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.fhir.element_paths import SPECIALISATIONS, ElementInfo, ElementModel

BASE_TYPE_URL = "http://hl7.org/fhir/StructureDefinition/"

# ElementDefinition keys that carry no rule (documentation, mappings, flags)
INFORMATIONAL = frozenset(
    {
        "id", "path", "sliceName", "short", "definition", "comment", "requirements", "alias",
        "mustSupport", "isSummary", "isModifier", "isModifierReason", "mapping", "example",
        "label", "code", "base", "condition", "orderMeaning", "meaningWhenMissing",
        "sliceIsConstraining", "extension", "representation",
    }
)  # fmt: skip
# keys carrying rules the compiler implements
RULES = frozenset({"min", "max", "type", "binding", "constraint", "slicing"})
VALUE_PREFIXES = ("fixed", "pattern")


class ProfileError(ValueError):
    """A definition the compiler cannot compile (unknown element, unsupported feature)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.message = message


@dataclass(eq=False)
class ElementNode:
    """One element of a profile (or one slice of it)."""

    id: str
    info: ElementInfo | None  # None for the root (the resource or the Extension itself)
    variants: tuple[tuple[str, str], ...]  # (JSON name, type) allowed by the profile
    element: Mapping[str, Any] | None = None  # the profile's own differential element
    inherited: Mapping[str, Any] | None = None  # the base profile's element, if any
    slice_name: str | None = None
    children: dict[str, ElementNode] = field(default_factory=dict)
    slices: dict[str, ElementNode] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        """The one type of this element's values, or None when the profile allows several."""
        types = {t for _, t in self.variants}
        return types.pop() if len(types) == 1 else None

    def get(self, key: str) -> Any:
        """A property of the element, from the profile's own element or the inherited one."""
        if self.element is not None and key in self.element:
            return self.element[key]
        return None if self.inherited is None else self.inherited.get(key)

    def value_constraint(self) -> tuple[str, Any] | None:
        """``("fixed" | "pattern", value)`` when the element states a fixed[x]/pattern[x]."""
        for source in (self.element, self.inherited):
            for key, value in (source or {}).items():
                for prefix in VALUE_PREFIXES:
                    if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
                        return prefix, value
        return None


def _segments(url: str, element_id: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in element_id.split("."):
        name, _, slice_name = part.partition(":")
        if "/" in slice_name or "@" in slice_name:
            raise ProfileError(url, f"{element_id}: re-slicing is not supported")
        if not name:
            raise ProfileError(url, f"{element_id}: malformed element id")
        out.append((name, slice_name or None))
    return out


def _restrict(
    url: str, node: ElementNode, types: list[Mapping[str, Any]], model: ElementModel
) -> None:
    """Apply ``type[]`` to the node: a choice keeps only the listed variants; another element
    must list its own type (``SimpleQuantity`` for ``Quantity``, ``BackboneElement``)."""
    info = node.info
    codes: list[str] = [t["code"] for t in types if isinstance(t.get("code"), str)]
    if info is None or not codes or len(codes) != len(types):
        raise ProfileError(url, f"{node.id}: type[] needs codes on an element")
    for t in types:
        extra = set(t) - {"code", "profile", "targetProfile", "extension"}
        if extra:
            raise ProfileError(url, f"{node.id}: type.{sorted(extra)[0]} is not supported")
    if info.choice:
        by_type = {t: (json, t) for json, t in info.variants}
        unknown = [c for c in codes if c not in by_type]
        if unknown:
            raise ProfileError(url, f"{node.id}: {unknown[0]} is not a type of {info.name}")
        node.variants = tuple(by_type[c] for c in codes)
        return
    base = info.variants[0][1]
    for code in codes:
        if code == base or SPECIALISATIONS.get(code) == base:
            continue
        if model.is_backbone(base) and code in ("BackboneElement", "Element"):
            continue
        if base == "Resource" and (code in model.resources or code == "Resource"):
            continue
        raise ProfileError(url, f"{node.id}: type {code} does not fit the base type {base}")


class TreeBuilder:
    """Builds the tree of one StructureDefinition (see the module docstring)."""

    def __init__(self, model: ElementModel, url: str, type: str) -> None:
        self.model = model
        self.url = url
        self.type = type
        if not model.known(type):
            raise ProfileError(url, f"unknown base type {type}")
        self.root = ElementNode(type, None, ((type, type),))

    def child(self, node: ElementNode, name: str, element_id: str) -> ElementNode:
        found = node.children.get(name)
        if found is not None:
            return found
        parent_type = node.type
        if parent_type is None:
            raise ProfileError(
                self.url, f"{element_id}: children of {node.id} need one single type"
            )
        info = self.model.elements(parent_type).get(name)
        if info is None:
            raise ProfileError(self.url, f"{element_id}: unknown element {name} of {parent_type}")
        path = f"{node.id}.{name}"
        created = ElementNode(path, info, info.variants)
        node.children[name] = created
        return created

    def place(self, element: Mapping[str, Any], inherited: bool) -> None:
        element_id = element.get("id") or element.get("path")
        if not isinstance(element_id, str):
            raise ProfileError(self.url, "an element has neither id nor path")
        segments = _segments(self.url, element_id)
        if segments[0] != (self.type, None):
            raise ProfileError(self.url, f"{element_id}: does not start with {self.type}")
        node = self.root
        for name, slice_name in segments[1:]:
            node = self.child(node, name, element_id)
            if slice_name is not None:
                node = self.slice(node, slice_name, element_id)
        if not inherited:
            self.check_keys(element_id, element)
            if node.element is not None:
                raise ProfileError(self.url, f"{element_id}: listed twice")
            node.element = element
        else:
            node.inherited = element
        types = element.get("type")
        if isinstance(types, list) and types and node.info is not None:
            _restrict(self.url, node, types, self.model)

    def slice(self, node: ElementNode, slice_name: str, element_id: str) -> ElementNode:
        found = node.slices.get(slice_name)
        if found is None:
            if node.info is None or not node.info.array:
                raise ProfileError(self.url, f"{element_id}: only repeating elements are sliced")
            found = ElementNode(
                f"{node.id}:{slice_name}", node.info, node.variants, slice_name=slice_name
            )
            node.slices[slice_name] = found
        return found

    def check_keys(self, element_id: str, element: Mapping[str, Any]) -> None:
        for key in element:
            if key in INFORMATIONAL or key in RULES:
                continue
            if any(
                key.startswith(p) and key[len(p) : len(p) + 1].isupper() for p in VALUE_PREFIXES
            ):
                continue
            raise ProfileError(self.url, f"{element_id}: {key} is not supported")
        slice_name = element.get("sliceName")
        if slice_name is not None and not element_id.endswith(f":{slice_name}"):
            raise ProfileError(self.url, f"{element_id}: sliceName {slice_name} does not match")


def build_tree(
    model: ElementModel,
    definition: Mapping[str, Any],
    base: list[Mapping[str, Any]] | None = None,
) -> ElementNode:
    """The tree of ``definition``'s differential; ``base``: the differential elements of the
    profile it derives from (all its ancestors' first), placed as inherited."""
    url = str(definition.get("url"))
    type = definition.get("type")
    if not isinstance(type, str):
        raise ProfileError(url, "no type")
    builder = TreeBuilder(model, url, type)
    for element in base or []:
        builder.place(copy.deepcopy(element), inherited=True)
    differential = definition.get("differential")
    elements = differential.get("element") if isinstance(differential, dict) else None
    if not isinstance(elements, list):
        raise ProfileError(url, "no differential.element")
    for element in elements:
        if not isinstance(element, dict):
            raise ProfileError(url, "an element is not an object")
        builder.place(element, inherited=False)
    return builder.root
