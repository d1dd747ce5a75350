"""Operation inputs and outputs, driven by an OperationDefinition.

:func:`parse_input` reads the ``in`` parameters of an operation from a GET query string and/or
a POST ``Parameters`` body and checks them against the OperationDefinition's ``parameter``
list:

* names: a parameter the definition does not declare (as ``use: in``) is an error; ``_format``
  and ``_pretty`` in the query are ignored;
* GET (query) values can only be primitives; a complex, resource or tuple (``part``) parameter
  must come in a POST body;
* types (``parameter.type``): primitives are converted -- ``boolean`` -> bool, ``integer`` /
  ``positiveInt`` / ``unsignedInt`` -> int, ``decimal`` -> Decimal, every other primitive
  (``string``, ``code``, ``uri``, ``canonical``, ``date``, ``dateTime``, ...) -> str after a
  format check (dates stay strings: FHIR dates may be partial); complex datatypes
  (``Coding``, ``CodeableConcept``, ``Quantity``, ``Reference``, ...) -> their JSON object;
  ``Resource`` or a resource type -> the resource JSON; a parameter with ``part`` definitions
  -> a ``dict[str, list[Any]]`` of its parts, parsed by the same rules; a parameter without
  type nor parts (``Any``) -> the raw ``value[x]`` or resource;
* cardinality: ``min`` / ``max`` of each parameter (and of each part within its tuple).

Every problem raises :class:`server.errors.BadRequest` with a message naming the parameter and an
``expression``: ``Parameters.parameter[3]`` (``.part[1]`` for parts) for a body, the query
parameter name for a query. The result maps each given parameter name to its values in order
(query values first); absent parameters are absent from the dict.

:func:`to_parameters` builds an output ``Parameters`` resource.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from server.errors import BadRequest
from server.fhir.urns import OID_URN, UUID_URN

Inputs = dict[str, list[Any]]

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_DATE = _YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_FORMATS = {
    "date": re.compile(_DATE),
    "dateTime": re.compile(_DATE.replace(")?)?", f"(T{_TIME}{_ZONE})?)?)?")),
    "instant": re.compile(_YEAR + rf"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{_TIME}{_ZONE}"),
    "time": re.compile(_TIME),
    "code": re.compile(r"[^\s]+( [^\s]+)*"),
    "id": re.compile(r"[A-Za-z0-9\-\.]{1,64}"),
    "uri": re.compile(r"\S+"),
    "url": re.compile(r"\S+"),
    "canonical": re.compile(r"\S+"),
    "oid": OID_URN,
    "uuid": UUID_URN,
    "base64Binary": re.compile(r"(\s*([0-9a-zA-Z+/=]){4}\s*)+"),
}
_STRINGS = {"string", "markdown", *_FORMATS}
_INTEGERS = {"integer": -(2**31), "unsignedInt": 0, "positiveInt": 1}
PRIMITIVES = frozenset({"boolean", "decimal", *_INTEGERS, *_STRINGS})
_ANY = {None, "Any", "Element", "Type", "DataType"}
_RESOURCE_BASES = {"Resource", "DomainResource"}
_IGNORED_QUERY = frozenset({"_format", "_pretty"})


# complex datatypes a parameter may carry as value[x] (R4 datatypes usable in Parameters)
_COMPLEX = frozenset(
    "Address Age Annotation Attachment CodeableConcept Coding ContactPoint Count Distance "
    "Duration HumanName Identifier Money Period Quantity Range Ratio Reference SampledData "
    "Signature Timing ContactDetail Contributor DataRequirement Expression ParameterDefinition "
    "RelatedArtifact TriggerDefinition UsageContext Dosage Meta".split()
)


@dataclass(frozen=True, slots=True)
class Typed:
    """An output value with an explicit FHIR type: ``Typed("code", "active")`` -> valueCode."""

    type: str
    value: Any


def _is_resource_type(type: str) -> bool:
    return type[:1].isupper() and type not in _ANY and type not in _COMPLEX


def _primitive(type: str, value: Any, from_query: bool) -> Any:
    """``value`` as the Python value of primitive ``type``; raises ValueError with the reason."""
    if type == "boolean":
        if from_query:
            if value not in ("true", "false"):
                raise ValueError("expected true or false")
            return value == "true"
        if not isinstance(value, bool):
            raise ValueError("expected a JSON boolean")
        return value
    if type in _INTEGERS:
        if from_query:
            if not _INT.fullmatch(value):
                raise ValueError("expected an integer")
            value = int(value)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("expected a JSON integer")
        if not _INTEGERS[type] <= value <= 2**31 - 1:
            raise ValueError(f"{type} out of range")
        return value
    if type == "decimal":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (_DECIMAL.fullmatch(value) if from_query else number):
            raise ValueError("expected a decimal number")
        return Decimal(value if from_query else repr(value))
    if not isinstance(value, str):
        raise ValueError("expected a JSON string")
    if not value.strip():
        raise ValueError("empty value")
    shape = _FORMATS.get(type)
    if shape is not None and not shape.fullmatch(value):
        raise ValueError(f"not a valid {type}")
    return value


def _declared(definitions: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {
        d["name"]: d
        for d in definitions
        if d.get("use", "in") == "in" and isinstance(d.get("name"), str)
    }


def _max(definition: Mapping[str, Any]) -> int | None:
    high = definition.get("max", "*")
    return None if high == "*" else int(high)


def _check_cardinality(
    declared: Mapping[str, Mapping[str, Any]],
    where: dict[str, list[str]],
    missing_at: str,
) -> None:
    for name, definition in declared.items():
        found = where.get(name, [])
        if len(found) < int(definition.get("min", 0)):
            low = definition.get("min")
            raise BadRequest(
                f"Parameter '{name}' is required ({low}..{definition.get('max', '*')})",
                expression=missing_at or name,
            )
        high = _max(definition)
        if high is not None and len(found) > high:
            raise BadRequest(
                f"Parameter '{name}' is given {len(found)} times; at most {high} allowed",
                expression=found[high],
            )


def _parse_query(
    declared: Mapping[str, Mapping[str, Any]],
    query: Iterable[tuple[str, str]],
    out: Inputs,
    where: dict[str, list[str]],
) -> None:
    for name, raw in query:
        if name in _IGNORED_QUERY:
            continue
        shown = name[:64]
        definition = declared.get(name)
        if definition is None:
            raise BadRequest(f"Unknown parameter '{shown}'", expression=shown)
        type = definition.get("type")
        if definition.get("part") or type not in PRIMITIVES:
            raise BadRequest(
                f"Parameter '{name}' ({type or 'tuple'}) cannot be given in the URL: "
                "use POST with a Parameters body",
                expression=name,
            )
        try:
            value = _primitive(type, raw, True)
        except ValueError as e:
            raise BadRequest(
                f"Parameter '{name}': {e} ({type}), got '{raw[:64]}'", expression=name
            ) from None
        out.setdefault(name, []).append(value)
        where.setdefault(name, []).append(name)


def _value(definition: Mapping[str, Any], param: Mapping[str, Any], at: str) -> Any:
    """The value of one body parameter (or part) against its definition."""
    name, type = definition["name"], definition.get("type")
    keys = [k for k in param if k.startswith("value")]
    given = keys + [k for k in ("resource", "part") if k in param]
    if len(given) != 1:
        what = ", ".join(given) if given else "nothing"
        raise BadRequest(
            f"Parameter '{name}' must have exactly one of value[x], resource or part; got {what}",
            expression=at,
        )
    if definition.get("part"):
        if not isinstance(param.get("part"), list):
            raise BadRequest(f"Parameter '{name}' must have parts", expression=at)
        return _parse_body_list(definition["part"], param["part"], f"{at}.part", at)
    if type in _ANY:
        return param[given[0]]
    if type in PRIMITIVES or type in _COMPLEX:
        key = "value" + type[0].upper() + type[1:]
        if keys != [key]:
            raise BadRequest(
                f"Parameter '{name}' must be a {type} ({key}), got {given[0]}", expression=at
            )
        if type in _COMPLEX:
            if not isinstance(param[key], dict) or not param[key]:
                raise BadRequest(f"Parameter '{name}' must be a {type} object", expression=at)
            return param[key]
        try:
            return _primitive(type, param[key], False)
        except ValueError as e:
            raise BadRequest(f"Parameter '{name}': {e} ({type})", expression=at) from None
    resource = param.get("resource")
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(rtype, str) or (type not in _RESOURCE_BASES and rtype != type):
        expected = "a resource" if type in _RESOURCE_BASES else f"a {type} resource"
        raise BadRequest(f"Parameter '{name}' must be {expected}", expression=at)
    return resource


def _parse_body_list(
    definitions: Iterable[Mapping[str, Any]], params: list[Any], prefix: str, missing_at: str
) -> Inputs:
    declared = _declared(definitions)
    out: Inputs = {}
    where: dict[str, list[str]] = {}
    _parse_body(declared, params, prefix, out, where)
    _check_cardinality(declared, where, missing_at)
    return out


def _parse_body(
    declared: Mapping[str, Mapping[str, Any]],
    params: list[Any],
    prefix: str,
    out: Inputs,
    where: dict[str, list[str]],
) -> None:
    for i, param in enumerate(params):
        at = f"{prefix}[{i}]"
        name = param.get("name") if isinstance(param, dict) else None
        if not isinstance(name, str):
            raise BadRequest("Each parameter must be an object with a name", expression=at)
        definition = declared.get(name)
        if definition is None:
            raise BadRequest(f"Unknown parameter '{name[:64]}'", expression=at)
        out.setdefault(name, []).append(_value(definition, param, at))
        where.setdefault(name, []).append(at)


def parse_input(
    definition: Mapping[str, Any],
    *,
    query: Iterable[tuple[str, str]] | None,
    body: Any | None,
) -> Inputs:
    """The ``in`` parameters of one invocation; see the module docstring for the rules."""
    declared = _declared(definition.get("parameter", []))
    out: Inputs = {}
    where: dict[str, list[str]] = {}
    _parse_query(declared, query or (), out, where)
    missing_at = ""
    if body is not None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            got = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
            raise BadRequest(f"The body must be a Parameters resource, got {str(got)[:40]}")
        params = body.get("parameter", [])
        if not isinstance(params, list):
            raise BadRequest("Parameters.parameter must be an array", expression="Parameters")
        _parse_body(declared, params, "Parameters.parameter", out, where)
        missing_at = "Parameters"
    _check_cardinality(declared, where, missing_at)
    return out


def first(params: Mapping[str, list[Any]], name: str, default: Any = None) -> Any:
    """The first value of parameter ``name``, or ``default`` when it was not given."""
    values = params.get(name)
    return values[0] if values else default


# -- output ------------------------------------------------------------------------------------


def _entry(name: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if isinstance(value, Typed):
        if _is_resource_type(value.type):
            out["resource"] = value.value
        else:
            out["value" + value.type[0].upper() + value.type[1:]] = _json(value.value)
    elif isinstance(value, bool):
        out["valueBoolean"] = value
    elif isinstance(value, int):
        out["valueInteger"] = value
    elif isinstance(value, float | Decimal):
        out["valueDecimal"] = _json(value)
    elif isinstance(value, str):
        out["valueString"] = value
    elif isinstance(value, dict) and "resourceType" in value:
        out["resource"] = value
    elif isinstance(value, list):
        out["part"] = _entries(value)
    else:
        raise TypeError(f"output parameter '{name}': give the FHIR type with Typed(...)")
    return out


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _entries(values: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [_entry(name, value) for name, value in values if value is not None]


def to_parameters(values: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """An output ``Parameters`` resource from ``(name, value)`` pairs, in order.

    The ``value[x]`` follows the Python type: bool -> valueBoolean, int -> valueInteger,
    float / Decimal -> valueDecimal, str -> valueString, a dict with ``resourceType`` ->
    ``resource``, a list of ``(name, value)`` pairs -> ``part`` (a tuple); ``Typed(type, v)``
    names the type (``valueCode``, ``valueCoding``, ``valueUri``, ...). ``None`` values are
    left out; any other value is a TypeError.
    """
    entries = _entries(values)
    out: dict[str, Any] = {"resourceType": "Parameters"}
    return {**out, "parameter": entries} if entries else out
