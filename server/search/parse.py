"""Reading a FHIR search (R4 search.html) into a ``SearchRequest``.

A search is a list of URL-decoded ``(name, value)`` pairs. Filter parameters become the
clauses of ``Criteria`` (``query.py`` defines what each clause means); result parameters
(``_count``, ``_sort``, ``_total``, ``_summary``, ``_elements``, ``_include``,
``_revinclude``, ``_cursor``) shape the page. Search values are normalised by the same
functions as the index rows (``values.py``).

Anything the server cannot honour exactly is refused with ``InvalidSearch`` (400), so a client
never gets results filtered on less than it asked for. With ``lenient`` (``Prefer:
handling=lenient``) unknown parameter names and modifiers are skipped and reported in
``SearchRequest.ignored``; malformed values are refused either way.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from math import isfinite
from typing import Any, Literal, cast
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import orjson

from server.errors import InvalidSearch
from server.fhir.instant import date_range, now_us
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.query import (
    PREFIXES,
    TABLES,
    ChainClause,
    Clause,
    CompositeClause,
    Criteria,
    Cursor,
    DateClause,
    HasClause,
    IdClause,
    Include,
    LastUpdatedClause,
    MissingClause,
    NumberClause,
    NumberValue,
    Prefix,
    QuantityClause,
    QuantityValue,
    ReferenceClause,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringClause,
    TokenClause,
    Total,
    UriClause,
)
from server.search.registry import COLUMN_PARAMS, Registry, SearchParam
from server.search.values import ap_margin, fold, number_value, parse_reference

# chained references (``a.b.c.d.name``) and nested ``_has`` the server resolves at most
MAX_CHAIN = 4
MAX_HAS = 2
# comma-separated values of one search parameter, and of all the filters of one search: the
# stores bind every value as a statement parameter (SQLite takes at most 32,766 per statement,
# PostgreSQL 65,535; a value takes up to 5)
MAX_VALUES = 1000
MAX_SEARCH_VALUES = 4000

# filters a search across all types understands without ``_type`` (common to every type)
SYSTEM_PARAMS = frozenset({"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"})
RESULT_PARAMS = frozenset(
    {"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude", "_cursor"}
)
FORMAT_PARAMS = frozenset({"_format", "_pretty"})
SORTABLE = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri"})
SUMMARIES = ("true", "text", "data", "count", "false")
TOTALS = ("none", "estimate", "accurate")

# the modifiers of each parameter type (a reference also takes a resource type as modifier)
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "of-type", "in", "not-in", "above", "below", "missing"}),
    "reference": frozenset({"identifier", "missing"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"above", "below", "missing"}),
    "composite": frozenset({"missing"}),
}

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)
_NAME = re.compile(r"(?P<code>[^:.]+)(?::(?P<modifier>[^.]+))?(?:\.(?P<rest>.+))?", re.DOTALL)
_CODE = re.compile(r"[^:.]*")
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,32768}", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,18}", re.ASCII)
_ESCAPABLE = frozenset("\\,$|")
_ALL_TYPES = tuple(sorted(RESOURCE_TYPES))


@dataclass(frozen=True)
class SearchContext:
    """What parsing a search depends on: the parameters, the server base (to recognise local
    absolute references), the zone of dates without an offset, page sizes, the total of a
    search without ``_total``, and terminology
    expansion (``expand(url)`` -> ``{(system, code)}``, None when the URL is unknown)."""

    registry: Registry
    base: str
    zone: ZoneInfo
    default_count: int
    max_count: int
    expand: Callable[[str], frozenset[tuple[str, str]] | None]
    default_total: Total = "none"  # Bundle.total of a search without _total


@dataclass(frozen=True)
class SearchRequest:
    """A parsed search: the query a store answers plus what the API does with the page."""

    query: SearchQuery
    includes: tuple[Include, ...]
    summary: str | None
    elements: tuple[str, ...] | None
    applied: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]


class _Unknown(InvalidSearch):
    """An unknown parameter name or modifier: skipped under lenient handling."""


# -- small public helpers ----------------------------------------------------------------


def parse_number(text: str) -> int | None:
    """A non-negative decimal integer of at most 18 ASCII digits (fits every store), or None."""
    return int(text) if _NUMBER.fullmatch(text) else None


def _split(text: str, sep: str) -> list[str]:
    """Split on unescaped ``sep``, leaving every escape in place for a later ``_unescape``."""
    if "\\" not in text:
        return text.split(sep)
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    """Resolve the search escapes ``\\,`` ``\\$`` ``\\|`` ``\\\\``; other backslashes stay."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(types: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(types[:limit])
    return shown + (f" and {len(types) - limit} more" if len(types) > limit else "")


def _targets(param: SearchParam) -> tuple[str, ...]:
    """The supported resource types a reference parameter may point at (all when open)."""
    return _supported(param.targets)


@functools.lru_cache(maxsize=1024)
def _supported(targets: tuple[str, ...]) -> tuple[str, ...]:
    if not targets or "Resource" in targets:
        return _ALL_TYPES
    return tuple(t for t in targets if t in RESOURCE_TYPES)


# -- cursor --------------------------------------------------------------------------------


def encode_cursor(cursor: Cursor) -> str:
    """The opaque, URL-safe ``_cursor`` text of ``cursor``."""
    data = orjson.dumps([cursor.backward, cursor.seq, *cursor.values])
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _bad_cursor() -> InvalidSearch:
    return InvalidSearch("Invalid _cursor: use the paging links of a search", expression="_cursor")


def _cursor_value(item: Any) -> str | int | float | None:
    if item is None or isinstance(item, str):
        return item
    if isinstance(item, bool):
        raise _bad_cursor()
    if isinstance(item, int):
        return item
    if isinstance(item, float) and isfinite(item):
        return item
    raise _bad_cursor()


def decode_cursor(text: str) -> Cursor:
    """The ``Cursor`` that ``encode_cursor`` turned into ``text``; anything else is 400."""
    if not _CURSOR.fullmatch(text):
        raise _bad_cursor()
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise _bad_cursor() from exc
    if not isinstance(data, list) or len(data) < 2:
        raise _bad_cursor()
    backward, seq = data[0], data[1]
    if not isinstance(backward, bool) or isinstance(seq, bool) or not isinstance(seq, int):
        raise _bad_cursor()
    if seq < 0:
        raise _bad_cursor()
    cursor = Cursor(tuple(_cursor_value(item) for item in data[2:]), seq, backward)
    if encode_cursor(cursor) != text:
        raise _bad_cursor()
    return cursor


# -- filters -------------------------------------------------------------------------------


class _Filters:
    """Parses filter parameters into clauses; one instance per search (it caches the clauses
    of chained parameters, which are parsed once per possible target type)."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self._now: int | None = None
        self._cache: dict[tuple[str, str, str, int, int], Clause] = {}
        self.expression = ""

    # entry points ------------------------------------------------------------------------

    def type_clause(self, type: str, name: str, value: str) -> Clause:
        self.expression = name
        return self.clause(type, name, value, 0, 0)

    def system_clause(self, types: tuple[str, ...], name: str, value: str) -> Clause:
        """A filter of a search across types (``types`` from ``_type``, empty = all)."""
        self.expression = name
        code = _code(name)
        if code in SYSTEM_PARAMS:
            return self.clause(types[0] if types else "Patient", name, value, 0, 0)
        if not types:
            raise _Unknown(
                f"Search parameter '{_short(code)}' needs _type in a search across all types",
                expression=_short(name),
            )
        clauses = [self.clause(t, name, value, 0, 0) for t in types]
        if any(c != clauses[0] for c in clauses[1:]):
            raise InvalidSearch(
                f"Search parameter '{_short(name)}' means different things for the types in "
                "_type; search one type at a time",
                expression=_short(name),
            )
        return clauses[0]

    # errors --------------------------------------------------------------------------------

    def error(self, message: str) -> InvalidSearch:
        return InvalidSearch(message, expression=_short(self.expression, 100))

    def unknown(self, message: str) -> _Unknown:
        return _Unknown(message, expression=_short(self.expression, 100))

    @property
    def now(self) -> int:
        if self._now is None:
            self._now = now_us()
        return self._now

    # one parameter -------------------------------------------------------------------------

    def clause(self, type: str, name: str, value: str, chain: int, has: int) -> Clause:
        key = (type, name, value, chain, has)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._parse(type, name, value, chain, has)
            self._cache[key] = cached
        return cached

    def _parse(self, type: str, name: str, value: str, chain: int, has: int) -> Clause:
        if name == "_has" or name.startswith("_has:"):
            return self._has(type, name, value, has)
        match = _NAME.fullmatch(name)
        if match is None:
            raise self.unknown(f"Unknown search parameter '{_short(name)}' for {type}")
        code, modifier, rest = match["code"], match["modifier"], match["rest"]
        param = self.registry.get(type, code)
        if param is None:
            raise self.unknown(f"Unknown search parameter '{_short(code)}' for {type}")
        if rest is not None:
            return self._chain(param, modifier, rest, value, chain)
        if code in COLUMN_PARAMS:
            if modifier is not None:
                raise self.unknown(f"Unknown modifier ':{_short(modifier)}' for '{code}'")
            if code == "_id":
                return IdClause(tuple(self._id(v) for v in self._alternatives(value)))
            return LastUpdatedClause(tuple(self._date(v) for v in self._alternatives(value)))
        if modifier is not None and modifier not in MODIFIERS.get(param.type, ()):
            if not (param.type == "reference" and modifier in RESOURCE_TYPES):
                raise self.unknown(
                    f"Unknown modifier ':{_short(modifier)}' for {param.type} parameter '{code}'"
                )
        if modifier == "missing":
            return self._missing(param, value)
        return self._typed(code, param, modifier, self._alternatives(value))

    def _alternatives(self, value: str) -> list[str]:
        """The comma-separated alternatives of a value, escapes kept."""
        parts = _split(value, ",")
        if any(not part for part in parts):
            raise self.error(f"Empty value in search parameter '{_short(self.expression)}'")
        return parts

    def _missing(self, param: SearchParam, value: str) -> MissingClause:
        if param.type == "composite":
            raise self.error(f"':missing' is not supported on composite parameter '{param.code}'")
        if value not in ("true", "false"):
            raise self.error(f"':missing' takes true or false, got '{_short(value, 40)}'")
        return MissingClause(param.code, TABLES[param.type], value == "true")

    def _typed(
        self, key: str, param: SearchParam, modifier: str | None, alternatives: Sequence[str]
    ) -> Clause:
        """The clause of parameter ``param`` stored under ``key`` for these alternatives."""
        kind = param.type
        if kind == "string":
            if modifier == "exact":
                return StringClause(key, "exact", tuple(_unescape(v) for v in alternatives))
            mode: Literal["start", "contains"] = "contains" if modifier == "contains" else "start"
            return StringClause(key, mode, tuple(fold(_unescape(v)) for v in alternatives))
        if kind == "token":
            return self._token(key, modifier, alternatives)
        if kind == "reference":
            if modifier == "identifier":
                tokens = tuple(self._token_value(v) for v in alternatives)
                return TokenClause(f"{key}:identifier", tokens)
            if modifier is not None:
                self._check_target(param, modifier)
            return ReferenceClause(
                key, tuple(self._reference(param, modifier, v) for v in alternatives)
            )
        if kind == "date":
            return DateClause(key, tuple(self._date(v) for v in alternatives))
        if kind == "number":
            return NumberClause(key, tuple(self._number(v) for v in alternatives))
        if kind == "quantity":
            return QuantityClause(key, tuple(self._quantity(v) for v in alternatives))
        if kind == "uri":
            uri_mode: Literal["eq", "below", "above"] = (
                "above" if modifier == "above" else "below" if modifier == "below" else "eq"
            )
            return UriClause(key, uri_mode, tuple(_unescape(v) for v in alternatives))
        if kind == "composite":
            return self._composite(param, alternatives)
        raise self.error(f"Search parameter '{param.code}' of type {kind} is not supported")

    # values ------------------------------------------------------------------------------

    def _id(self, text: str) -> str:
        value = _unescape(text)
        if not _ID.fullmatch(value):
            raise self.error(f"Invalid id '{_short(value, 70)}' in _id")
        return value

    def _prefix(self, text: str) -> tuple[Prefix, str]:
        if text[:2] in PREFIXES:
            return cast(Prefix, text[:2]), text[2:]
        if text[:1].isalpha():
            raise self.error(
                f"Unknown prefix '{_short(text[:2], 10)}' in '{_short(self.expression)}'; "
                f"use one of {', '.join(PREFIXES)}"
            )
        return "eq", text

    def _date(self, text: str) -> tuple[Prefix, int, int]:
        prefix, rest = self._prefix(_unescape(text))
        span = date_range(rest, self.ctx.zone)
        if span is None:
            raise self.error(
                f"Invalid date '{_short(rest, 40)}' in search parameter '{_short(self.expression)}'"
            )
        low, high = span
        if prefix == "ap":
            margin = ap_margin(low, high, self.now)
            low, high = low - margin, high + margin
        return prefix, low, high

    def _number(self, text: str) -> NumberValue:
        prefix, rest = self._prefix(_unescape(text))
        number = number_value(rest)
        if number is None:
            raise self.error(
                f"Invalid number '{_short(rest, 40)}' in search parameter "
                f"'{_short(self.expression)}'"
            )
        return replace(number, prefix=prefix)

    def _quantity(self, text: str) -> QuantityValue:
        parts = _split(text, "|")
        if len(parts) not in (1, 3):
            raise self.error(
                f"Invalid quantity '{_short(_unescape(text), 60)}': use "
                "[prefix]number, [prefix]number|system|code or [prefix]number||code"
            )
        number = self._number(parts[0])
        if len(parts) == 1:
            return QuantityValue(number, None, None)
        system, code = _unescape(parts[1]), _unescape(parts[2])
        return QuantityValue(number, system or None, code or None)

    def _token_value(self, text: str) -> tuple[str | None, str | None]:
        parts = _split(text, "|")
        if len(parts) == 1:
            return None, _unescape(text)
        system, code = _unescape(parts[0]), _unescape("|".join(parts[1:]))
        if not system and not code:
            raise self.error(f"Token '|' in '{_short(self.expression)}' needs a system or code")
        return system, code or None

    def _token(self, key: str, modifier: str | None, alternatives: Sequence[str]) -> Clause:
        if modifier == "text":
            return StringClause(
                f"{key}:text", "start", tuple(fold(_unescape(v)) for v in alternatives)
            )
        if modifier == "of-type":
            return TokenClause(f"{key}:of-type", tuple(self._of_type(v) for v in alternatives))
        if modifier in ("in", "not-in"):
            codes: set[tuple[str, str]] = set()
            for text in alternatives:
                url = _unescape(text)
                expansion = self.ctx.expand(url)
                if expansion is None:
                    raise self.error(f"Unknown value set '{_short(url)}' in ':{modifier}'")
                codes.update(expansion)
            return TokenClause(key, tuple(sorted(codes)), negate=modifier == "not-in")
        if modifier in ("above", "below"):
            codes = set()
            for text in alternatives:
                parts = _split(text, "|")
                system = _unescape(parts[0]) if len(parts) == 2 else ""
                code = _unescape(parts[1]) if len(parts) == 2 else ""
                if not system or not code:
                    raise self.error(f"':{modifier}' on a token takes system|code")
                expansion = self.ctx.expand(f"{system}?{modifier}={code}")
                if expansion is None:
                    raise self.error(
                        f"':{modifier}' is not supported for this code system ('{_short(system)}')"
                    )
                codes.update(expansion)
            return TokenClause(key, tuple(sorted(codes)))
        values = tuple(self._token_value(v) for v in alternatives)
        return TokenClause(key, values, negate=modifier == "not")

    def _of_type(self, text: str) -> tuple[str | None, str | None]:
        parts = [_unescape(p) for p in _split(text, "|")]
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise self.error("':of-type' takes type-system|type-code|value")
        return None, "|".join(parts)

    def _check_target(self, param: SearchParam, type: str) -> None:
        if type not in _targets(param):
            raise self.error(
                f"{type} is not a target of reference parameter '{param.code}' "
                f"(targets: {_names(_targets(param)) or 'none'})"
            )

    def _reference(self, param: SearchParam, modifier: str | None, text: str) -> ReferenceValue:
        raw = _unescape(text)
        ref = parse_reference(raw, self.ctx.base)
        if ref is None or (ref.url is None and ref.id is None):
            raise self.error(f"Invalid reference '{_short(raw, 60)}' in '{param.code}'")
        if ref.url is not None:
            return ref
        if ref.type is None:
            targets = (modifier,) if modifier is not None else _targets(param)
            if len(targets) == 1:
                return ReferenceValue(type=targets[0], id=ref.id)
            return ReferenceValue(id=ref.id)
        if modifier is not None and ref.type != modifier:
            raise self.error(f"Reference '{_short(raw, 60)}' is not a {modifier}")
        self._check_target(param, ref.type)
        return ref

    def _composite(self, param: SearchParam, alternatives: Sequence[str]) -> CompositeClause:
        components: list[SearchParam] = []
        for component in param.components:
            definition = self.registry.by_url(component.definition)
            if definition is None or definition.type not in TABLES:
                raise self.error(f"Composite parameter '{param.code}' is not supported")
            components.append(definition)
        values: list[tuple[Clause, ...]] = []
        for text in alternatives:
            parts = _split(text, "$")
            if len(parts) != len(components) or any(not part for part in parts):
                raise self.error(
                    f"Composite parameter '{param.code}' takes {len(components)} values "
                    "separated by '$'"
                )
            values.append(
                tuple(
                    self._typed(f"{param.code}#{i}", component, None, [part])
                    for i, (component, part) in enumerate(zip(components, parts, strict=True))
                )
            )
        return CompositeClause(param.code, tuple(values))

    # chains and reverse chains -------------------------------------------------------------

    def _chain(
        self, param: SearchParam, modifier: str | None, rest: str, value: str, depth: int
    ) -> ChainClause:
        if param.type != "reference":
            raise self.error(f"'{param.code}' is not a reference parameter and cannot be chained")
        if depth >= MAX_CHAIN:
            raise self.error(f"Chains are limited to {MAX_CHAIN} references")
        if modifier is not None:
            if modifier not in RESOURCE_TYPES:
                raise self.error(f"A chain takes a resource type modifier, not ':{modifier}'")
            self._check_target(param, modifier)
            candidates: tuple[str, ...] = (modifier,)
        else:
            candidates = _targets(param)
        inner = _code(rest)
        found = [(t, p) for t in candidates if (p := self.registry.get(t, inner)) is not None]
        if not found:
            raise self.unknown(
                f"Unknown search parameter '{_short(inner)}' on the targets of '{param.code}'"
            )
        types = tuple(t for t, _ in found)
        if len({p.type for _, p in found}) == 1:
            clauses = [self.clause(t, rest, value, depth + 1, 0) for t in types]
            if all(c == clauses[0] for c in clauses[1:]):
                return ChainClause(param.code, types, clauses[0])
        raise self.error(
            f"'{_short(inner)}' means different things on the targets of '{param.code}' "
            f"({_names(types)}); add a type modifier, e.g. "
            f"'{param.code}:{types[0]}.{_short(rest)}'"
        )

    def _has(self, type: str, name: str, value: str, depth: int) -> HasClause:
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise self.error("_has takes _has:Type:reference-parameter:parameter=value")
        if depth >= MAX_HAS:
            raise self.error(f"_has is limited to {MAX_HAS} levels")
        _, source, code, rest = parts
        if source not in RESOURCE_TYPES:
            raise self.unknown(f"Unknown resource type '{_short(source)}' in _has")
        param = self.registry.get(source, code)
        if param is None:
            raise self.unknown(f"Unknown search parameter '{_short(code)}' for {source} in _has")
        if param.type != "reference":
            raise self.error(f"'{code}' of {source} is not a reference parameter")
        if type not in _targets(param):
            raise self.error(f"'{code}' of {source} never refers to a {type}")
        return HasClause(source, code, self.clause(source, rest, value, 0, depth + 1))


def _code(name: str) -> str:
    match = _CODE.match(name)
    return match.group() if match else name


# -- the whole search ----------------------------------------------------------------------


@dataclass
class _Result:
    """Result parameters as given, checked for repetition."""

    values: dict[str, str]
    includes: list[tuple[str, str]]

    @staticmethod
    def collect(pairs: Sequence[tuple[str, str]]) -> _Result:
        values: dict[str, str] = {}
        includes: list[tuple[str, str]] = []
        for name, value in pairs:
            if name.split(":", 1)[0] in ("_include", "_revinclude"):
                includes.append((name, value))
            elif name in values:
                raise InvalidSearch(f"{name} may be given only once", expression=name)
            else:
                values[name] = value
        return _Result(values, includes)


def _is_result(name: str) -> bool:
    base = name.split(":", 1)[0]
    return base in RESULT_PARAMS or base == "_type"


def _check_result_name(name: str) -> None:
    if ":" in name and name not in ("_include:iterate", "_revinclude:iterate"):
        raise _Unknown(f"Unknown modifier in '{_short(name)}'", expression=_short(name))


def _types(value: str) -> tuple[str, ...]:
    types: list[str] = []
    for part in value.split(","):
        if part not in RESOURCE_TYPES:
            raise InvalidSearch(
                f"Unknown resource type '{_short(part)}' in _type", expression="_type"
            )
        if part not in types:
            types.append(part)
    return tuple(sorted(types))


def _count(value: str | None, ctx: SearchContext) -> int:
    if value is None:
        return ctx.default_count
    count = parse_number(value)
    if count is None:
        raise InvalidSearch(
            f"_count must be a non-negative integer, got '{_short(value, 20)}'",
            expression="_count",
        )
    return min(count, ctx.max_count)


def _sort_param(
    code: str, type: str | None, types: tuple[str, ...], registry: Registry
) -> SearchParam | None:
    if type is not None:
        return registry.get(type, code)
    if code in SYSTEM_PARAMS:
        return registry.get(types[0] if types else "Patient", code)
    params = [registry.get(t, code) for t in types]
    if not params or any(p is None for p in params):
        return None
    kinds = {p.type for p in params if p is not None}
    return params[0] if len(kinds) == 1 else None


def _sort(
    value: str, type: str | None, types: tuple[str, ...], registry: Registry
) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for item in value.split(","):
        descending = item.startswith("-")
        code = item[1:] if descending else item
        if not code:
            raise InvalidSearch("Empty _sort key", expression="_sort")
        if any(k.param == code for k in keys):
            raise InvalidSearch(f"_sort names '{_short(code)}' twice", expression="_sort")
        if code in COLUMN_PARAMS:
            keys.append(SortKey(code, None, descending))
            continue
        param = _sort_param(code, type, types, registry)
        if param is None or param.type not in SORTABLE:
            raise InvalidSearch(
                f"Cannot sort by '{_short(code)}': not a sortable search parameter of "
                f"{type or ', '.join(types) or 'every type'}",
                expression="_sort",
            )
        keys.append(SortKey(code, TABLES[param.type], descending))
    return tuple(keys)


def _elements(value: str) -> tuple[str, ...]:
    names: list[str] = []
    for name in value.split(","):
        if not _ELEMENT.fullmatch(name):
            raise InvalidSearch(
                f"Invalid element name '{_short(name)}' in _elements", expression="_elements"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _include(
    name: str, value: str, type: str | None, types: tuple[str, ...], registry: Registry
) -> Include:
    reverse = name.startswith("_revinclude")
    iterate = name.endswith(":iterate")
    param_name = name.split(":", 1)[0]

    def bad(message: str) -> InvalidSearch:
        return InvalidSearch(f"{param_name}={_short(value)}: {message}", expression=name)

    if value == "*":
        if reverse:
            raise bad("_revinclude takes Source:parameter[:Target]")
        source = type or (types[0] if len(types) == 1 else None)
        if source is None:
            raise bad("'*' needs a single resource type; use Source:*")
        return Include(source, "*", None, iterate, False)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise bad("use Source:parameter or Source:parameter:Target")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if source not in RESOURCE_TYPES:
        raise bad(f"unknown resource type '{_short(source)}'")
    if code != "*":
        param = registry.get(source, code)
        if param is None or param.type != "reference":
            raise bad(f"'{_short(code)}' is not a reference parameter of {source}")
        if target is not None and target not in _targets(param):
            raise bad(f"{_short(target)} is not a target of {source}:{code}")
    elif target is not None and target not in RESOURCE_TYPES:
        raise bad(f"unknown resource type '{_short(target)}'")
    if not reverse and not iterate:
        if (type is not None and source != type) or (
            type is None and types and source not in types
        ):
            raise bad(f"{source} is not the type searched; use _include:iterate")
    return Include(source, code, target, iterate, reverse)


def _criteria(
    type: str | None,
    types: tuple[str, ...],
    filters: Sequence[tuple[int, str, str]],
    ctx: SearchContext,
    lenient: bool,
    ignored: list[tuple[int, str]],
) -> tuple[list[tuple[str, str]], list[Clause]]:
    """The clauses of ``(position, name, value)`` filters and the pairs they came from;
    under ``lenient`` unknown names and modifiers go to ``ignored`` instead."""
    parser = _Filters(ctx)
    kept: list[tuple[str, str]] = []
    clauses: list[Clause] = []
    values = 0
    for position, name, value in filters:
        count = len(_split(value, ","))
        values += count
        if count > MAX_VALUES:
            raise InvalidSearch(
                f"Search parameter '{_short(name)}' has {count} values; at most {MAX_VALUES}"
                " are allowed",
                expression=_short(name),
            )
        if values > MAX_SEARCH_VALUES:
            raise InvalidSearch(
                f"The search has more than {MAX_SEARCH_VALUES} values in its parameters",
                expression=_short(name),
            )
        try:
            if type is not None:
                clause = parser.type_clause(type, name, value)
            else:
                clause = parser.system_clause(types, name, value)
        except _Unknown:
            if not lenient:
                raise
            ignored.append((position, name))
            continue
        clauses.append(clause)
        kept.append((name, value))
    return kept, clauses


def parse_search(
    type: str | None,
    pairs: Iterable[tuple[str, str]],
    ctx: SearchContext,
    *,
    lenient: bool = False,
) -> SearchRequest:
    """Parse a search of ``type`` (None: a search across all types) from URL-decoded pairs."""
    ignored: list[tuple[int, str]] = []
    filters: list[tuple[int, str, str]] = []
    results: list[tuple[str, str]] = []
    for position, (name, value) in enumerate(pairs):
        if name in FORMAT_PARAMS:
            continue
        if not _is_result(name):
            filters.append((position, name, value))
            continue
        try:
            _check_result_name(name)
        except _Unknown:
            if not lenient:
                raise
            ignored.append((position, name))
            continue
        results.append((name, value))
    result = _Result.collect(results)
    given = result.values

    types: tuple[str, ...] = ()
    if "_type" in given:
        if type is not None:
            raise InvalidSearch(
                "_type is only allowed in a search across all types", expression="_type"
            )
        types = _types(given["_type"])

    kept, clauses = _criteria(type, types, filters, ctx, lenient, ignored)
    if "_type" in given:
        kept.append(("_type", given["_type"]))
    criteria = Criteria(type, tuple(sorted(kept)), tuple(clauses), types)

    applied: list[tuple[str, str]] = list(criteria.params)
    sort: tuple[SortKey, ...] = ()
    if "_sort" in given:
        sort = _sort(given["_sort"], type, types, ctx.registry)
        applied.append(("_sort", given["_sort"]))
    count = _count(given.get("_count"), ctx)
    applied.append(("_count", str(count)))
    total = given.get("_total", ctx.default_total)
    if "_total" in given and total not in TOTALS:
        raise InvalidSearch(f"_total takes {', '.join(TOTALS)}", expression="_total")
    if "_total" in given:
        applied.append(("_total", total))
    summary = given.get("_summary")
    if summary is not None:
        if summary not in SUMMARIES:
            raise InvalidSearch(f"_summary takes {', '.join(SUMMARIES)}", expression="_summary")
        applied.append(("_summary", summary))
    elements = None
    if "_elements" in given:
        elements = _elements(given["_elements"])
        applied.append(("_elements", ",".join(elements)))
    includes: list[Include] = []
    for name, value in result.includes:
        include = _include(name, value, type, types, ctx.registry)
        if include not in includes:
            includes.append(include)
            applied.append((name, value))
    cursor = None
    if "_cursor" in given:
        cursor = decode_cursor(given["_cursor"])
        if len(cursor.values) != len(sort):
            raise _bad_cursor()
    query = SearchQuery(criteria, count, sort, cursor, cast(Total, total))
    return SearchRequest(
        query=query,
        includes=tuple(includes),
        summary=summary,
        elements=elements,
        applied=tuple(applied),
        ignored=tuple(dict.fromkeys(name for _, name in sorted(ignored))),
    )


def parse_criteria(type: str, pairs: Iterable[tuple[str, str]], ctx: SearchContext) -> Criteria:
    """The filters of a conditional interaction on ``type`` (result parameters are refused;
    ``_format`` and ``_pretty`` are ignored)."""
    filters: list[tuple[int, str, str]] = []
    for position, (name, value) in enumerate(pairs):
        if name in FORMAT_PARAMS:
            continue
        if _is_result(name):
            raise InvalidSearch(
                f"'{_short(name)}' is not allowed in the criteria of a conditional interaction",
                expression=_short(name),
            )
        filters.append((position, name, value))
    kept, clauses = _criteria(type, (), filters, ctx, False, [])
    return Criteria(type, tuple(sorted(kept)), tuple(clauses))


def parse_criteria_string(type: str, query: str, ctx: SearchContext) -> Criteria:
    """Criteria from a conditional-interaction query string (``identifier=a|b&_id=x``)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise InvalidSearch(f"Malformed search criteria: {exc}") from exc
    criteria = parse_criteria(type, pairs, ctx)
    if not criteria.params:
        raise InvalidSearch("Conditional interactions need at least one search criterion")
    return criteria
