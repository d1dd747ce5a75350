"""Base validation of FHIR R4 JSON resources (the structure every resource must have).

Checked here, in one pass, every problem reported (never only the first):

* the resource is a JSON object whose ``resourceType`` is a supported type
  (:mod:`server.fhir.resource_types`);
* the HL7 R4 JSON schema (``data/fhir.schema.json``): unknown elements, datatypes,
  cardinality ``1..`` (required elements), primitive value formats (regexes), schema enums;
* tightened in memory by :mod:`server.fhir.datatype_checks`: no ``null`` (except ``null``
  in a primitive array paired with its ``_element`` array), no empty string / array / object,
  no whitespace-only strings, integer ranges, calendar-valid date / dateTime / instant,
  resource ``id`` syntax, at most one variant of a choice element, codes of required bindings
  of the core spec (``data/required-bindings.json``);
* nested resources (``contained``, ``Bundle.entry.resource``, ``Bundle.entry.response.outcome``,
  ``Parameters.parameter[.part].resource``) are validated with their own type's schema and
  reported with prefixed expressions (``Bundle.entry[3].resource.status``);
* the narrative rules txt-1 and txt-2 (:mod:`server.fhir.narrative`: allowed XHTML only, no
  active content, parsed safely), reported with code ``invariant``.

Left to profile validation: invariants (FHIRPath constraints such as ``dom-2`` or
``bdl-7``), profile constraints (slicing, cardinality narrowing, must-support), extensible /
preferred bindings, bindings to value sets that cannot be enumerated locally (mime types,
languages, UCUM, ...), reference resolution and terminology-server look-ups.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from server.fhir.datatype_checks import (
    STRING_MAX,
    describe,
    json_type,
    prepare_definitions,
)
from server.fhir.definitions import r4_schema
from server.fhir.narrative import narrative_problems
from server.fhir.outcome import Issue, pointer_to_fhirpath
from server.fhir.resource_types import RESOURCE_TYPES

_DATA = Path(__file__).with_name("data")
_MAX_LISTED_CODES = 12

Path_ = list[str | int]


def _load(name: str) -> Any:
    return orjson.loads((_DATA / name).read_bytes())


class BaseValidator:
    """Validates parsed JSON values against the R4 base structure; see the module docstring."""

    def __init__(self) -> None:
        choices: dict[str, list[str]] = _load("choice-elements.json")
        mandatory: dict[str, list[str]] = _load("required-elements.json")
        self._definitions, self._patterns, hl7_shapes = prepare_definitions(
            r4_schema(), _load("required-bindings.json"), choices, mandatory
        )
        self._mandatory = {
            tuple(alternatives): path.rsplit(".", 1)[1] for path, alternatives in mandatory.items()
        }
        self._choice_base = {
            tuple(sorted(variants)): path.rsplit(".", 1)[1][:-3]
            for path, variants in choices.items()
        }
        self._hl7_shapes = {name: re.compile(p) for name, p in hl7_shapes.items()}
        self._validators: dict[str, Any] = {}

    def _validator(self, resource_type: str) -> Any:
        validator = self._validators.get(resource_type)
        if validator is None:
            # only the definitions the type reaches: compiling is ~4x faster than with all 680
            definitions = {name: self._definitions[name] for name in self._reachable(resource_type)}
            schema = {"$ref": f"#/definitions/{resource_type}", "definitions": definitions}
            validator = jsonschema_rs.Draft6Validator(schema)
            self._validators[resource_type] = validator
        return validator

    def _reachable(self, name: str) -> set[str]:
        """The definitions ``name`` refers to, directly or through others (itself included)."""
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if current in seen or current not in self._definitions:
                continue
            seen.add(current)
            stack.extend(_refs(self._definitions[current]))
        return seen

    def validate(self, resource: object, *, expression_root: str | None = None) -> list[Issue]:
        """Every base-structure problem of `resource` (a parsed JSON value), in one pass.

        Empty list = valid. Expressions start with the resource type, or with
        ``expression_root`` when given (e.g. ``Bundle.entry[2].resource``).
        """
        issues: list[Issue] = []
        self._validate(resource, expression_root, issues)
        return issues

    def _validate(self, resource: object, root: str | None, issues: list[Issue]) -> None:
        if not isinstance(resource, dict):
            issues.append(
                Issue(
                    "error",
                    "structure",
                    f"a resource must be a JSON object, got {json_type(resource)}",
                    root,
                )
            )
            return
        rtype = resource.get("resourceType")
        where = f"{root or 'Resource'}.resourceType"
        if not isinstance(rtype, str):
            msg = (
                "missing resourceType"
                if rtype is None and "resourceType" not in resource
                else "resourceType must be a string"
            )
            issues.append(Issue("error", "structure", msg, where))
            return
        if rtype not in RESOURCE_TYPES:
            issues.append(
                Issue("error", "structure", f"unsupported resource type {describe(rtype)}", where)
            )
            return
        root = root or rtype
        validator = self._validator(rtype)
        if not validator.is_valid(resource):
            seen: set[tuple[Any, ...]] = set()
            for error in validator.iter_errors(resource):
                for issue in self._issues(error, resource, root, seen):
                    issues.append(issue)
        text = resource.get("text")
        if isinstance(text, dict) and isinstance(text.get("div"), str):
            for problem in narrative_problems(text["div"]):
                issues.append(Issue("error", "invariant", problem, f"{root}.text.div"))
        for sub, suffix in _nested_resources(resource, rtype):
            self._validate(sub, pointer_to_fhirpath(root, suffix), issues)

    def _issues(
        self, error: Any, resource: dict[str, Any], root: str, seen: set[tuple[Any, ...]]
    ) -> list[Issue]:
        path: Path_ = list(error.instance_path)
        kind: str = error.kind.name
        info: dict[str, Any] = error.kind.as_dict()
        value = error.instance
        here = pointer_to_fhirpath(root, path)

        def issue(code: str, msg: str, at: str = here) -> list[Issue]:
            key = (code, msg, at)
            if key in seen:
                return []
            seen.add(key)
            return [Issue("error", code, msg, at)]

        if kind == "additionalProperties":
            out: list[Issue] = []
            for name in info.get("unexpected", []):
                shown = name if len(name) <= 60 else name[:60] + "…"
                out += issue(
                    "structure",
                    f"unknown element '{shown}'",
                    pointer_to_fhirpath(root, [*path, shown]),
                )
            return out
        if kind == "required":
            prop = info["property"]
            return issue("required", f"missing required element '{prop}'", f"{here}.{prop}")
        if kind == "anyOf" and "allOf" in error.schema_path:
            names = tuple(
                ctx[0].kind.as_dict().get("property", "?") for ctx in info.get("context", []) if ctx
            )
            name = self._mandatory.get(names, names[0] if names else "?")
            return issue(
                "required",
                f"missing required element '{name}'",
                f"{here}.{name.removesuffix('[x]')}",
            )
        if value is None:
            if _null_allowed(resource, path):
                return []
            return issue("structure", "null value")
        if kind == "type":
            expected = " or ".join(info.get("types", []))
            if expected == "integer" and isinstance(value, float):
                return issue("value", f"invalid integer value {describe(value)}")
            return issue(
                "structure", f"wrong datatype: expected {expected}, got {json_type(value)}"
            )
        if kind == "minItems":
            return issue("structure", "empty value (empty array)")
        if kind == "minProperties":
            return issue("structure", "empty value (empty object)")
        if kind == "pattern":
            if value == "":
                return issue("structure", "empty value (empty string)")
            if isinstance(value, str) and not value.strip():
                return issue("value", "invalid value: whitespace-only string")
            prim = self._patterns.get(info.get("pattern", ""), "primitive")
            shape = self._hl7_shapes.get(prim)
            if shape is not None and isinstance(value, str) and shape.match(value):
                return issue(
                    "value", f"invalid {prim} value {describe(value)}: no such day in the calendar"
                )
            return issue("value", f"invalid {prim} value {describe(value)}")
        if kind == "maxLength":
            return issue("too-long", f"string longer than {STRING_MAX} characters")
        if kind in ("minimum", "maximum"):
            return issue("value", f"integer value {describe(value)} out of range")
        if kind == "enum":
            if value == "":
                return issue("structure", "empty value (empty string)")
            if isinstance(value, str) and not value.strip():
                return issue("value", "invalid value: whitespace-only string")
            if not isinstance(value, str):
                return issue("structure", f"wrong datatype: expected code, got {json_type(value)}")
            codes = [str(c) for c in info.get("options", [])]
            listed = ", ".join(codes[:_MAX_LISTED_CODES]) + (
                ", …" if len(codes) > _MAX_LISTED_CODES else ""
            )
            return issue(
                "code-invalid",
                f"code {describe(value)} is not in the required value set ({listed})",
            )
        if kind == "const":
            return issue("structure", f"invalid value {describe(value)}")
        if kind == "not" and "dependencies" in error.schema_path:
            return self._choice_issue(error, value, path, root, issue)
        return issue("structure", f"invalid element ({kind})")

    def _choice_issue(
        self, error: Any, value: Any, path: Path_, root: str, issue: Callable[..., list[Issue]]
    ) -> list[Issue]:
        schema_path = list(error.schema_path)
        variant = str(schema_path[schema_path.index("dependencies") + 1])
        others = [
            alt["required"][0] for alt in error.kind.as_dict().get("schema", {}).get("anyOf", [])
        ]
        group = tuple(sorted([variant, *others]))
        base = self._choice_base.get(group, variant)
        present = sorted(v for v in group if isinstance(value, dict) and v in value)
        return issue(
            "structure",
            f"more than one value for choice element {base}[x]: {', '.join(present)}",
            pointer_to_fhirpath(root, [*path, base]),
        )


def _null_allowed(resource: dict[str, Any], path: Path_) -> bool:
    """``null`` inside a primitive array is allowed when the paired ``_element`` array exists."""
    if len(path) < 2 or not isinstance(path[-1], int) or not isinstance(path[-2], str):
        return False
    parent: Any = resource
    for step in path[:-2]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    key = path[-2]
    sibling = key[1:] if key.startswith("_") else f"_{key}"
    return isinstance(parent, dict) and isinstance(parent.get(sibling), list)


def _nested_resources(resource: dict[str, Any], rtype: str) -> list[tuple[Any, Path_]]:
    """The resources held inside `resource`, with their paths relative to it."""
    out: list[tuple[Any, Path_]] = []
    contained = resource.get("contained")
    if isinstance(contained, list):
        out += [(c, ["contained", i]) for i, c in enumerate(contained) if isinstance(c, dict)]
    if rtype == "Bundle":
        entries = resource.get("entry")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("resource"), dict):
                out.append((entry["resource"], ["entry", i, "resource"]))
            response = entry.get("response")
            if isinstance(response, dict) and isinstance(response.get("outcome"), dict):
                out.append((response["outcome"], ["entry", i, "response", "outcome"]))
    elif rtype == "Parameters":
        _parameter_resources(resource.get("parameter"), ["parameter"], out)
    return out


def _parameter_resources(params: Any, prefix: Path_, out: list[tuple[Any, Path_]]) -> None:
    for i, param in enumerate(params if isinstance(params, list) else []):
        if not isinstance(param, dict):
            continue
        if isinstance(param.get("resource"), dict):
            out.append((param["resource"], [*prefix, i, "resource"]))
        _parameter_resources(param.get("part"), [*prefix, i, "part"], out)


def _refs(node: Any) -> Iterator[str]:
    """The definition names of every ``$ref`` inside a schema node."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/definitions/"):
                yield ref[len("#/definitions/") :]
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


@functools.cache
def base_validator() -> BaseValidator:
    """The process-wide :class:`BaseValidator`."""
    return BaseValidator()
