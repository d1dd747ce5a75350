"""Subsetted resource representations: the R4 ``_summary`` and ``_elements`` parameters.

A client may ask for less than the whole resource (https://hl7.org/fhir/R4/search.html#summary
and #elements):

* ``_summary=true`` keeps the elements the R4 definitions mark ``isSummary``, at every level:
  a kept complex element keeps only the summary elements of its own type or backbone
  definition, and an inline resource (``Bundle.entry.resource``) keeps the summary elements
  of its own resource type. ``resourceType``, ``id`` and ``meta`` always stay, ``meta`` and
  extensions (``modifierExtension`` of backbone elements) whole.
* ``_summary=text`` keeps ``text``, ``id``, ``meta`` and the mandatory (``min >= 1``)
  top-level elements.
* ``_summary=data`` removes the top-level ``text``; ``_summary=false`` keeps everything.
* ``_elements=a,b`` keeps the named top-level elements (a choice element by its base name:
  ``value`` keeps ``valueQuantity``; unknown names are ignored), ``resourceType``, ``id``,
  ``meta`` and the mandatory top-level elements.

The ``_name`` sibling holding a primitive's id and extensions follows its element. A result
from which anything was removed carries the ``SUBSETTED`` tag in ``meta.tag`` (once). The
element sets come from ``data/summary-elements.json`` (generated from the R4
StructureDefinitions by ``scripts/vendor-r4-data``) and the R4 JSON schema (element types);
they are computed once per type. Inputs are never modified; results share unchanged parts
with the input, and a call that removes nothing returns its input object itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import orjson

from server.fhir.definitions import r4_schema

SUBSETTED: dict[str, str] = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
SUMMARY_MODES = frozenset({"true", "text", "data", "false"})

_DATA = Path(__file__).with_name("data")
_BASE = ("resourceType", "id", "meta")
# kept whole wherever they are kept: the resource's meta, and extensions, whose url and value
# are not summary elements but carry the extension's meaning
_WHOLE = frozenset({"Meta", "Extension"})
_INLINE = "ResourceList"  # the schema's name for "any resource" (Bundle.entry.resource)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class _Plan:
    """What to keep of one JSON object: its kept keys, and how to shape the kept values."""

    keep: frozenset[str]
    # kept key -> the plan its value is shaped by (None: an inline resource, by its own type)
    nested: dict[str, _Plan | None]


_BASE_PLAN = _Plan(frozenset(_BASE), {})  # a type without definitions: what every resource has


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    """``resource`` as ``_summary=mode`` returns it (``true``, ``text``, ``data``, ``false``).

    ``count`` is not a representation of a resource and raises ``ValueError`` like any
    other unknown mode.
    """
    if mode not in SUMMARY_MODES:
        raise ValueError(f"unknown _summary mode: {mode!r}")
    if mode == "false":
        return resource
    if mode == "data":
        if "text" not in resource:
            return resource
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    rtype = _type_of(resource)
    plan = _summary_plan(rtype) if mode == "true" else _text_plan(rtype)
    out = _apply(resource, plan)
    return resource if out is resource else _tagged(out)


def select_elements(resource: dict[str, Any], elements: Sequence[str]) -> dict[str, Any]:
    """``resource`` as ``_elements`` returns it for the given element names."""
    plan = _elements_plan(_type_of(resource), tuple(sorted({e.strip() for e in elements})))
    out = {k: v for k, v in resource.items() if k in plan.keep}
    return resource if len(out) == len(resource) else _tagged(out)


def shape(body: bytes, summary: str | None, elements: Sequence[str] | None) -> bytes:
    """The JSON ``body`` of a resource shaped by ``_summary`` and ``_elements``.

    ``summary`` None or ``false`` and no ``elements`` leave the body as it is; so does a
    shaping that removes nothing. Given both, ``_summary`` applies first, then ``_elements``.
    """
    if summary is not None and summary not in SUMMARY_MODES:
        raise ValueError(f"unknown _summary mode: {summary!r}")
    if (summary is None or summary == "false") and not elements:
        return body
    resource: dict[str, Any] = orjson.loads(body)
    out = resource
    if summary is not None:
        out = summarize(out, summary)
    if elements:
        out = select_elements(out, elements)
    return body if out is resource else orjson.dumps(out)


# --------------------------------------------------------------------------- shaping


def _type_of(resource: dict[str, Any]) -> str:
    rtype = resource.get("resourceType")
    return rtype if isinstance(rtype, str) else ""


def _apply(value: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    keep, nested = plan.keep, plan.nested
    out = {
        k: (_shape_value(v, nested[k]) if k in nested else v) for k, v in value.items() if k in keep
    }
    if len(out) == len(value) and all(
        a is b for a, b in zip(out.values(), value.values(), strict=True)
    ):
        return value
    return out


def _shape_value(value: Any, plan: _Plan | None) -> Any:
    if isinstance(value, dict):
        return _apply(value, plan or _summary_plan(_type_of(value)))
    if isinstance(value, list):
        out = [_shape_value(item, plan) for item in value]
        return value if all(a is b for a, b in zip(out, value, strict=True)) else out
    return value


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource``, a dict the caller owns, with ``SUBSETTED`` in ``meta.tag`` (added once)."""
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    tags = meta.get("tag")
    tags = list(tags) if isinstance(tags, list) else []
    if not any(
        isinstance(t, dict)
        and t.get("system") == SUBSETTED["system"]
        and t.get("code") == SUBSETTED["code"]
        for t in tags
    ):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    if "meta" in resource:
        resource["meta"] = meta
        return resource
    head: dict[str, Any] = {k: resource[k] for k in ("resourceType", "id") if k in resource}
    return {**head, "meta": meta, **{k: v for k, v in resource.items() if k not in head}}


# --------------------------------------------------------------------------- element sets


@cache
def _element_sets() -> dict[str, dict[str, list[str]]]:
    data: dict[str, dict[str, list[str]]] = orjson.loads(
        (_DATA / "summary-elements.json").read_bytes()
    )
    return data


@cache
def _resource_types() -> frozenset[str]:
    return frozenset(r4_schema().get("discriminator", {}).get("mapping", {}))


def _with_siblings(names: set[str]) -> frozenset[str]:
    return frozenset(names | {"_" + n for n in names})


def _child_definition(prop: dict[str, Any]) -> str | None:
    ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _summary_plan(definition: str) -> _Plan:
    """The ``_summary=true`` plan of a resource type, backbone or datatype definition."""
    return _summary_plans().get(definition) or _BASE_PLAN


@cache
def _summary_plans() -> dict[str, _Plan]:
    """Every definition's ``_summary=true`` plan, nested plans linked to each other."""
    definitions = r4_schema().get("definitions", {})
    resource_types = _resource_types()
    plans: dict[str, _Plan] = {}
    children: dict[str, dict[str, str]] = {}
    for definition, sets in _element_sets().items():
        props: dict[str, Any] = definitions.get(definition, {}).get("properties", {})
        names = set(sets["summary"])
        if definition in resource_types:
            names.update(_BASE)
        plans[definition] = _Plan(_with_siblings(names), {})
        children[definition] = {}
        for name in names:
            child = _child_definition(props.get(name, {}))
            if child is not None and child not in _WHOLE:
                children[definition][name] = child
    for definition, plan in plans.items():
        for name, child in children[definition].items():
            if child == _INLINE:
                plan.nested[name] = None
            elif child in plans:
                plan.nested[name] = plans[child]
    return plans


@lru_cache(maxsize=512)
def _text_plan(rtype: str) -> _Plan:
    names = {"text", *_BASE, *_element_sets().get(rtype, {}).get("mandatory", [])}
    return _Plan(_with_siblings(names), {})


@cache
def _choices() -> dict[str, dict[str, tuple[str, ...]]]:
    """Resource type -> choice base name (``value``) -> its JSON names (``valueQuantity``)."""
    data: dict[str, list[str]] = orjson.loads((_DATA / "choice-elements.json").read_bytes())
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for path, variants in data.items():
        owner, name = path.rsplit(".", 1)
        out.setdefault(owner, {})[name.removesuffix("[x]")] = tuple(variants)
    return out


@lru_cache(maxsize=1024)
def _elements_plan(rtype: str, elements: tuple[str, ...]) -> _Plan:
    props = r4_schema().get("definitions", {}).get(rtype, {}).get("properties", {})
    choices = _choices().get(rtype, {})
    names = {*_BASE, *_element_sets().get(rtype, {}).get("mandatory", [])}
    for element in elements:
        if element in choices:
            names.update(choices[element])
        elif element in props and not element.startswith("_"):
            names.add(element)
    return _Plan(_with_siblings(names), {})
