"""Tightening of the HL7 R4 JSON schema for base validation (used by ``validation.py``).

The vendored ``fhir.schema.json`` stays untouched on disk; at load time its definitions are
rewritten in memory so that jsonschema-rs can check, in one native pass, what the plain
schema lets through:

* ``null`` / ``{}`` for complex elements (``type: object`` + ``minProperties: 1``),
  ``[]`` for arrays (``minItems: 1``), ``""`` for uri/url/canonical/base64Binary/xhtml;
* whitespace-only ``string`` / ``markdown`` values, strings over 1 MB;
* integer / positiveInt / unsignedInt are whole numbers in their 32-bit ranges;
* calendar validity of date / dateTime / instant (``1980-02-30``): the HL7 regexes only
  check the shape; :data:`CALENDAR_PATTERNS` also check the day of the month (leap years
  included), staying in native regex code (a Python format callback cost ~3 µs per value);
* codes of required bindings enumerated in ``required-bindings.json`` (``enum``);
* at most one variant of each choice element (``choice-elements.json``) via ``dependencies``;
* required elements the schema leaves out (``required-elements.json``): primitives, which
  the schema cannot require because ``_name`` may stand in for the value, and choice
  elements (``allOf`` / ``anyOf`` of ``required``);
* nested resources (``ResourceList``) are only required to be objects here: the validator
  validates each of them separately with its own type's schema.
"""

from __future__ import annotations

from typing import Any

STRING_MAX = 1024 * 1024

# FHIR strings: some non-whitespace content, no control characters other than tab, CR, LF.
# (The HL7 regex ``[ \r\n\t\S]+`` also rejects Unicode spaces such as U+00A0, which occur in
# HL7's own content, and accepts whitespace-only strings.)
_STRING = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F]*[^\s\x00-\x1F][^\x00-\x08\x0B\x0C\x0E-\x1F]*$"

_PRIMITIVE_OVERRIDES: dict[str, dict[str, Any]] = {
    "string": {"type": "string", "pattern": _STRING, "maxLength": STRING_MAX},
    "markdown": {"type": "string", "pattern": _STRING, "maxLength": STRING_MAX},
    "uri": {"type": "string", "pattern": r"^\S+$"},
    "url": {"type": "string", "pattern": r"^\S+$"},
    "canonical": {"type": "string", "pattern": r"^\S+$"},
    "base64Binary": {"type": "string", "pattern": r"^\s*[A-Za-z0-9+/=][A-Za-z0-9+/=\s]*$"},
    "xhtml": {"type": "string", "pattern": r"\S"},
    # the HL7 regexes on booleans / numbers only ever fire on strings, doubling the type error
    "boolean": {"type": "boolean"},
    "decimal": {"type": "number"},
    "integer": {"type": "integer", "minimum": -2147483648, "maximum": 2147483647},
    "unsignedInt": {"type": "integer", "minimum": 0, "maximum": 2147483647},
    "positiveInt": {"type": "integer", "minimum": 1, "maximum": 2147483647},
}
# date / dateTime / instant: the HL7 regexes with the day of month checked against the calendar
# (30-day months, February 28 / 29 in leap years), so that the check stays in native code.
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)"
_MONTH_DAY = (
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_FULL_DATE = rf"({_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_PARTIAL_DATE = rf"{_YEAR}(-(0[1-9]|1[0-2]))?"
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
CALENDAR_PATTERNS = {
    "date": rf"^({_FULL_DATE}|{_PARTIAL_DATE})$",
    "dateTime": rf"^({_FULL_DATE}({_TIME}{_ZONE})?|{_PARTIAL_DATE})$",
    "instant": rf"^{_FULL_DATE}{_TIME}{_ZONE}$",
}


def def_name(path: str) -> str:
    """ElementDefinition path of a backbone element -> schema definition name."""
    head, *rest = path.split(".")
    return "_".join([head] + [p[0].upper() + p[1:] for p in rest])


def _strip(node: Any, names: bool = False) -> Any:
    """``node`` without its ``description`` annotations (element names are kept)."""
    if isinstance(node, dict):
        if names:
            return {k: _strip(v) for k, v in node.items()}
        return {
            k: _strip(v, k in ("properties", "definitions"))
            for k, v in node.items()
            if k != "description"
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def prepare_definitions(
    schema: dict[str, Any],
    required_bindings: dict[str, list[str]],
    choices: dict[str, list[str]],
    required_elements: dict[str, list[str]],
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The tightened definitions, a map pattern -> primitive type name (for messages) and
    the original HL7 regexes of date / dateTime / instant (to tell shape from calendar errors).
    """
    defs: dict[str, Any] = _strip(schema["definitions"], names=True)
    primitives = {n: d for n, d in defs.items() if "properties" not in d and "oneOf" not in d}
    # inline copies of primitive definitions (choice variants) -> $ref, so overrides apply
    by_shape: dict[tuple[Any, Any], str] = {}
    for name in (
        "string",
        "uri",
        "integer",
        "boolean",
        "decimal",
        "date",
        "dateTime",
        "instant",
        "time",
        "code",
        "id",
        "base64Binary",
        "positiveInt",
        "unsignedInt",
        "oid",
        "uuid",
        "markdown",
        "url",
        "canonical",
    ):
        d = primitives[name]
        by_shape.setdefault((d.get("pattern"), d.get("type")), name)

    def as_ref(prop: dict[str, Any]) -> dict[str, Any]:
        key = (prop.get("pattern"), prop.get("type"))
        if "pattern" in prop and key in by_shape and set(prop) <= {"pattern", "type"}:
            return {"$ref": f"#/definitions/{by_shape[key]}"}
        return prop

    for d in defs.values():
        props = d.get("properties")
        if props is None:
            continue
        d["type"] = "object"
        d["minProperties"] = 1
        for pname, prop in list(props.items()):
            # the HL7 schema omits a few `_name` siblings of primitives (e.g. _baseDefinition)
            ref = prop.get("items", prop).get("$ref", "")
            if ref.rsplit("/", 1)[-1] in primitives and f"_{pname}" not in props:
                element = {"$ref": "#/definitions/Element"}
                props[f"_{pname}"] = (
                    {"type": "array", "items": element} if "items" in prop else element
                )
        for pname, prop in props.items():
            if prop.get("type") == "array":
                prop["minItems"] = 1
                prop["items"] = as_ref(prop["items"])
            else:
                props[pname] = as_ref(prop)
    for name, override in _PRIMITIVE_OVERRIDES.items():
        defs[name] = dict(override)
    hl7_shapes: dict[str, str] = {}
    for name, pattern in CALENDAR_PATTERNS.items():
        hl7_shapes[name] = defs[name]["pattern"]
        defs[name] = {"type": "string", "pattern": pattern}
    defs["ResourceList"] = {"type": "object"}

    for path, codes in required_bindings.items():
        parent, elem = path.rsplit(".", 1)
        prop = defs.get(def_name(parent), {}).get("properties", {}).get(elem)
        if prop is None:
            continue
        enum = {"type": "string", "enum": codes}
        if prop.get("type") == "array":
            prop["items"] = enum
        else:
            prop.clear()
            prop.update(enum)

    for path, variants in choices.items():
        d = defs.get(def_name(path.rsplit(".", 1)[0]))
        if d is None:
            continue
        deps = d.setdefault("dependencies", {})
        for v in variants:
            others = [{"required": [w]} for w in variants if w != v]
            if others:
                deps[v] = {"not": {"anyOf": others}}

    for path, alternatives in required_elements.items():
        d = defs.get(def_name(path.rsplit(".", 1)[0]))
        if d is not None:
            d.setdefault("allOf", []).append({"anyOf": [{"required": [a]} for a in alternatives]})

    patterns: dict[str, str] = {}
    for name, d in defs.items():
        if "pattern" in d and "properties" not in d:
            patterns.setdefault(d["pattern"], name)
    return defs, patterns, hl7_shapes


def describe(value: Any, limit: int = 60) -> str:
    """A short rendering of an offending value: never more than ``limit`` characters of it."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "…"
        return f"'{text}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "…"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a value"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
