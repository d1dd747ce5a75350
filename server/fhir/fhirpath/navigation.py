"""Compiled pieces of FHIRPath and the closures that walk JSON: member steps and type filters.

Every piece of an expression compiles to a :class:`Compiled`: a closure from the input
collection (and the root resource, for ``%resource``) to the output collection, with the
types its output can hold, known while compiling. A member step reads the JSON properties of
each input value's type (choice elements by their typed names), keeps only values of the
right shape, and is specialised for the common case of one input type and one variant;
``ofType``/``as`` on a step narrows the step to the variants it needs instead of filtering
afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.fhir.fhirpath.type_model import (
    COMPLEX,
    PRIMITIVE,
    RESOURCE,
    TypeModel,
    Variant,
    json_classes,
)
from server.fhir.fhirpath.values import Node

Run = Callable[[list[Node], Any], list[Node]]  # (input collection, root resource) -> output


@dataclass(frozen=True, slots=True)
class Step:
    """A member access, kept so that ``ofType`` can narrow it to the variants it needs."""

    source: Compiled
    table: Mapping[str, tuple[Variant, ...]]  # input type -> variants to read


@dataclass(frozen=True, slots=True)
class Compiled:
    run: Run
    types: frozenset[str]  # the types the output may hold
    step: Step | None = None
    identity: bool = False  # the output is the input


def nothing(nodes: list[Node], resource: Any) -> list[Node]:
    return []


def same(nodes: list[Node], resource: Any) -> list[Node]:
    return nodes


EMPTY = Compiled(nothing, frozenset())
_OBJECT: frozenset[type] = frozenset((dict,))


def _collect(value: Any, type: str, shape: int, out: list[Node], resources: frozenset[str]) -> None:
    """Append the items of one JSON element value that have the right shape."""
    items = value if value.__class__ is list else (value,)
    if shape == COMPLEX:
        for item in items:
            if item.__class__ is dict:
                out.append((type, item))
    elif shape == PRIMITIVE:
        classes = json_classes(type)
        for item in items:
            if item.__class__ in classes:
                out.append((type, item))
    else:
        for item in items:
            if item.__class__ is dict:
                kind = item.get("resourceType")
                if kind.__class__ is str and kind in resources:
                    out.append((kind, item))


def _step_run(source: Compiled, table: Mapping[str, tuple[Variant, ...]], model: TypeModel) -> Run:
    resources = model.resources
    pull = source.run
    direct = source.identity
    variants = next(iter(table.values())) if len(table) == 1 else ()
    if len(variants) == 1 and variants[0][2] != RESOURCE:
        # one input type, one way to store the member: the common case, without lookups
        ((key, type, shape),) = variants
        classes = _OBJECT if shape == COMPLEX else json_classes(type)

        def one_member(nodes: list[Node], resource: Any) -> list[Node]:
            out: list[Node] = []
            for _, value in nodes if direct else pull(nodes, resource):
                if value.__class__ is dict:
                    child = value.get(key)
                    if child is None:
                        continue
                    if child.__class__ is list:
                        for item in child:
                            if item.__class__ in classes:
                                out.append((type, item))
                    elif child.__class__ in classes:
                        out.append((type, child))
            return out

        return one_member

    def any_type_member(nodes: list[Node], resource: Any) -> list[Node]:
        out: list[Node] = []
        for node_type, value in nodes if direct else pull(nodes, resource):
            if value.__class__ is dict:
                for key, type, shape in table.get(node_type, ()):
                    child = value.get(key)
                    if child is not None:
                        _collect(child, type, shape, out, resources)
        return out

    return any_type_member


def step(source: Compiled, table: Mapping[str, tuple[Variant, ...]], model: TypeModel) -> Compiled:
    """The member values ``table`` says how to read from the values of ``source``."""
    table = {type: variants for type, variants in table.items() if variants}
    if not table:
        return EMPTY
    types: frozenset[str] = frozenset()
    for variants in table.values():
        types |= model.output_types(variants)
    return Compiled(_step_run(source, table, model), types, Step(source, table))


def member(source: Compiled, name: str, model: TypeModel) -> Compiled | None:
    """Member ``name`` of the values of ``source``; None when no type of them has it."""
    if not source.types:
        return EMPTY
    table = {}
    for type in sorted(source.types):
        variants = model.members(type).get(name)
        if variants is not None:
            table[type] = variants
    if not table:
        return None
    return step(source, table, model)


def keep_types(source: Compiled, allowed: frozenset[str], model: TypeModel) -> Compiled:
    """The values of ``source`` whose type is one of ``allowed`` (``ofType``, ``as``)."""
    kept = source.types & allowed
    if not kept:
        return EMPTY
    if kept == source.types:
        return source
    if source.step is not None:
        narrowed = {
            type: tuple(v for v in variants if v[1] in allowed or v[1] == "Resource")
            for type, variants in source.step.table.items()
        }
        stepped = step(source.step.source, narrowed, model)
        if stepped.types <= allowed:
            return stepped
        source = stepped
    pull = source.run

    def of_type(nodes: list[Node], resource: Any) -> list[Node]:
        return [node for node in pull(nodes, resource) if node[0] in allowed]

    return Compiled(of_type, kept)
