"""FHIRPath Patch (R4 fhirpatch.html): a ``Parameters`` resource whose ``operation`` parameters
change a resource, each located by a FHIRPath expression evaluated with the FHIRPath engine
(:mod:`server.fhir.fhirpath`).

Each operation has the parts ``type`` (``add``, ``insert``, ``delete``, ``replace``,
``move``), ``path`` and, by type, ``name``, ``value``, ``index``, ``source``, ``destination``:

* ``add``: ``path`` names one element; its child ``name`` gets ``value`` (appended when the
  child repeats; refused when a single child is already there);
* ``insert``: ``path`` names a repeating element; ``value`` goes in at ``index`` (0..count);
* ``delete``: ``path`` names at most one element, which is removed (none: nothing happens);
* ``replace``: ``path`` names one element, whose value becomes ``value``;
* ``move``: ``path`` names a repeating element; the item at ``source`` moves to
  ``destination``.

A ``value`` is a ``value[x]`` part (``valueString``, ``valueCodeableConcept``...) or, for a
complex value without a datatype of its own (a backbone element), nested parts named after its
elements. ``path`` ends at a member (``Patient.name``), optionally filtered by indexers and
``where``/``first``/``last``/``ofType``/``single``/``skip``/``take``; that member's JSON
properties are where the change is made.

``operations`` reads the Parameters (``PatchInvalid``: the document is malformed, 400);
``apply`` applies them to a copy of a resource (``PatchFailed``: they cannot be applied to it,
422). Both carry the expression of the part at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from server.fhir.element_paths import ElementInfo, element_model
from server.fhir.fhirpath import (
    Ast,
    FhirPathError,
    FhirPathSyntaxError,
    Node,
    compile_tree,
    parse,
)

_TYPES = frozenset({"add", "insert", "delete", "replace", "move"})
_NEEDS: dict[str, tuple[str, ...]] = {
    "add": ("name", "value"),
    "insert": ("value", "index"),
    "delete": (),
    "replace": ("value",),
    "move": ("source", "destination"),
}
_FILTERS = frozenset({"where", "first", "last", "ofType", "single", "skip", "take"})


class PatchInvalid(ValueError):
    """The Parameters are not a FHIRPath Patch document."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression


class PatchFailed(ValueError):
    """An operation cannot be applied to this resource."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression


@dataclass(frozen=True, slots=True)
class Operation:
    type: str
    path: str
    tree: Ast
    where: str  # Parameters.parameter[i]
    name: str | None = None
    value: Any = None  # (value, the datatype of a value[x] part or None)
    value_type: str | None = None
    index: int | None = None
    source: int | None = None
    destination: int | None = None


# -- reading the document --------------------------------------------------------------------


def _value_of(part: dict[str, Any], where: str) -> tuple[Any, str | None]:
    """The JSON value of a part and the datatype its ``value[x]`` names (None for parts)."""
    for key, value in part.items():
        if key.startswith("value") and key[5:6].isupper():
            return value, key[5:]
    nested = part.get("part")
    if isinstance(nested, list) and nested:
        out: dict[str, Any] = {}
        for index, child in enumerate(nested):
            at = f"{where}.part[{index}]"
            if not isinstance(child, dict) or not isinstance(child.get("name"), str):
                raise PatchInvalid("Every part of a value needs a name", at)
            value, _ = _value_of(child, at)
            name = child["name"]
            if name in out:
                existing = out[name]
                out[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
            else:
                out[name] = value
        return out, None
    raise PatchInvalid("The value part needs a value[x] or parts", where)


def operations(parameters: Any) -> list[Operation]:
    """The operations of a FHIRPath Patch ``Parameters`` resource, in order."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise PatchInvalid("A FHIRPath Patch is a Parameters resource", "Parameters")
    listed = parameters.get("parameter")
    if not isinstance(listed, list) or not listed:
        raise PatchInvalid("A FHIRPath Patch needs at least one operation", "Parameters.parameter")
    out = []
    for index, parameter in enumerate(listed):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise PatchInvalid("Every parameter of a FHIRPath Patch is an 'operation'", where)
        parts: dict[str, tuple[int, dict[str, Any]]] = {}
        for number, part in enumerate(parameter.get("part") or []):
            if not isinstance(part, dict) or not isinstance(part.get("name"), str):
                raise PatchInvalid("Every part needs a name", f"{where}.part[{number}]")
            if part["name"] in parts:
                raise PatchInvalid(f"Part '{part['name']}' repeats", f"{where}.part[{number}]")
            parts[part["name"]] = (number, part)
        out.append(_operation(parts, where))
    return out


def _operation(parts: dict[str, tuple[int, dict[str, Any]]], where: str) -> Operation:
    def text(name: str) -> str:
        number, part = parts[name]
        value = part.get("valueString", part.get("valueCode"))
        if not isinstance(value, str) or not value:
            raise PatchInvalid(f"'{name}' must be a string", f"{where}.part[{number}]")
        return value

    def integer(name: str) -> int:
        number, part = parts[name]
        value = part.get("valueInteger")
        if value.__class__ is not int or value < 0:
            raise PatchInvalid(f"'{name}' must be an integer >= 0", f"{where}.part[{number}]")
        return int(value)

    for needed in ("type", "path"):
        if needed not in parts:
            raise PatchInvalid(f"The operation has no '{needed}'", where)
    kind = text("type")
    if kind not in _TYPES:
        raise PatchInvalid(
            f"Unknown operation type '{kind[:30]}'", f"{where}.part[{parts['type'][0]}]"
        )
    for needed in _NEEDS[kind]:
        if needed not in parts:
            raise PatchInvalid(f"A '{kind}' operation needs '{needed}'", where)
    path = text("path")
    try:
        tree = parse(path)
    except FhirPathSyntaxError as error:
        raise PatchInvalid(
            f"Invalid FHIRPath '{path[:80]}': {error}", f"{where}.part[{parts['path'][0]}]"
        ) from None
    value, value_type = (None, None)
    if "value" in _NEEDS[kind]:
        number, part = parts["value"]
        value, value_type = _value_of(part, f"{where}.part[{number}]")
    return Operation(
        kind,
        path,
        tree,
        where,
        name=text("name") if "name" in _NEEDS[kind] else None,
        value=value,
        value_type=value_type,
        index=integer("index") if kind == "insert" else None,
        source=integer("source") if kind == "move" else None,
        destination=integer("destination") if kind == "move" else None,
    )


# -- applying it -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """Where one value lives: ``owner[key]`` or, for a repeating element, ``owner[key][index]``."""

    owner: dict[str, Any]
    key: str
    index: int | None
    value: Any
    info: ElementInfo


def apply(resource: dict[str, Any], patch: list[Operation]) -> dict[str, Any]:
    """A copy of ``resource`` with ``patch`` applied (``resource`` is left as it was)."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(resource))
    type = out.get("resourceType")
    if not isinstance(type, str):
        raise PatchFailed("The resource has no resourceType", "resourceType")
    for operation in patch:
        _apply(out, type, operation)
    return out


def _evaluate(tree: Ast, resource: dict[str, Any], type: str, where: str) -> list[Node]:
    try:
        return compile_tree(tree, type)(resource, resource)
    except FhirPathError as error:
        raise PatchFailed(f"FHIRPath cannot be evaluated: {error}", where) from None


def _split(tree: Ast, where: str) -> tuple[Ast, str]:
    """The member a path changes: (the expression of its owners, its name)."""
    node = tree
    while node[0] == "index" or (node[0] == "call" and node[2] in _FILTERS):
        node = node[1]
    if node[0] != "member" or (node[1] == ("this",) and node[2][:1].isupper()):
        raise PatchFailed(
            "The path must end at an element (Patient.name, Patient.name.where(use='old'))",
            where,
        )
    return node[1], node[2]


def _element(owner_type: str, name: str, where: str) -> ElementInfo:
    table = element_model().elements(owner_type)
    info = table.get(name) or table.get(f"{name}[x]")
    if info is None:
        raise PatchFailed(f"'{name}' is not an element of {owner_type}", where)
    return info


def _slots(owners: list[Node], name: str, where: str) -> list[_Slot]:
    """Every value of member ``name`` of ``owners``, in FHIRPath order."""
    out: list[_Slot] = []
    for owner_type, owner in owners:
        if not isinstance(owner, dict):
            continue
        info = _element(owner_type, name, where)
        for key, _ in info.variants:
            value = owner.get(key)
            if isinstance(value, list):
                out.extend(_Slot(owner, key, i, item, info) for i, item in enumerate(value))
            elif value is not None:
                out.append(_Slot(owner, key, None, value, info))
    return out


def _targets(resource: dict[str, Any], type: str, operation: Operation) -> list[_Slot]:
    """The slots of the values ``operation.path`` selects."""
    owners_tree, name = _split(operation.tree, operation.where)
    owners = _evaluate(owners_tree, resource, type, operation.where)
    slots = _slots(owners, name, operation.where)
    chosen: list[_Slot] = []
    for _, value in _evaluate(operation.tree, resource, type, operation.where):
        slot = next((s for s in slots if s.value is value), None)
        if slot is None:
            slot = next((s for s in slots if s.value == value and s not in chosen), None)
        if slot is not None and slot not in chosen:
            chosen.append(slot)
    return chosen


def _one_owner(resource: dict[str, Any], type: str, tree: Ast, where: str) -> Node:
    owners = _evaluate(tree, resource, type, where)
    if len(owners) != 1 or not isinstance(owners[0][1], dict):
        raise PatchFailed(
            f"The path must select exactly one element (it selects {len(owners)})", where
        )
    return owners[0]


def _list(resource: dict[str, Any], type: str, operation: Operation) -> tuple[dict[str, Any], str]:
    """The owner and JSON key of the repeating element ``operation.path`` names."""
    owners_tree, name = _split(operation.tree, operation.where)
    if operation.tree[0] != "member":
        raise PatchFailed("The path must name the repeating element itself", operation.where)
    owner_type, owner = _one_owner(resource, type, owners_tree, operation.where)
    info = _element(owner_type, name, operation.where)
    if not info.array or info.choice:
        raise PatchFailed(f"'{name}' does not repeat", operation.where)
    return owner, info.variants[0][0]


def _apply(resource: dict[str, Any], type: str, operation: Operation) -> None:
    kind, where = operation.type, operation.where
    if kind == "add":
        owner_type, owner = _one_owner(resource, type, operation.tree, where)
        assert operation.name is not None
        info = _element(owner_type, operation.name, where)
        key = _key(info, operation.value_type, where)
        if info.array:
            existing = owner.setdefault(key, [])
            existing.append(operation.value)
        elif any(k in owner for k, _ in info.variants):
            raise PatchFailed(f"{owner_type}.{operation.name} already has a value", where)
        else:
            owner[key] = operation.value
    elif kind == "insert":
        owner, key = _list(resource, type, operation)
        items = owner.setdefault(key, [])
        assert operation.index is not None
        if operation.index > len(items):
            raise PatchFailed(f"Index {operation.index} is beyond the {len(items)} items", where)
        items.insert(operation.index, operation.value)
    elif kind == "move":
        owner, key = _list(resource, type, operation)
        items = owner.get(key) or []
        assert operation.source is not None and operation.destination is not None
        if operation.source >= len(items) or operation.destination >= len(items):
            raise PatchFailed(f"Source or destination beyond the {len(items)} items", where)
        items.insert(operation.destination, items.pop(operation.source))
    else:
        slots = _targets(resource, type, operation)
        if len(slots) > 1:
            raise PatchFailed(f"The path selects {len(slots)} elements; {kind} needs one", where)
        if not slots:
            if kind == "delete":
                return
            raise PatchFailed("The path selects nothing to replace", where)
        slot = slots[0]
        if kind == "delete":
            _remove(slot)
        else:
            _replace(slot, operation, where)


def _key(info: ElementInfo, value_type: str | None, where: str) -> str:
    """The JSON name a value of ``info`` is written under (a choice: by its datatype)."""
    if not info.choice:
        return info.variants[0][0]
    for key, type in info.variants:
        if value_type is not None and type.lower() == value_type.lower():
            return key
    raise PatchFailed(f"A value of {info.name} needs one of its datatypes", where)


def _remove(slot: _Slot) -> None:
    if slot.index is None:
        del slot.owner[slot.key]
        return
    items = slot.owner[slot.key]
    del items[slot.index]
    if not items:
        del slot.owner[slot.key]


def _replace(slot: _Slot, operation: Operation, where: str) -> None:
    if slot.index is not None:
        slot.owner[slot.key][slot.index] = operation.value
        return
    key = slot.key
    if slot.info.choice:  # a choice element may change datatype: valueString -> valueInteger
        key = _key(slot.info, operation.value_type or _type_of(slot), where)
        del slot.owner[slot.key]
    slot.owner[key] = operation.value


def _type_of(slot: _Slot) -> str:
    return next(type for key, type in slot.info.variants if key == slot.key)
