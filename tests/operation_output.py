"""Checks an operation's output ``Parameters`` against its OperationDefinition.

:func:`check_output` walks the ``out`` parameters of the definition and the response together,
recursively through ``part``: every parameter name is declared, each declared parameter occurs
within its ``min``..``max``, a typed parameter carries exactly the matching ``value[x]`` (or a
``resource`` of the declared type) with a JSON value of the right shape, a parameter with parts
carries ``part`` and nothing else, and a code or Coding with a ``required`` binding to one of
our ValueSets (``profiles/valuesets``, enumerated or whole-CodeSystem includes) is in it. The
result is the list of problems, each naming its place (``parameter[3].part[2]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).resolve().parents[1] / "profiles"

_DATE = re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?")
_DATETIME = re.compile(
    r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?)?)?"
)
_CODE = re.compile(r"[^\s]+( [^\s]+)*")
_STRINGS = {"string", "markdown", "uri", "url", "canonical", "id", "oid", "uuid", "time"}
_RESOURCE_TYPES = {"Resource", "DomainResource"}


def _value_key(type: str) -> str:
    return "value" + type[0].upper() + type[1:]


def _is_resource_type(type: str) -> bool:
    # datatypes start with a lower-case letter (primitives) or are in this list
    complex_types = {
        "Address", "Age", "Annotation", "Attachment", "CodeableConcept", "Coding",
        "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier", "Money",
        "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature",
        "Timing", "Meta", "Dosage", "Expression", "UsageContext", "ContactDetail",
    }  # fmt: skip
    return type[:1].isupper() and type not in complex_types


def _shape_problem(type: str, value: Any) -> str | None:
    """Why ``value`` is not a JSON value of FHIR ``type`` (None when it is)."""
    if type == "boolean":
        return None if isinstance(value, bool) else "not a boolean"
    if type in ("integer", "unsignedInt", "positiveInt"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and type == "unsignedInt":
            ok = value >= 0
        if ok and type == "positiveInt":
            ok = value >= 1
        return None if ok else f"not a{'n' if type == 'integer' else ''} {type}"
    if type == "decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "not a decimal"
    if type == "date":
        ok = isinstance(value, str) and _DATE.fullmatch(value) is not None
        return None if ok else f"not a date: {value!r}"
    if type in ("dateTime", "instant"):
        ok = isinstance(value, str) and _DATETIME.fullmatch(value) is not None
        return None if ok else f"not a {type}: {value!r}"
    if type == "code":
        ok = isinstance(value, str) and _CODE.fullmatch(value) is not None
        return None if ok else f"not a code: {value!r}"
    if type in _STRINGS:
        return None if isinstance(value, str) and value != "" else f"not a {type}"
    if not isinstance(value, dict) or not value:
        return f"not a {type} object"
    if type == "Reference" and not any(k in value for k in ("reference", "identifier")):
        return "a Reference without reference nor identifier"
    if type == "Coding" and not value.get("code"):
        return "a Coding without code"
    return None


# -- terminology ---------------------------------------------------------------------------------


@cache
def _by_url(folder: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((PROFILES / folder).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data.get("url"), str):
            out[data["url"]] = data
    return out


def _concepts(concepts: Iterable[dict[str, Any]]) -> Iterable[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _concepts(concept.get("concept", []))


@cache
def value_set_codes(url: str) -> frozenset[tuple[str, str]] | None:
    """The (system, code) pairs of one of our ValueSets; None when it cannot be expanded here
    (unknown, filters, imported value sets, CodeSystems not in profiles/)."""
    value_set = _by_url("valuesets").get(url.split("|")[0])
    if value_set is None:
        return None
    compose = value_set.get("compose", {})
    if compose.get("exclude"):
        return None
    codes: set[tuple[str, str]] = set()
    for include in compose.get("include", []):
        system = include.get("system")
        if include.get("filter") or include.get("valueSet") or not system:
            return None
        if include.get("concept"):
            codes.update((system, c["code"]) for c in include["concept"])
            continue
        code_system = _by_url("codesystems").get(system)
        if code_system is None:
            return None
        codes.update((system, code) for code in _concepts(code_system.get("concept", [])))
    return frozenset(codes)


def _binding_problem(definition: dict[str, Any], type: str, value: Any) -> str | None:
    binding = definition.get("binding") or {}
    if binding.get("strength") != "required" or not binding.get("valueSet"):
        return None
    codes = value_set_codes(binding["valueSet"])
    if codes is None:
        return None
    if type == "code" and isinstance(value, str):
        if value not in {code for _, code in codes}:
            return f"code {value!r} is not in {binding['valueSet']}"
    elif type == "Coding" and isinstance(value, dict):
        if (value.get("system"), value.get("code")) not in codes:
            return f"{value.get('system')}|{value.get('code')} is not in {binding['valueSet']}"
    return None


# -- the walk --------------------------------------------------------------------------------------


def _check_one(definition: dict[str, Any], given: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    values = [k for k in given if k.startswith("value")]
    carried = values + [k for k in ("resource", "part") if k in given]
    type = definition.get("type")
    if definition.get("part"):
        if type is not None:
            problems.append(f"{where}: the definition of '{definition['name']}' has type and part")
        if carried != ["part"]:
            problems.append(f"{where} ({definition['name']}): carries {carried}, expected part")
        if isinstance(given.get("part"), list):
            problems += _check_list(definition["part"], given["part"], f"{where}.part")
        return problems
    if type is None:
        if len(carried) != 1 or carried == ["part"]:
            problems.append(f"{where} ({definition['name']}): carries {carried}, expected a value")
        return problems
    if _is_resource_type(type):
        if carried != ["resource"]:
            problems.append(f"{where} ({definition['name']}): carries {carried}, expected resource")
            return problems
        resource = given["resource"]
        actual = resource.get("resourceType") if isinstance(resource, dict) else None
        if actual is None or (type not in _RESOURCE_TYPES and actual != type):
            problems.append(f"{where} ({definition['name']}): resource {actual}, expected {type}")
        return problems
    key = _value_key(type)
    if carried != [key]:
        problems.append(f"{where} ({definition['name']}): carries {carried}, expected {key}")
        return problems
    shape = _shape_problem(type, given[key])
    if shape is not None:
        problems.append(f"{where}.{key} ({definition['name']}): {shape}")
        return problems
    bound = _binding_problem(definition, type, given[key])
    if bound is not None:
        problems.append(f"{where}.{key} ({definition['name']}): {bound}")
    return problems


def _check_list(definitions: list[dict[str, Any]], given: list[Any], where: str) -> list[str]:
    problems: list[str] = []
    by_name = {d["name"]: d for d in definitions}
    counts = dict.fromkeys(by_name, 0)
    for i, item in enumerate(given):
        place = f"{where}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"{place}: not a parameter with a name")
            continue
        definition = by_name.get(item["name"])
        if definition is None:
            problems.append(f"{place}: unknown parameter '{item['name']}'")
            continue
        counts[item["name"]] += 1
        problems += _check_one(definition, item, place)
    for name, definition in by_name.items():
        low = int(definition.get("min", 0))
        high = definition.get("max", "*")
        if counts[name] < low:
            problems.append(f"{where}: '{name}' occurs {counts[name]} time(s), min is {low}")
        if high != "*" and counts[name] > int(high):
            problems.append(f"{where}: '{name}' occurs {counts[name]} time(s), max is {high}")
    return problems


def check_output(definition: dict[str, Any], output: Any) -> list[str]:
    """Every way ``output`` (the response body) breaks ``definition``'s out parameters."""
    if not isinstance(output, dict) or output.get("resourceType") != "Parameters":
        return [f"the output is not a Parameters resource: {str(output)[:200]}"]
    outs = [p for p in definition.get("parameter", []) if p.get("use") == "out"]
    given = output.get("parameter", [])
    if not isinstance(given, list):
        return ["Parameters.parameter is not a list"]
    return _check_list(outs, given, "parameter")
