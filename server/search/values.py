"""Normalised search values: one function for each comparison rule.

A stored value (an index row, ``to_rows``) and a search value (``parse.py``) go through the
same function here, so both sides of every comparison are normalised identically:

* strings are folded (``fold``) for the default and ``:contains`` matches;
* dates become ``[low, high)`` ranges in microseconds since the epoch, UTC (``date_range``);
  a value without an offset is read in the configured zone;
* numbers carry the range of their implicit precision (``number_value``);
* references become a local ``type``/``id`` or an absolute ``url`` (``parse_reference``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from functools import cache, lru_cache
from math import isfinite
from typing import Any
from zoneinfo import ZoneInfo

from server.fhir.definitions import r4_schema
from server.fhir.fhirpath import Node
from server.fhir.instant import DAY_US, date_range
from server.fhir.references import parse_reference as _parse_reference
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.query import NumberValue, ReferenceValue
from server.search.rows import IndexRows

# open ends of a Period and of a Range
DATE_MIN = -(2**62)
DATE_MAX = 2**62
NUMBER_MIN = -1e308
NUMBER_MAX = 1e308


@dataclass(frozen=True)
class IndexContext:
    """What normalising a stored value depends on: the server base and the local zone."""

    base: str
    zone: ZoneInfo


# -- strings -------------------------------------------------------------------------------


def fold(text: str) -> str:
    """``text`` without accents and case: NFKD, combining marks dropped, casefolded."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# -- dates ---------------------------------------------------------------------------------


def ap_margin(low: int, high: int, now_us: int) -> int:
    """How far ``ap`` widens a date search range on each side: 10 % of the distance between
    the search value and now, at least one day (microseconds)."""
    return max(abs(low - now_us) // 10, DAY_US)


# -- numbers -------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)


def number_value(text: str) -> NumberValue | None:
    """A decimal search value with its implicit precision (prefix ``eq``).

    The range is the value plus or minus half a unit of its last significant digit:
    ``100`` -> ``[99.5, 100.5)``, ``100.00`` -> ``[99.995, 100.005)``, ``1e2`` -> ``[50, 150)``.
    None when the text is not a decimal or does not fit a float.
    """
    if _NUMBER.fullmatch(text) is None:
        return None
    try:
        number = Decimal(text)
        exponent = number.as_tuple().exponent
        if not isinstance(exponent, int):
            return None
        context = Context(prec=len(text) + 4, Emin=-999_999_999, Emax=999_999_999)
        half = Decimal((0, (5,), exponent - 1))
        low = context.subtract(number, half)
        high = context.add(number, half)
        result = NumberValue("eq", float(number), float(low), float(high))
    except (InvalidOperation, OverflowError, ValueError):
        return None
    if not all(isfinite(v) for v in (result.value, result.low, result.high)):
        return None
    return result


# -- references ----------------------------------------------------------------------------


@lru_cache(maxsize=8192)  # pure; a write's references repeat (its patient, its encounter)
def parse_reference(text: str, base: str) -> ReferenceValue | None:
    """A reference (``server.fhir.references``) as a local ``type``/``id`` or an absolute
    ``url``.

    ``Type/id`` and ``Type/id/_history/n`` (version dropped) of a type the server knows and
    absolute URLs under ``base`` are local; a bare ``id`` is local with no type; other absolute
    URLs (``http(s)://``, ``urn:uuid:``, ``urn:oid:``, ...) are urls, a canonical's
    ``|version`` dropped. None for a contained (``#x``) reference and anything else that cannot
    be a reference.
    """
    found = _parse_reference(text, base)
    if found is None:
        return None
    if found.local:
        if found.type is None:
            return ReferenceValue(id=found.id)
        if found.type in RESOURCE_TYPES:
            return ReferenceValue(type=found.type, id=found.id)
    return None if found.url is None else ReferenceValue(url=found.url)


# -- index rows ----------------------------------------------------------------------------

# ``date_range`` of stored values, remembered: pure, and dates repeat across a write's resources
_span = lru_cache(maxsize=8192)(date_range)

_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
)
_NUMBER_TYPES = frozenset({"integer", "decimal", "positiveInt", "unsignedInt"})
_DATE_TYPES = frozenset({"date", "dateTime", "instant"})
_URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid"})
_TOKEN_PRIMITIVES = frozenset(
    {"code", "string", "id", "uri", "url", "canonical", "oid", "uuid", "markdown"}
)
_STRING_PRIMITIVES = frozenset(
    {"string", "markdown", "code", "uri", "url", "canonical", "id", "oid", "uuid"}
)
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_TEXT_REFS = frozenset({"#/definitions/string", "#/definitions/markdown"})
_STRING_PATTERN = r"^[ \r\n\t\S]+$"
_MONEY_SYSTEM = "urn:iso:std:iso:4217"


def _texts(value: Any) -> list[str]:
    """The non-empty strings of a JSON value that is a string or a list of them."""
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, str) and item]


def _dicts(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if isfinite(number) else None


@cache
def _string_children(type: str) -> tuple[str, ...]:
    """The elements of a complex type that hold a string or markdown (``id`` left out)."""
    definition = r4_schema().get("definitions", {}).get(type, {})
    names = []
    for name, spec in definition.get("properties", {}).items():
        if name == "id" or name.startswith("_"):
            continue
        target = spec.get("items", spec)
        if target.get("$ref") in _TEXT_REFS or (
            target.get("type") == "string" and target.get("pattern") == _STRING_PATTERN
        ):
            names.append(name)
    return tuple(names)


def _string_rows(key: str, grp: int, node: Node, out: IndexRows) -> None:
    type, value = node
    if isinstance(value, str):
        texts = _texts(value) if type in _STRING_PRIMITIVES else []
    elif isinstance(value, dict):
        parts: Iterable[str]
        if type == "HumanName":
            parts = _NAME_PARTS
        elif type == "Address":
            parts = _ADDRESS_PARTS
        else:
            parts = _string_children(type)
        texts = [text for part in parts for text in _texts(value.get(part))]
    else:
        texts = []
    for text in texts:
        out.string.append((key, grp, fold(text), text))


def _text_row(key: str, grp: int, value: Any, out: IndexRows) -> None:
    if isinstance(value, str) and value:
        out.string.append((key + ":text", grp, fold(value), value))


def _coding_rows(key: str, grp: int, coding: dict[str, Any], out: IndexRows) -> None:
    code = coding.get("code")
    if isinstance(code, str) and code:
        out.token.append((key, grp, _str(coding.get("system")), code))
    _text_row(key, grp, coding.get("display"), out)


def _token_rows(key: str, grp: int, node: Node, out: IndexRows, system: str = "") -> None:
    """``system``: the code system of a ``code`` (``bindings.py``); other primitives have none."""
    type, value = node
    if isinstance(value, bool):
        if type == "boolean":
            out.token.append((key, grp, "", "true" if value else "false"))
        return
    if isinstance(value, str):
        if value and type in _TOKEN_PRIMITIVES:
            out.token.append((key, grp, system if type == "code" else "", value))
        return
    if not isinstance(value, dict):
        return
    if type == "Coding":
        _coding_rows(key, grp, value, out)
    elif type == "CodeableConcept":
        for coding in _dicts(value.get("coding")):
            _coding_rows(key, grp, coding, out)
        _text_row(key, grp, value.get("text"), out)
    elif type == "Identifier":
        identifier = _str(value.get("value"))
        if identifier:
            out.token.append((key, grp, _str(value.get("system")), identifier))
        for kind in _dicts(value.get("type")):
            if identifier:
                for coding in _dicts(kind.get("coding")):
                    code = _str(coding.get("code"))
                    if code:
                        typed = f"{_str(coding.get('system'))}|{code}|{identifier}"
                        out.token.append((key + ":of-type", grp, "", typed))
            _text_row(key, grp, kind.get("text"), out)
    elif type == "ContactPoint":
        contact = _str(value.get("value"))
        if contact:
            out.token.append((key, grp, "", contact))


def _reference_rows(key: str, grp: int, node: Node, ctx: IndexContext, out: IndexRows) -> None:
    type, value = node
    if isinstance(value, str):
        if type in _URI_TYPES:
            target = parse_reference(value, ctx.base)
            if target is not None and (target.type is not None or target.url is not None):
                out.reference.append(
                    (key, grp, target.type or "", target.id or "", target.url or "")
                )
        return
    if type != "Reference" or not isinstance(value, dict):
        return
    text = value.get("reference")
    if isinstance(text, str):
        target = parse_reference(text, ctx.base)
        if target is not None:
            target_type = target.type
            if target_type is None and target.id is not None:
                declared = value.get("type")
                target_type = declared if declared in RESOURCE_TYPES else None
            if target.url is not None:
                out.reference.append((key, grp, "", "", target.url))
            elif target_type is not None and target.id is not None:
                out.reference.append((key, grp, target_type, target.id, ""))
    for identifier in _dicts(value.get("identifier")):
        code = _str(identifier.get("value"))
        if code:
            out.token.append((key + ":identifier", grp, _str(identifier.get("system")), code))


def _date_bound(value: Any, zone: ZoneInfo, index: int, default: int) -> int | None:
    """One end of a Period: the low (``index`` 0) or high (1) of its date, ``default`` when
    the end is absent, None when it is present but not a date."""
    if value is None:
        return default
    span = _span(value, zone) if isinstance(value, str) else None
    return None if span is None else span[index]


def _period_row(key: str, grp: int, period: dict[str, Any], zone: ZoneInfo, out: IndexRows) -> None:
    start, end = period.get("start"), period.get("end")
    if start is None and end is None:
        return
    low = _date_bound(start, zone, 0, DATE_MIN)
    high = _date_bound(end, zone, 1, DATE_MAX)
    if low is not None and high is not None:
        out.date.append((key, grp, low, high))


def _date_rows(key: str, grp: int, node: Node, ctx: IndexContext, out: IndexRows) -> None:
    type, value = node
    if isinstance(value, str):
        span = _span(value, ctx.zone) if type in _DATE_TYPES else None
        if span is not None:
            out.date.append((key, grp, span[0], span[1]))
    elif isinstance(value, dict):
        if type == "Period":
            _period_row(key, grp, value, ctx.zone, out)
        elif type == "Timing":
            for event in _texts(value.get("event")):
                span = _span(event, ctx.zone)
                if span is not None:
                    out.date.append((key, grp, span[0], span[1]))
            for repeat in _dicts(value.get("repeat")):
                for bounds in _dicts(repeat.get("boundsPeriod")):
                    _period_row(key, grp, bounds, ctx.zone, out)


def _number_rows(key: str, grp: int, node: Node, out: IndexRows) -> None:
    """A number, or a Range's bounds (an open bound reaches the end of the number line)."""
    type, value = node
    if type in _NUMBER_TYPES:
        number = _number(value)
        if number is not None:
            out.number.append((key, grp, number, number))
    elif type == "Range" and isinstance(value, dict):
        bounds = [value.get(k) for k in ("low", "high")]
        low, high = (_number(b.get("value")) if isinstance(b, dict) else None for b in bounds)
        if low is not None or high is not None:
            out.number.append(
                (key, grp, NUMBER_MIN if low is None else low, NUMBER_MAX if high is None else high)
            )


def _quantity_rows(key: str, grp: int, node: Node, out: IndexRows) -> None:
    type, value = node
    if type in _NUMBER_TYPES:
        number = _number(value)
        if number is not None:
            out.quantity.append((key, grp, "", "", "", number, number))
        return
    if not isinstance(value, dict):
        return
    if type in _QUANTITY_TYPES:
        number = _number(value.get("value"))
        if number is not None:
            system, code, unit = (_str(value.get(k)) for k in ("system", "code", "unit"))
            out.quantity.append((key, grp, system, code, unit, number, number))
    elif type == "Money":
        number = _number(value.get("value"))
        if number is not None:
            currency = _str(value.get("currency"))
            out.quantity.append(
                (key, grp, _MONEY_SYSTEM if currency else "", currency, "", number, number)
            )
    elif type == "Range":
        low_q, high_q = value.get("low"), value.get("high")
        low_q = low_q if isinstance(low_q, dict) else {}
        high_q = high_q if isinstance(high_q, dict) else {}
        low, high = _number(low_q.get("value")), _number(high_q.get("value"))
        if low is None and high is None:
            return
        unit_source = low_q if low_q.get("code") or low_q.get("system") else high_q
        if not (unit_source.get("code") or unit_source.get("system") or unit_source.get("unit")):
            unit_source = low_q if low_q.get("unit") else high_q
        system, code, unit = (_str(unit_source.get(k)) for k in ("system", "code", "unit"))
        out.quantity.append(
            (
                key,
                grp,
                system,
                code,
                unit,
                NUMBER_MIN if low is None else low,
                NUMBER_MAX if high is None else high,
            )
        )


def _uri_rows(key: str, grp: int, node: Node, out: IndexRows) -> None:
    type, value = node
    if type in _URI_TYPES and isinstance(value, str) and value:
        uri = value.split("|", 1)[0] if type == "canonical" else value
        if uri:
            out.uri.append((key, grp, uri))


def to_rows(
    param_key: str,
    grp: int,
    param_type: str,
    node: Node,
    ctx: IndexContext,
    out: IndexRows,
    system: str = "",
) -> None:
    """Append the index rows of one extracted value ``node`` to ``out``.

    ``param_type`` is the search parameter type; values of a shape the type cannot index are
    skipped (never an error). ``system``: the code system of a token parameter's ``code``
    values (that of their required binding, ``bindings.py``).
    """
    if param_type == "string":
        _string_rows(param_key, grp, node, out)
    elif param_type == "token":
        _token_rows(param_key, grp, node, out, system)
    elif param_type == "reference":
        _reference_rows(param_key, grp, node, ctx, out)
    elif param_type == "date":
        _date_rows(param_key, grp, node, ctx, out)
    elif param_type == "number":
        _number_rows(param_key, grp, node, out)
    elif param_type == "quantity":
        _quantity_rows(param_key, grp, node, out)
    elif param_type == "uri":
        _uri_rows(param_key, grp, node, out)
