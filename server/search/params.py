"""The search parameters this server supports, and parsing a query string into ``Criteria``.

Supported on every type: ``_id`` and ``_lastUpdated``; ``identifier`` on every type that has an
``identifier`` element. Result parameters: ``_count``. Anything else is refused with 400, so a
client never gets results filtered on less than it asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from server.errors import InvalidSearch
from server.fhir.definitions import element_names
from server.fhir.instant import parse_fhir_range
from server.search.query import Clause, Criteria, DateClause, IdClause, TokenClause

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
RESULT_PARAMS = frozenset({"_count"})
FORMAT_PARAMS = frozenset({"_format", "_pretty"})


@dataclass(frozen=True, slots=True)
class ParamDef:
    name: str
    type: str  # token | date
    description: str


_COMMON = (
    ParamDef("_id", "token", "Logical id of the resource"),
    ParamDef("_lastUpdated", "date", "When the resource version last changed"),
)
_IDENTIFIER = ParamDef("identifier", "token", "A business identifier of the resource")


@cache
def params_for(type: str) -> tuple[ParamDef, ...]:
    if "identifier" in element_names(type):
        return (*_COMMON, _IDENTIFIER)
    return _COMMON


def _split_or(value: str) -> list[str]:
    """Split a value on unescaped commas (``\\,`` is a literal comma)."""
    parts, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _token(name: str, raw: str) -> tuple[str | None, str | None]:
    if "|" in raw:
        system, _, code = raw.partition("|")
        return system, (code or None)
    if not raw:
        raise InvalidSearch(f"Empty value for search parameter '{name}'", expression=name)
    return None, raw


def _date(name: str, raw: str) -> tuple[str, int, int]:
    prefix, value = ("eq", raw)
    if len(raw) >= 2 and raw[:2] in _DATE_PREFIXES:
        prefix, value = raw[:2], raw[2:]
    elif raw[:2].isalpha():
        raise InvalidSearch(
            f"Unsupported prefix '{raw[:2]}' for date parameter '{name}'", expression=name
        )
    span = parse_fhir_range(value)
    if span is None:
        raise InvalidSearch(f"Invalid date '{value[:40]}' for parameter '{name}'", expression=name)
    return prefix, span[0], span[1]


def _clause(definition: ParamDef, raw: str) -> Clause:
    values = _split_or(raw)
    if definition.name == "_id":
        for value in values:
            if not _ID.match(value):
                raise InvalidSearch(f"Invalid id '{value[:70]}' in _id", expression="_id")
        return IdClause(tuple(values))
    if definition.type == "token":
        return TokenClause(definition.name, tuple(_token(definition.name, v) for v in values))
    return DateClause(definition.name, tuple(_date(definition.name, v) for v in values))


def parse_criteria(
    type: str, pairs: Iterable[tuple[str, str]], *, allow: frozenset[str] = frozenset()
) -> Criteria:
    """Parse search parameters (already URL-decoded pairs) for ``type``.

    Names in ``allow`` (result or format parameters the caller handles) are left out of the
    criteria. Unknown names or modifiers are 400.
    """
    known = {p.name: p for p in params_for(type)}
    kept: list[tuple[str, str]] = []
    clauses: list[Clause] = []
    for name, value in pairs:
        if name in allow or name in FORMAT_PARAMS:
            continue
        definition = known.get(name)
        if definition is None:
            base = name.split(":", 1)[0]
            what = "modifier" if base in known else "parameter"
            raise InvalidSearch(
                f"Unknown or unsupported search {what} '{name[:60]}' for {type}",
                expression=name[:60],
            )
        clauses.append(_clause(definition, value))
        kept.append((name, value))
    kept.sort()
    return Criteria(type, tuple(kept), tuple(clauses))


def parse_criteria_string(type: str, query: str) -> Criteria:
    """Criteria from a conditional-interaction query string (``identifier=a|b&_id=x``)."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise InvalidSearch(f"Malformed search criteria: {exc}") from exc
    criteria = parse_criteria(type, pairs)
    if not criteria.params:
        raise InvalidSearch("Conditional interactions need at least one search criterion")
    return criteria


_NUMBER = re.compile(r"^[0-9]{1,18}$")


def parse_number(text: str) -> int | None:
    """A non-negative decimal integer of at most 18 ASCII digits (fits every store), or None."""
    return int(text) if _NUMBER.match(text) else None


def parse_count(values: Sequence[str], default: int, maximum: int) -> int:
    if not values:
        return default
    raw = values[-1]
    count = parse_number(raw)
    if count is None:
        raise InvalidSearch(
            f"_count must be a non-negative integer, got '{raw[:20]}'", expression="_count"
        )
    return min(count, maximum)
