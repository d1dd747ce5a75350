"""Compile the typed search query (``server/search/query.py``) into SQL, with a plan per query.

The statements read the ``resource`` table (alias ``r``) and the ``search_*`` index tables
(``schema.py``). Index rows exist only for the current version of live resources (a delete
clears them), so a set of index rows names live resources.

Every clause compiles two ways:

* a **test** of one resource row: a correlated ``EXISTS (SELECT 1 FROM search_<kind> x WHERE
  x.rtype = r.rtype AND x.id = r.id AND x.param = ? AND <alternatives>)`` on the owner index
  ``(rtype, id, param)`` (SQLite: pinned with ``INDEXED BY``, since without statistics it may
  prefer the lookup index and scan a whole value range per row). Negations (``:not``, ``ne``,
  ``:missing=true``) are ``NOT EXISTS`` on the same index; chains and ``_has`` probe
  ``search_reference`` from the resource (owner index) or to it (``_target`` index) and test
  their inner clause on the row at the other end; a composite alternative anchors on a row of
  its first component and tests the other components on the rows sharing that row's ``grp``.
* a **key source** (``keys``), when the clause can drive: the ``(rtype, id)`` of the live
  resources that satisfy it, read from the clause's index range (the ``*_lookup`` index of
  ``(rtype, param, <value>)``), from the ``resource`` table's keys (``_id``, ``_lastUpdated``),
  or, for chains and ``_has``, the inner clause's key source joined through ``search_reference``
  (``_target`` or owner index). Not every clause has one (negations, ``:missing``, composites).

**The plan** (``Planner``): each clause that has a key source is probed with a bounded count,
``SELECT COUNT(*) FROM (<keys> LIMIT 1000)`` (at most 1,000 index entries read, a fraction of a
millisecond; probes stop at the first clause with fewer than 50 rows). The smallest one
**drives**: the page is ``(r.rtype, r.id) IN (<its keys>)`` with every other clause as a test,
sorted and cut to the page (at most 1,000 candidates to sort). When every key source reaches the
bound (a broad search) and the page is in insertion order, the page **walks** the type in order
(``resource (rtype, created_seq)``) testing every clause per row, and stops at the page's end.
A sorted page always drives from the smallest key source (it must sort every match anyway).
Without a probe (conditional interactions' ``where``), the driver is the first clause by a
fixed preference (``_id``, then equality clauses, then ranges). On SQLite the driven form
writes the type test as ``+r.rtype``, so the type-order index cannot take over the plan.

``_total`` counts the driver's keys straight off its index when it is the only clause
(``COUNT`` over the distinct keys, no resource row read), and otherwise counts the driven plan.

A page is one statement: the plan, the sort values as correlated subqueries (ascending the
resource's smallest value, descending its largest, missing values last), a keyset predicate on
(sort values, ``created_seq``) and ``LIMIT count + 1``.

Alternatives of one clause are ``IN (...)`` lists where they are equalities (ids, token codes of
one system, reference targets of one type, URIs, exact strings) and otherwise a balanced ``OR``
tree, so the expression depth grows with the logarithm of the number of values (SQLite refuses
trees deeper than 1,000). The parser bounds the number of values (``parse.MAX_VALUES``).

Row predicates mirror the docstrings of the clause classes exactly; ``match.py`` evaluates the
same rules in memory. Placeholders are ``?`` (the PostgreSQL dialect rewrites them); the SQL
text itself never holds a ``%`` or a ``?`` of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache, lru_cache
from typing import Any

from server.errors import InvalidSearch
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.query import (
    TABLES,
    AllClause,
    AnyClause,
    ChainClause,
    Clause,
    CompartmentClause,
    CompositeClause,
    Criteria,
    Cursor,
    DateClause,
    GrantClause,
    HasClause,
    IdClause,
    Include,
    LabelClause,
    LastUpdatedClause,
    MissingClause,
    NumberClause,
    NumberValue,
    OwnerClause,
    PerTypeClause,
    Prefix,
    QuantityClause,
    QuantityValue,
    ReferenceClause,
    ReferencedClause,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringClause,
    TokenClause,
    TypeClause,
    UriClause,
)
from server.search.registry import patient_compartment
from server.search.values import fold

Frag = tuple[str, tuple[Any, ...]]
Types = tuple[str, ...] | None  # the resource types an alias may have; None = any
Member = str | Frag  # a member's id in a grant test: a column (SQL text) or a bound value

COLUMNS = "rtype, id, version, last_updated, deleted, body, created_seq, labels, owners"
SORT_VALUES = 9  # where the sort values begin in a page's rows, after ``COLUMNS``


def lean_columns(alias: str, inline: int | None) -> str:
    """``COLUMNS`` of ``alias``; with ``inline`` (bytes), a body longer than that is left out
    (NULL; the reader fetches it by version only if it keeps the row) and the body's length
    ends the row (``size_column``): a bounded read holds little more than it returns
    (``bodies.py``). The access facts (``labels``, ``owners``) are in every row, lean or not:
    the door's safety net checks each returned version by them."""
    a = alias
    body = f"{a}.body" if inline is None else (
        f"CASE WHEN length({a}.body) <= {int(inline)} THEN {a}.body END AS body"
    )
    return (
        f"{a}.rtype, {a}.id, {a}.version, {a}.last_updated, {a}.deleted, {body},"
        f" {a}.created_seq, {a}.labels, {a}.owners"
    )


def size_column(alias: str, inline: int | None) -> str:
    """The body length column that ends a row of ``lean_columns`` with ``inline``."""
    return "" if inline is None else f", length({alias}.body) AS body_size"
ALL_TYPES: tuple[str, ...] = tuple(sorted(RESOURCE_TYPES))
TEXT_MAX = "\U0010ffff"  # sorts after every other character, bytewise in UTF-8
_TRUE: Frag = ("1 = 1", ())
_FALSE: Frag = ("1 = 0", ())
_INDEX_TABLES = frozenset(TABLES.values())
_LAST_UPDATED = "_lastUpdated"


# -- fragments --------------------------------------------------------------------------------


def _join(separator: str, parts: Iterable[Frag]) -> Frag:
    texts: list[str] = []
    args: list[Any] = []
    for text, values in parts:
        texts.append(text)
        args.extend(values)
    return separator.join(texts), tuple(args)


_FLAT = 8  # terms joined flat before the tree nests: depth ~ _FLAT + 2 log2(n / _FLAT)


def _tree(operator: str, kept: list[Frag]) -> Frag:
    """``kept`` joined by ``operator`` as a balanced tree of parenthesised groups."""
    if len(kept) == 1:
        return kept[0]
    if len(kept) <= _FLAT:
        text, args = _join(f" {operator} ", kept)
        return f"({text})", args
    middle = len(kept) // 2
    return _tree(operator, [_tree(operator, kept[:middle]), _tree(operator, kept[middle:])])


def _and(parts: Iterable[Frag]) -> Frag:
    kept = [p for p in parts if p is not _TRUE]
    if not kept:
        return _TRUE
    if any(p is _FALSE for p in kept):
        return _FALSE
    return _tree("AND", kept)


def _then(first: Frag, second: Frag) -> Frag:
    """``first AND second`` with ``second`` evaluated only for a row ``first`` admits (a
    CASE: SQLite computes both sides of an AND used as a value): a member's release, then its
    Part 2 test (``_part2``)."""
    if second is _TRUE:
        return first
    return f"(CASE WHEN {first[0]} THEN {second[0]} ELSE FALSE END)", (*first[1], *second[1])


def _or(parts: Iterable[Frag]) -> Frag:
    kept = [p for p in parts if p is not _FALSE]
    if not kept:
        return _FALSE
    if any(p is _TRUE for p in kept):
        return _TRUE
    return _tree("OR", kept)


def _in(column: str, values: Sequence[Any]) -> Frag:
    if not values:
        return _FALSE
    if len(values) == 1:
        return f"{column} = ?", (values[0],)
    return f"{column} IN ({', '.join('?' * len(values))})", tuple(values)


def _like(text: str) -> str:
    """A LIKE pattern (``ESCAPE '\\'``) matching values that contain ``text``."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _labelled(column: str, label: str) -> Frag:
    """The access facts column ``column`` (labels separated by newlines) holds ``label``."""
    escaped = label.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return _or(
        [
            (f"{column} = ?", (label,)),
            (f"{column} LIKE ? ESCAPE '\\'", (f"{escaped}\n%",)),
            (f"{column} LIKE ? ESCAPE '\\'", (f"%\n{escaped}",)),
            (f"{column} LIKE ? ESCAPE '\\'", (f"%\n{escaped}\n%",)),
        ]
    )


def uri_prefixes(uri: str) -> tuple[str, ...]:
    """``uri`` and its ``/``-separated prefixes: ``uri[:i]`` wherever ``uri[i]`` is ``/``."""
    out = {uri}
    out.update(uri[:i] for i, char in enumerate(uri) if char == "/" and i > 0)
    return tuple(sorted(out))


# -- row predicates: one index row satisfies one search value ----------------------------------


def _date_row(x: str, prefix: Prefix, low: int, high: int, ordered: bool = False) -> Frag:
    """Stored ``[x.low, x.high)`` against the search range ``[low, high)`` (``DateClause``).
    ``ordered``: for rows known to have ``x.low <= x.high``, ``eq`` also bounds ``x.low`` from
    above (implied), so the lookup index reads only the range's rows."""
    if ordered:
        eq: Frag = (f"({x}.low >= ? AND {x}.low <= ? AND {x}.high <= ?)", (low, high, high))
    else:
        eq = (f"({x}.low >= ? AND {x}.high <= ?)", (low, high))
    if prefix in ("eq", "ne"):
        return eq
    if prefix == "gt":
        return f"{x}.high > ?", (high,)
    if prefix == "lt":
        return f"{x}.low < ?", (low,)
    if prefix == "ge":
        return _or([(f"{x}.high > ?", (high,)), eq])
    if prefix == "le":
        return _or([(f"{x}.low < ?", (low,)), eq])
    if prefix == "sa":
        return f"{x}.low >= ?", (high,)
    if prefix == "eb":
        return f"{x}.high <= ?", (low,)
    # ap: the range is already widened by the approximation margin
    return f"({x}.low < ? AND {x}.high > ?)", (high, low)


def _number_row(x: str, number: NumberValue, ordered: bool = False) -> Frag:
    """Stored ``[x.low, x.high]`` against a search number (``NumberClause``); ``ordered`` as
    in ``_date_row``."""
    prefix, value = number.prefix, number.value
    if prefix in ("eq", "ne"):
        if ordered:
            return (
                f"({x}.low >= ? AND {x}.low < ? AND {x}.high < ?)",
                (number.low, number.high, number.high),
            )
        return f"({x}.low >= ? AND {x}.high < ?)", (number.low, number.high)
    if prefix in ("gt", "sa"):
        return f"{x}.high > ?", (value,)
    if prefix in ("lt", "eb"):
        return f"{x}.low < ?", (value,)
    if prefix == "ge":
        return f"{x}.high >= ?", (value,)
    if prefix == "le":
        return f"{x}.low <= ?", (value,)
    margin = abs(value) * 0.1  # ap
    return f"({x}.low <= ? AND {x}.high >= ?)", (value + margin, value - margin)


def _unit_row(x: str, value: QuantityValue) -> Frag:
    parts: list[Frag] = []
    if value.system is not None:
        parts.append((f"{x}.system = ?", (value.system,)))
        if value.code is not None:
            parts.append((f"{x}.code = ?", (value.code,)))
    elif value.code is not None:
        parts.append((f"({x}.code = ? OR {x}.unit = ?)", (value.code, value.code)))
    return _and(parts)


def _token_row(x: str, system: str | None, code: str | None) -> Frag:
    parts: list[Frag] = []
    if code is not None:
        parts.append((f"{x}.code = ?", (code,)))
    if system is not None:
        parts.append((f"{x}.system = ?", (system,)))
    return _and(parts)


def _string_row(x: str, mode: str, value: str) -> Frag:
    if mode == "exact":  # a row's folded value is always the fold of its exact text
        return f"({x}.value = ? AND {x}.exact = ?)", (fold(value), value)
    if mode == "contains":
        return f"{x}.value LIKE ? ESCAPE '\\'", (_like(value),)
    return f"({x}.value >= ? AND {x}.value < ?)", (value, value + TEXT_MAX)


def _reference_row(x: str, value: ReferenceValue) -> Frag:
    if value.url is not None:
        return (
            f"({x}.target_id = '' AND {x}.target_type = '' AND {x}.url = ?)",
            (value.url,),
        )
    if value.id is None:
        return _FALSE
    if value.type is None:
        return f"{x}.target_id = ?", (value.id,)
    return f"({x}.target_id = ? AND {x}.target_type = ?)", (value.id, value.type)


def _uri_row(x: str, mode: str, value: str) -> Frag:
    if mode == "below":
        return f"({x}.uri >= ? AND {x}.uri < ?)", (value, value + TEXT_MAX)
    if mode == "above":
        return _in(f"{x}.uri", uri_prefixes(value))
    return f"{x}.uri = ?", (value,)


def _tokens(x: str, tokens: Sequence[tuple[str | None, str | None]]) -> Frag:
    """Some of the ``(system, code)`` values: the codes of one system as one ``IN`` list."""
    by_system: dict[str | None, list[str]] = {}
    rest: list[Frag] = []
    for system, code in tokens:
        if code is None:
            rest.append(_token_row(x, system, None))
        else:
            by_system.setdefault(system, []).append(code)
    grouped = [
        _and([_in(f"{x}.code", codes), _TRUE if system is None else (f"{x}.system = ?", (system,))])
        for system, codes in by_system.items()
    ]
    return _or([*grouped, *rest])


def _strings(x: str, mode: str, values: Sequence[str]) -> Frag:
    if mode == "exact":  # the exact text determines the folded one: both as IN lists
        return _and([_in(f"{x}.value", [fold(v) for v in values]), _in(f"{x}.exact", values)])
    return _or(_string_row(x, mode, v) for v in values)


def _references(x: str, values: Sequence[ReferenceValue]) -> Frag:
    """Some of the references: the ids of one target type as one ``IN`` list, URLs as one."""
    urls = [v.url for v in values if v.url is not None]
    by_type: dict[str | None, list[str]] = {}
    for value in values:
        if value.url is None and value.id is not None:
            by_type.setdefault(value.type, []).append(value.id)
    parts: list[Frag] = []
    if urls:
        local = (f"{x}.target_id = '' AND {x}.target_type = ''", ())
        parts.append(_and([local, _in(f"{x}.url", urls)]))
    for type, ids in by_type.items():
        target = _TRUE if type is None else (f"{x}.target_type = ?", (type,))
        parts.append(_and([_in(f"{x}.target_id", ids), target]))
    return _or(parts)


def _uris(x: str, mode: str, values: Sequence[str]) -> Frag:
    if mode == "eq":
        return _in(f"{x}.uri", values)
    return _or(_uri_row(x, mode, v) for v in values)


RowPredicate = Callable[[str], Frag]
# a grant clause's reach of the searched types: (type, compartment params, grant kinds)
Reach = Sequence[tuple[str, tuple[str, ...], tuple[str, ...]]]


class Rows:
    """Where the index rows of a clause are looked for: the rows of one resource (``alias``
    of ``resource``), or the rows of one composite group (``anchor``, a row of the group)."""

    def __init__(self, compiler: Compiler, alias: str, anchor: str | None = None) -> None:
        self._compiler = compiler
        self._alias = alias
        self._anchor = anchor

    def _test(self, table: str, param: str, predicate: RowPredicate | None) -> Frag:
        x = self._compiler.alias("x")
        if self._anchor is not None:
            a = self._anchor
            key = f"{x}.rtype = {a}.rtype AND {x}.id = {a}.id AND {x}.grp = {a}.grp"
            source = f"{table} {x}"
        else:
            key = f"{x}.rtype = {self._alias}.rtype AND {x}.id = {self._alias}.id"
            source = self._compiler.pinned(table, x, "owner")
        parts = [(f"{key} AND {x}.param = ?", (param,))]
        if predicate is not None:
            parts.append(predicate(x))
        condition = _and(parts)
        text = f"SELECT 1 FROM {source} WHERE {condition[0]}"
        return (text if self._anchor is not None else self._compiler.fenced(text)), condition[1]

    def some(self, table: str, param: str, predicate: RowPredicate | None = None) -> Frag:
        """Some row of ``param`` in ``table`` satisfies ``predicate``."""
        text, args = self._test(table, param, predicate)
        return f"EXISTS ({text})", args

    def none(self, table: str, param: str, predicate: RowPredicate | None = None) -> Frag:
        """No row of ``param`` in ``table`` satisfies ``predicate``."""
        text, args = self._test(table, param, predicate)
        return f"NOT EXISTS ({text})", args


def _types(column: str, types: Types) -> Frag:
    return _in(column, types if types is not None else ALL_TYPES)


def _prefixed(
    rows: Rows,
    table: str,
    param: str,
    values: Sequence[Any],
    prefix_of: Callable[[Any], Prefix],
    row: Callable[[str, Any], Frag],
    scope: Callable[[str, Any], Frag] | None = None,
) -> Frag:
    """Prefixed values (date, number, quantity): one test for every value but ``ne``; ``ne``:
    some row of the parameter (in the value's unit ``scope``) exists and none of them is eq."""
    positive = [v for v in values if prefix_of(v) != "ne"]
    parts: list[Frag] = []
    if positive:
        parts.append(rows.some(table, param, lambda x: _or(row(x, v) for v in positive)))
    for value in values:
        if prefix_of(value) != "ne":
            continue

        def in_scope(x: str, value: Any = value) -> Frag:
            return scope(x, value) if scope is not None else _TRUE

        def equal(x: str, value: Any = value, in_scope: RowPredicate = in_scope) -> Frag:
            return _and([in_scope(x), row(x, value)])

        parts.append(_and([rows.some(table, param, in_scope), rows.none(table, param, equal)]))
    return _or(parts)


ValueClause = (
    TokenClause
    | StringClause
    | ReferenceClause
    | UriClause
    | DateClause
    | NumberClause
    | QuantityClause
)


def _positive(clause: ValueClause) -> tuple[str, RowPredicate] | None:
    """(table, predicate) when the clause holds exactly if some row satisfies the predicate
    (not for ``:not`` or ``ne``)."""
    if isinstance(clause, TokenClause):
        if clause.negate:
            return None
        tokens = clause.values
        return TABLES["token"], lambda x: _tokens(x, tokens)
    if isinstance(clause, StringClause):
        strings, mode = clause.values, clause.mode
        return TABLES["string"], lambda x: _strings(x, mode, strings)
    if isinstance(clause, ReferenceClause):
        refs = clause.values
        return TABLES["reference"], lambda x: _references(x, refs)
    if isinstance(clause, UriClause):
        uris, umode = clause.values, clause.mode
        return TABLES["uri"], lambda x: _uris(x, umode, uris)
    if isinstance(clause, DateClause):
        dates = clause.values
        if any(v[0] == "ne" for v in dates):
            return None
        return TABLES["date"], lambda x: _or(_date_row(x, *v) for v in dates)
    if isinstance(clause, NumberClause):
        numbers = clause.values
        if any(v.prefix == "ne" for v in numbers):
            return None
        return TABLES["number"], lambda x: _or(_number_row(x, v) for v in numbers)
    quantities = clause.values
    if any(v.number.prefix == "ne" for v in quantities):
        return None
    return TABLES["quantity"], lambda x: _or(_quantity_row(x, v) for v in quantities)


_VALUE_TABLES: dict[type, str] = {
    TokenClause: TABLES["token"],
    StringClause: TABLES["string"],
    ReferenceClause: TABLES["reference"],
    UriClause: TABLES["uri"],
    DateClause: TABLES["date"],
    NumberClause: TABLES["number"],
    QuantityClause: TABLES["quantity"],
}


def _table_of(clause: ValueClause) -> str:
    return _VALUE_TABLES[type(clause)]


def _quantity_row(x: str, value: QuantityValue, ordered: bool = False) -> Frag:
    return _and([_unit_row(x, value), _number_row(x, value.number, ordered)])


def _ordered(clause: ValueClause) -> RowPredicate | None:
    """For a positive date, number or quantity clause: its predicate on rows known to have
    ``low <= high``, with the bounds that implies (None for the other clauses)."""
    if isinstance(clause, DateClause):
        dates = clause.values
        return lambda x: _or(_date_row(x, *v, ordered=True) for v in dates)
    if isinstance(clause, NumberClause):
        numbers = clause.values
        return lambda x: _or(_number_row(x, v, True) for v in numbers)
    if isinstance(clause, QuantityClause):
        quantities = clause.values
        return lambda x: _or(_quantity_row(x, v, True) for v in quantities)
    return None


def _values(clause: ValueClause, rows: Rows, param: str) -> Frag:
    """A clause on one parameter's rows (``param``: the row key they are stored under)."""
    positive = _positive(clause)
    if positive is not None:
        return rows.some(positive[0], param, positive[1])
    if isinstance(clause, TokenClause):  # :not
        tokens = clause.values
        return rows.none(TABLES["token"], param, lambda x: _tokens(x, tokens))
    if isinstance(clause, DateClause):
        return _prefixed(
            rows,
            TABLES["date"],
            param,
            clause.values,
            lambda v: v[0],
            lambda x, v: _date_row(x, *v),
        )
    if isinstance(clause, NumberClause):
        return _prefixed(
            rows, TABLES["number"], param, clause.values, lambda v: v.prefix, _number_row
        )
    assert isinstance(clause, QuantityClause)
    return _prefixed(
        rows,
        TABLES["quantity"],
        param,
        clause.values,
        lambda v: v.number.prefix,
        _quantity_row,
        scope=_unit_row,
    )


def _is_last_updated(clause: Clause) -> bool:
    return isinstance(clause, LastUpdatedClause) or (
        isinstance(clause, DateClause) and clause.param == _LAST_UPDATED
    )


def _preference(clause: Clause) -> int:
    """The driver chosen without a probe: the lowest of these (equalities before ranges)."""
    if isinstance(clause, IdClause):
        return 0
    if isinstance(clause, (ReferenceClause, CompartmentClause, OwnerClause)):
        return 1
    if isinstance(clause, TokenClause | UriClause) or (
        isinstance(clause, StringClause) and clause.mode == "exact"
    ):
        return 2
    if isinstance(clause, StringClause):
        return 3
    if isinstance(clause, ChainClause | HasClause | AnyClause | AllClause | ReferencedClause):
        return 4
    if isinstance(clause, GrantClause):
        return 7  # what the caller may see: probed last, drives only when it is the narrowest
    if _is_last_updated(clause):
        return 6
    return 5


# -- clauses ----------------------------------------------------------------------------------


class Compiler:
    """Compiles clauses against an alias of the ``resource`` table; aliases it introduces are
    numbered, so nested subqueries (chains, ``_has``) never shadow one another. ``pin``: name
    the index of a correlated probe (SQLite's ``INDEXED BY``)."""

    def __init__(
        self,
        collate: str = "",
        *,
        pin: bool = False,
        prefix: str = "",
        estimating: bool = False,
        members_first: bool = False,
    ) -> None:
        self.collate = collate
        self.pin = pin
        self.prefix = prefix
        self.estimating = estimating  # key sources only to be counted by a plan's probe
        # grant clauses test a row's member against the organisation's released members,
        # gathered once per statement (``_one_owner``): for statements testing many rows
        self.members_first = members_first
        self._count = 0

    def alias(self, stem: str) -> str:
        self._count += 1
        return f"{self.prefix}{stem}{self._count}"

    def fenced(self, probe: str) -> str:
        """A correlated probe that stays one (PostgreSQL: ``OFFSET 0`` keeps the planner from
        turning it into a join over every row of the clause, which it does when its estimate of
        the clause's size is far too small)."""
        return probe if self.pin else f"{probe} OFFSET 0"

    def pinned(self, table: str, alias: str, index: str) -> str:
        """``table alias``, on SQLite forced to use the index ``<table>_<index>``."""
        return f"{table} {alias} INDEXED BY {table}_{index}" if self.pin else f"{table} {alias}"

    @staticmethod
    def _last_updated(alias: str, values: Sequence[tuple[Prefix, int, int]]) -> Frag:
        """The version's stamp ``t`` taken as the range ``[t, t + 1µs)``."""
        column = f"{alias}.last_updated"
        parts: list[Frag] = []
        for prefix, low, high in values:
            if prefix == "eq":
                parts.append((f"({column} >= ? AND {column} < ?)", (low, high)))
            elif prefix == "ne":
                parts.append((f"({column} < ? OR {column} >= ?)", (low, high)))
            elif prefix in ("gt", "sa"):
                parts.append((f"{column} >= ?", (high,)))
            elif prefix == "ge":
                parts.append((f"{column} >= ?", (low,)))
            elif prefix in ("lt", "eb"):
                parts.append((f"{column} < ?", (low,)))
            elif prefix == "le":
                parts.append((f"{column} < ?", (high,)))
            else:  # ap: already widened
                parts.append((f"({column} >= ? AND {column} < ?)", (low, high)))
        return _or(parts)

    # -- one clause as a test of a resource row

    def clause(self, clause: Clause, alias: str, types: Types) -> Frag:
        """``clause`` holds for the resource row ``alias`` (of one of ``types``)."""
        if isinstance(clause, IdClause):
            return _in(f"{alias}.id", clause.ids)
        if isinstance(clause, LastUpdatedClause):
            return self._last_updated(alias, clause.values)
        if isinstance(clause, DateClause) and clause.param == _LAST_UPDATED:
            return self._last_updated(alias, clause.values)
        if isinstance(clause, ValueClause):
            return _values(clause, Rows(self, alias), clause.param)
        if isinstance(clause, MissingClause):
            rows = Rows(self, alias)
            tables = (clause.table,) if clause.table in _INDEX_TABLES else tuple(TABLES.values())
            if clause.missing:
                return _and(rows.none(table, clause.param) for table in tables)
            return _or(rows.some(table, clause.param) for table in tables)
        if isinstance(clause, ChainClause):
            return self._chain(clause, alias)
        if isinstance(clause, HasClause):
            return self._has(clause, alias, types)
        if isinstance(clause, CompartmentClause):
            return self._compartment(clause, alias, types)
        if isinstance(clause, PerTypeClause):
            inner = self.clause(clause.clause, alias, (clause.type,))
            return _or([(f"{alias}.rtype <> ?", (clause.type,)), inner])
        if isinstance(clause, AnyClause):
            return _or(self.clause(c, alias, types) for c in clause.alternatives)
        if isinstance(clause, AllClause):
            return _and(self.clause(c, alias, types) for c in clause.clauses)
        if isinstance(clause, TypeClause):
            kept = clause.types if types is None else [t for t in clause.types if t in types]
            return _in(f"{alias}.rtype", kept)
        if isinstance(clause, ReferencedClause):
            return self._referenced(clause, alias, types)
        if isinstance(clause, GrantClause):
            return _granted(clause, alias, types, self.pin, self.members_first)
        if isinstance(clause, OwnerClause):
            return self._owned(clause, alias)
        if isinstance(clause, LabelClause):
            return self._listed(f"{alias}.labels", f"{clause.system}|{clause.code}")
        return self._composite(clause, alias)

    @staticmethod
    def _live(g: str, clause: GrantClause, kinds: Sequence[str]) -> Frag:
        """The grant row ``g`` is of one of ``kinds`` and live at the clause's time (its end
        extended by its kind's grace)."""
        grace = dict(clause.grace)
        now = clause.now
        ends = _or(
            (f"({g}.kind = ? AND ({g}.period_end IS NULL OR {g}.period_end > ?))",
             (kind, now - grace.get(kind, 0)))
            for kind in kinds
        )
        return _and(
            [
                (f"{g}.organization = ?", (clause.organization,)),
                (f"({g}.period_start IS NULL OR {g}.period_start <= ?)", (now,)),
                ends,
            ]
        )

    def _roi(
        self, clause: GrantClause, member: Member, kinds: Sequence[str], orgs: Sequence[str]
    ) -> Frag:
        """Some live release-of-information row of ``member`` of one of ``kinds`` names one of
        ``orgs``."""
        q = self.alias("q")
        text, args = (member, ()) if isinstance(member, str) else member
        condition = _and(
            [
                (f"{q}.member = {text}", args),
                _in(f"{q}.kind", kinds),
                _in(f"{q}.organization", orgs),
                (f"({q}.period_start IS NULL OR {q}.period_start <= ?)", (clause.now,)),
                (f"({q}.period_end IS NULL OR {q}.period_end > ?)", (clause.now,)),
            ]
        )
        probe = f"SELECT 1 FROM {self.pinned('access_grant', q, 'member')} WHERE {condition[0]}"
        return f"EXISTS ({self.fenced(probe)})", condition[1]

    def _consented(self, clause: GrantClause, member: str, alias: str) -> Frag:
        """The member's release of information lets the clause's organisation have the
        resource row ``alias``: no deny; a covered entity or a permit; for a sensitive
        resource, a Part 2 permit naming the organisation."""
        return _and([self._released(clause, member), self._part2(clause, member, alias)])

    def _part2(self, clause: GrantClause, member: Member, alias: str) -> Frag:
        """The resource row ``alias`` carries no sensitive label, or the member has a live
        Part 2 permit naming the clause's organisation."""
        if not clause.consent or not clause.sensitive:
            return _TRUE
        labelled = _or(_labelled(f"{alias}.labels", label) for label in clause.sensitive)
        part2 = self._roi(clause, member, ("roi-part2",), (clause.organization,))
        # a CASE, so that each test runs only when the one before it did not decide (SQLite
        # evaluates both sides of an OR computed as a value, as inside a CASE): most rows
        # carry no label at all, and only a labelled one probes the member's permits
        return (
            f"(CASE WHEN {alias}.labels = '' THEN TRUE WHEN NOT ({labelled[0]}) THEN TRUE"
            f" ELSE {part2[0]} END)",
            (*labelled[1], *part2[1]),
        )

    def _released(self, clause: GrantClause, member: Member) -> Frag:
        """The member's release of information lets the clause's organisation have its
        data: no deny of it or of everyone; it is a covered entity or a permit names it or
        everyone."""
        if not clause.consent:
            return _TRUE
        org, everyone = clause.organization, "*"
        deny = self._roi(clause, member, ("roi-deny",), (org, everyone))
        permit = self._roi(clause, member, ("roi-permit", "roi-part2"), (org, everyone))
        parts = [(f"NOT {deny[0]}", deny[1])]
        if clause.covered:
            t = self.alias("t")
            kind = org.partition("/")[2]
            covered = _and(
                [
                    (f"{t}.rtype = 'Organization' AND {t}.id = ? AND {t}.param = 'type'", (kind,)),
                    _or(
                        (f"({t}.system = ? AND {t}.code = ?)", pair) for pair in clause.covered
                    ),
                ]
            )
            probe = f"SELECT 1 FROM search_token {t} WHERE {covered[0]}"
            parts.append(_or([(f"EXISTS ({probe})", covered[1]), permit]))
        else:
            parts.append(permit)
        return _and(parts)

    def _grant_row(
        self, clause: GrantClause, kinds: Sequence[str], index: str, match: str, alias: str
    ) -> Frag:
        """Some live grant row of ``kinds`` (read through the index ``access_grant_<index>``)
        satisfies ``match`` (``{g}``: the grant row, ``{r}``: the resource row ``alias``) and
        the member's release of information."""
        g = self.alias("g")
        condition = _and(
            [
                (match.format(g=g, r=alias), ()),
                self._live(g, clause, kinds),
                self._consented(clause, f"{g}.member", alias),
            ]
        )
        probe = f"SELECT 1 FROM {self.pinned('access_grant', g, index)} WHERE {condition[0]}"
        return f"EXISTS ({self.fenced(probe)})", condition[1]

    def _granted(self, clause: GrantClause, alias: str, types: Types) -> Frag:
        """Some live grant row reaches the resource: through the member its compartment
        parameters name, as the member's own Patient, or naming the resource itself."""
        if clause.emergency:
            return self._emergency(clause, alias, types)
        parts: list[Frag] = []
        reach = [r for r in clause.reach if r[1] and r[2] and (types is None or r[0] in types)]
        if reach:
            s, g = self.alias("s"), self.alias("g")
            by_type = _or(
                _and(
                    [
                        (f"{s}.rtype = ?", (type,)),
                        _in(f"{s}.param", codes),
                        _in(f"{g}.kind", kinds),
                    ]
                )
                for type, codes, kinds in reach
            )
            all_kinds = sorted({k for _, _, kinds in reach for k in kinds})
            condition = _and(
                [
                    (f"{s}.rtype = {alias}.rtype AND {s}.id = {alias}.id", ()),
                    (f"{s}.target_type = 'Patient' AND {g}.member = {s}.target_id", ()),
                    (f"{g}.scope_type = ''", ()),
                    self._live(g, clause, all_kinds),
                    by_type,
                    self._consented(clause, f"{g}.member", alias),
                ]
            )
            source = self.pinned("search_reference", s, "owner")
            grants = self.pinned("access_grant", g, "member")
            probe = f"SELECT 1 FROM {source} CROSS JOIN {grants} WHERE {condition[0]}"
            through: Frag = (f"EXISTS ({self.fenced(probe)})", condition[1])
            # SQLite only (measured there): on PostgreSQL, with stale statistics on
            # access_grant, this shape was planned as a scan estimated high enough to be
            # JIT-compiled (seconds per statement); it keeps the reference-row probe
            if self.pin and all(
                type != "Patient" and codes == compartment_params(type) for type, codes, _ in reach
            ):
                through = self._one_owner(clause, reach, alias, through)
            parts.append(through)
        if clause.include_self and (types is None or "Patient" in types):
            member = "{g}.member = {r}.id AND {g}.scope_type = ''"
            own = self._grant_row(clause, clause.include_self, "member", member, alias)
            parts.append(_and([(f"{alias}.rtype = 'Patient'", ()), own]))
        if clause.scoped:
            parts.append(
                self._grant_row(
                    clause,
                    clause.scoped,
                    "scope",
                    "{g}.scope_type = {r}.rtype AND {g}.scope_id = {r}.id",
                    alias,
                )
            )
        return _or(parts)

    def _one_owner(
        self,
        clause: GrantClause,
        reach: Sequence[tuple[str, tuple[str, ...], tuple[str, ...]]],
        alias: str,
        through: Frag,
    ) -> Frag:
        """``through`` (the grant reached through the row's reference rows), for a row
        whose access facts name exactly one Patient compartment (``owners``, written with
        every version from the same compartment parameters) tested on that member's grant
        rows alone, without reading the row's reference rows; a row of several members (or
        of none by its facts) keeps ``through``."""
        g = self.alias("g")
        owners = f"{alias}.owners"
        newline = f"instr({owners}, char(10))" if self.pin else f"strpos({owners}, chr(10))"
        by_type = _or(
            _and([(f"{alias}.rtype = ?", (type,)), _in(f"{g}.kind", kinds)])
            for type, _, kinds in reach
        )
        all_kinds = sorted({k for _, _, kinds in reach for k in kinds})
        if self.members_first:
            test = self._released_member(clause, reach, alias, f"substr({owners}, 9)")
        else:
            condition = _and(
                [
                    (f"{g}.member = substr({owners}, 9) AND {g}.scope_type = ''", ()),
                    self._live(g, clause, all_kinds),
                    by_type,
                    self._consented(clause, f"{g}.member", alias),
                ]
            )
            grants = self.pinned("access_grant", g, "member")
            test = f"EXISTS ({self.fenced(f'SELECT 1 FROM {grants} WHERE {condition[0]}')})", (
                condition[1]
            )
        return (
            f"(CASE WHEN substr({owners}, 1, 8) = 'Patient/' AND {newline} = 0"
            f" THEN {test[0]} ELSE {through[0]} END)",
            (*test[1], *through[1]),
        )

    def _released_member(self, clause: GrantClause, reach: Reach, alias: str, member: str) -> Frag:
        """The resource row ``alias``'s one member (``member``) is among the organisation's
        released members (``released_members``) and the row's labels pass the member's
        Part 2 permits."""
        released = self.released_members(clause, reach, alias, member)
        part2 = self._part2(clause, member, alias)
        return _then(released, part2)

    def released_members(self, clause: GrantClause, reach: Reach, alias: str, member: str) -> Frag:
        """``member``, of the row ``alias`` (a resource row or an index row: its ``rtype``),
        is among the organisation's members by a live grant row of a kind that reads its type
        and their release of information, a list gathered once per statement (an
        uncorrelated ``IN``: SQLite builds it on first use)."""
        by_kinds: dict[tuple[str, ...], list[str]] = {}
        for type, _, kinds in reach:
            by_kinds.setdefault(tuple(sorted(kinds)), []).append(type)
        alternatives: list[Frag] = []
        for kinds, types in by_kinds.items():
            g = self.alias("g")
            condition = _and(
                [
                    (f"{g}.scope_type = ''", ()),
                    self._live(g, clause, kinds),
                    self._released(clause, f"{g}.member"),
                ]
            )
            grants = self.pinned("access_grant", g, "member")
            members = f"SELECT {g}.member FROM {grants} WHERE {condition[0]}"
            alternatives.append(
                _and([_in(f"{alias}.rtype", types), (f"{member} IN ({members})", condition[1])])
            )
        return _or(alternatives)

    def _emergency(self, clause: GrantClause, alias: str, types: Types) -> Frag:
        """Break the glass: the resource belongs to any member (its compartment parameters
        name the member's Patient, or it is that Patient) whose release of information lets
        the organisation have it; no grant row is needed."""
        parts: list[Frag] = []
        reach = [r for r in clause.reach if r[1] and (types is None or r[0] in types)]
        if reach:
            s = self.alias("s")
            by_type = _or(
                _and([(f"{s}.rtype = ?", (type,)), _in(f"{s}.param", codes)])
                for type, codes, _ in reach
            )
            condition = _and(
                [
                    (f"{s}.rtype = {alias}.rtype AND {s}.id = {alias}.id", ()),
                    (f"{s}.target_type = 'Patient'", ()),
                    by_type,
                    self._consented(clause, f"{s}.target_id", alias),
                ]
            )
            source = self.pinned("search_reference", s, "owner")
            probe = f"SELECT 1 FROM {source} WHERE {condition[0]}"
            parts.append((f"EXISTS ({self.fenced(probe)})", condition[1]))
        if clause.include_self and (types is None or "Patient" in types):
            member = self._consented(clause, f"{alias}.id", alias)
            parts.append(_and([(f"{alias}.rtype = 'Patient'", ()), member]))
        return _or(parts)

    def _member_granted(self, clause: GrantClause, member: str, kinds: Sequence[str], alias: str
                        ) -> Frag:
        """The known member ``member`` (every row tested belongs to it: the search names it)
        is released to the clause's organisation by a live grant row of ``kinds`` and its
        release of information, an uncorrelated probe the database runs once per statement,
        and the resource row ``alias``'s labels pass the member's Part 2 permits."""
        g = self.alias("g")
        condition = _and(
            [
                (f"{g}.member = ? AND {g}.scope_type = ''", (member,)),
                self._live(g, clause, kinds),
                self._released(clause, f"{g}.member"),
            ]
        )
        grants = self.pinned("access_grant", g, "member")
        released = f"EXISTS (SELECT 1 FROM {grants} WHERE {condition[0]})", condition[1]
        part2 = self._part2(clause, ("?", (member,)), alias)
        return _then(released, part2)

    def _listed(self, column: str, value: str) -> Frag:
        """The access facts ``column`` (values separated by newlines, ``access_facts.py``) of
        the row holds ``value``: one test of a column of the version's own row (``resource``
        or ``resource_history``), no probe of index rows. (``pin`` is SQLite's dialect.)"""
        find = (
            "instr(char(10) || {0} || char(10), ?)"
            if self.pin
            else ("strpos(chr(10) || {0} || chr(10), ?)")
        )
        return f"{find.format(column)} > 0", (f"\n{value}\n",)

    def _owned(self, clause: OwnerClause, alias: str) -> Frag:
        """The row's ``owners`` facts name the patient."""
        return self._listed(f"{alias}.owners", f"Patient/{clause.patient}")

    def _referenced(self, clause: ReferencedClause, alias: str, types: Types) -> Frag:
        """The resource is of one of the clause's types and some live resource satisfying the
        inner clause has a reference row (any parameter) pointing at it."""
        kinds = clause.types if types is None else tuple(t for t in clause.types if t in types)
        if not kinds:
            return _FALSE
        keys = self._referenced_keys(clause, types, live=False)
        if keys is not None:
            # from the inner clause's members to what they refer to, once per statement: a
            # resource referred to by thousands is not probed referrer by referrer
            return (
                f"({alias}.rtype, {alias}.id) IN (SELECT d.rtype, d.id FROM ({keys[0]}) d)",
                keys[1],
            )
        s, h = self.alias("s"), self.alias("h")
        inner = self.clause(clause.clause, h, None)
        condition = _and(
            [
                (f"{s}.target_type = {alias}.rtype AND {s}.target_id = {alias}.id", ()),
                (f"{h}.rtype = {s}.rtype AND {h}.id = {s}.id AND {h}.deleted = 0", ()),
                inner,
            ]
        )
        source = self.pinned("search_reference", s, "target")
        probe = f"SELECT 1 FROM {source} CROSS JOIN resource {h} WHERE {condition[0]}"
        return _and(
            [_in(f"{alias}.rtype", kinds), (f"EXISTS ({self.fenced(probe)})", condition[1])]
        )

    def _by_type(self, s: str, clause: CompartmentClause, types: Types) -> Frag:
        """``s`` is a reference row under a compartment parameter of its resource's type."""
        return _or(
            _and([(f"{s}.rtype = ?", (type,)), _in(f"{s}.param", codes)])
            for type, codes in clause.params
            if codes and (types is None or type in types)
        )

    def _compartment(self, clause: CompartmentClause, alias: str, types: Types) -> Frag:
        """A reference row under a compartment parameter of the resource's type points at the
        compartment's resource (or, ``include_self``, the resource is that one)."""
        s = self.alias("s")
        by_type = self._by_type(s, clause, types)
        parts: list[Frag] = []
        if by_type is not _FALSE:
            condition = _and(
                [
                    (f"{s}.rtype = {alias}.rtype AND {s}.id = {alias}.id", ()),
                    (
                        f"{s}.target_type = ? AND {s}.target_id = ?",
                        (clause.target_type, clause.target_id),
                    ),
                    by_type,
                ]
            )
            source = self.pinned("search_reference", s, "owner")
            probe = self.fenced(f"SELECT 1 FROM {source} WHERE {condition[0]}")
            parts.append((f"EXISTS ({probe})", condition[1]))
        if clause.include_self:
            parts.append(
                (
                    f"({alias}.rtype = ? AND {alias}.id = ?)",
                    (clause.target_type, clause.target_id),
                )
            )
        return _or(parts)

    def _chain(self, clause: ChainClause, alias: str) -> Frag:
        """Some local reference row of ``param`` points at a live resource of one of the target
        types that satisfies the clause."""
        if not clause.target_types:
            return _FALSE
        s, t = self.alias("s"), self.alias("t")
        inner = self.clause(clause.clause, t, clause.target_types)
        condition = _and(
            [
                (
                    f"{s}.rtype = {alias}.rtype AND {s}.id = {alias}.id AND {s}.param = ?",
                    (clause.param,),
                ),
                _in(f"{s}.target_type", clause.target_types),
                (f"{t}.rtype = {s}.target_type AND {t}.id = {s}.target_id AND {t}.deleted = 0", ()),
                inner,
            ]
        )
        source = self.pinned("search_reference", s, "owner")
        probe = f"SELECT 1 FROM {source} CROSS JOIN resource {t} WHERE {condition[0]}"
        return f"EXISTS ({self.fenced(probe)})", condition[1]

    def _has(self, clause: HasClause, alias: str, types: Types) -> Frag:
        """Some live source resource satisfying the clause has a reference row of ``param``
        pointing at this resource."""
        s, h = self.alias("s"), self.alias("h")
        inner = self.clause(clause.clause, h, (clause.source_type,))
        condition = _and(
            [
                (
                    f"{s}.target_type = {alias}.rtype AND {s}.target_id = {alias}.id"
                    f" AND {s}.param = ? AND {s}.rtype = ?",
                    (clause.param, clause.source_type),
                ),
                (f"{h}.rtype = {s}.rtype AND {h}.id = {s}.id AND {h}.deleted = 0", ()),
                inner,
            ]
        )
        source = self.pinned("search_reference", s, "target")
        probe = f"SELECT 1 FROM {source} CROSS JOIN resource {h} WHERE {condition[0]}"
        return f"EXISTS ({self.fenced(probe)})", condition[1]

    def _composite(self, clause: CompositeClause, alias: str) -> Frag:
        """Each alternative: one group (``grp``) of the resource's rows in which every component
        clause holds on that component's rows (stored under ``<code>#<i>``)."""
        alternatives: list[Frag] = []
        for components in clause.values:
            keyed: list[tuple[ValueClause, str]] = []
            for i, component in enumerate(components):
                if not isinstance(component, ValueClause) or (
                    isinstance(component, DateClause) and component.param == _LAST_UPDATED
                ):
                    raise InvalidSearch(
                        f"A component of '{clause.param}' cannot be a {type(component).__name__}"
                    )
                own = component.param.startswith(clause.param + "#")
                keyed.append((component, component.param if own else f"{clause.param}#{i}"))
            if not keyed:
                continue
            # the group's anchor: a row of the first component, satisfying it when it can
            first, first_key = keyed[0]
            positive = _positive(first)
            table = positive[0] if positive else _table_of(first)
            rest = keyed[1:] if positive else keyed

            def grouped(
                x: str,
                positive: tuple[str, RowPredicate] | None = positive,
                rest: list[tuple[ValueClause, str]] = rest,
            ) -> Frag:
                group = Rows(self, alias, anchor=x)
                parts = [positive[1](x)] if positive else []
                parts.extend(_values(c, group, key) for c, key in rest)
                return _and(parts)

            alternatives.append(Rows(self, alias).some(table, first_key, grouped))
        return _or(alternatives)

    # -- one clause as a key source

    def keys(self, clause: Clause, types: Types) -> Frag | None:
        """``SELECT rtype, id`` of the live resources of ``types`` that satisfy ``clause`` (a
        resource may come more than once), read from an index range; None when the clause has
        no such source (negations, ``:missing``, composites, per-type clauses)."""
        if isinstance(clause, IdClause):
            k = self.alias("k")
            condition = _and(
                [_types(f"{k}.rtype", types), _in(f"{k}.id", clause.ids), (f"{k}.deleted = 0", ())]
            )
            return f"SELECT {k}.rtype, {k}.id FROM resource {k} WHERE {condition[0]}", condition[1]
        if _is_last_updated(clause):
            assert isinstance(clause, LastUpdatedClause | DateClause)
            k = self.alias("k")
            condition = _and(
                [
                    _types(f"{k}.rtype", types),
                    (f"{k}.deleted = 0", ()),
                    self._last_updated(k, clause.values),
                ]
            )
            return f"SELECT {k}.rtype, {k}.id FROM resource {k} WHERE {condition[0]}", condition[1]
        if isinstance(clause, ValueClause):
            positive = _positive(clause)
            if positive is None:
                return None
            table, predicate = positive
            ordered = _ordered(clause)
            if ordered is None:
                return self._range(table, "lookup", clause.param, types, predicate)
            # ranges: the rows with low <= high through the lookup index, bounded on both sides
            # where the predicate implies it; the (rare) inverted ones through their own index
            return _join(
                " UNION ALL ",
                [
                    self._range(table, "lookup", clause.param, types, ordered, "<="),
                    self._range(table, "inverted", clause.param, types, predicate, ">"),
                ],
            )
        if isinstance(clause, ChainClause):
            return self._chain_keys(clause, types)
        if isinstance(clause, HasClause):
            return self._has_keys(clause, types)
        if isinstance(clause, CompartmentClause):
            return self._compartment_keys(clause, types)
        if isinstance(clause, AnyClause):
            parts = [self.keys(c, types) for c in clause.alternatives]
            if not parts or any(p is None for p in parts):
                return None
            return _join(" UNION ALL ", [p for p in parts if p is not None])
        if isinstance(clause, ReferencedClause):
            return self._referenced_keys(clause, types)
        if isinstance(clause, OwnerClause):
            return self._owned_keys(clause, types)
        if isinstance(clause, GrantClause):
            return _granted_keys(clause, types, self.pin, self.estimating)
        if isinstance(clause, AllClause):
            return self._all_keys(clause, types)
        return None

    def _all_keys(self, clause: AllClause, types: Types) -> Frag | None:
        """The keys of the first part that has a key source, kept where the other parts hold
        on their live resource row."""
        for n, part in enumerate(clause.clauses):
            keys = self.keys(part, types)
            if keys is None:
                continue
            k, t = self.alias("k"), self.alias("t")
            rest = [c for m, c in enumerate(clause.clauses) if m != n]
            condition = _and(
                [
                    (f"{t}.rtype = {k}.rtype AND {t}.id = {k}.id AND {t}.deleted = 0", ()),
                    *(self.clause(c, t, types) for c in rest),
                ]
            )
            return (
                f"SELECT {t}.rtype, {t}.id FROM ({keys[0]}) {k} CROSS JOIN resource {t}"
                f" WHERE {condition[0]}",
                (*keys[1], *condition[1]),
            )
        return None

    def _referenced_keys(
        self, clause: ReferencedClause, types: Types, live: bool = True
    ) -> Frag | None:
        """The targets (``live``: only live ones), of the clause's types, of every reference
        row of the inner clause's keys."""
        kinds = clause.types if types is None else tuple(t for t in clause.types if t in types)
        inner = self.keys(clause.clause, None) if kinds else None
        if inner is None:
            return None
        return self._referred(inner, lambda s: _TRUE, lambda column: _in(column, kinds), live)

    def _owned_keys(self, clause: OwnerClause, types: Types) -> Frag:
        """The live resources (of ``types``) whose facts name the patient: among those with a
        reference row pointing at it (every owner is one) and the Patient itself."""
        s, t = self.alias("s"), self.alias("t")
        condition = _and(
            [
                (f"{s}.target_type = 'Patient' AND {s}.target_id = ?", (clause.patient,)),
                _in(f"{s}.rtype", types) if types is not None else _TRUE,
                (f"{t}.rtype = {s}.rtype AND {t}.id = {s}.id AND {t}.deleted = 0", ()),
                self._owned(clause, t),
            ]
        )
        source = self.pinned("search_reference", s, "target")
        parts = [
            (
                f"SELECT DISTINCT {t}.rtype, {t}.id FROM {source} CROSS JOIN resource {t}"
                f" WHERE {condition[0]}",
                condition[1],
            )
        ]
        if types is None or "Patient" in types:
            k = self.alias("k")
            parts.append(
                (
                    f"SELECT {k}.rtype, {k}.id FROM resource {k}"
                    f" WHERE {k}.rtype = 'Patient' AND {k}.id = ? AND {k}.deleted = 0",
                    (clause.patient,),
                )
            )
        return _join(" UNION ALL ", parts)

    def _granted_keys(self, clause: GrantClause, types: Types) -> Frag | None:
        """The resources (of ``types``) a grant clause reaches, read from the organisation's
        grant rows (``access_grant_member``/``_scope``: its members, the resources its
        referrals name) through the reference rows pointing at each member
        (``search_reference_target``), the member's release of information tested once per
        grant row and reference; so a narrowed search can be driven by what the caller may
        see instead of testing every candidate. None under break the glass (any member).
        ``estimating``: without the release of information and the resource rows (a plan's
        probe counts them; an over-estimate only makes the grants drive less often)."""
        if clause.emergency:
            return None
        parts: list[Frag] = []
        by_kinds: dict[tuple[str, ...], list[tuple[str, tuple[str, ...]]]] = {}
        for type, codes, kinds in clause.reach:
            if codes and kinds and (types is None or type in types):
                by_kinds.setdefault(kinds, []).append((type, codes))
        for kinds, reached in by_kinds.items():
            g, s = self.alias("g"), self.alias("s")
            by_type = _or(
                _and([(f"{s}.rtype = ?", (type,)), _in(f"{s}.param", codes)])
                for type, codes in reached
            )
            condition = _and(
                [
                    self._live(g, clause, kinds),
                    (f"{g}.scope_type = ''", ()),
                    (f"{s}.target_type = 'Patient' AND {s}.target_id = {g}.member", ()),
                    by_type,
                ]
            )
            grants = self.pinned("access_grant", g, "member")
            source = self.pinned("search_reference", s, "target")
            parts.append(
                self._granted_rows(
                    clause, g, f"{grants} CROSS JOIN {source}", condition, f"{s}.rtype", f"{s}.id"
                )
            )
        if clause.include_self and (types is None or "Patient" in types):
            g = self.alias("g")
            condition = _and(
                [self._live(g, clause, clause.include_self), (f"{g}.scope_type = ''", ())]
            )
            grants = self.pinned("access_grant", g, "member")
            parts.append(
                self._granted_rows(clause, g, grants, condition, "'Patient'", f"{g}.member")
            )
        if clause.scoped:
            g = self.alias("g")
            condition = _and(
                [self._live(g, clause, clause.scoped), _types(f"{g}.scope_type", types)]
            )
            grants = self.pinned("access_grant", g, "scope")
            parts.append(
                self._granted_rows(
                    clause, g, grants, condition, f"{g}.scope_type", f"{g}.scope_id"
                )
            )
        if not parts:
            return None
        return _join(" UNION ALL ", parts)

    def _granted_rows(
        self, clause: GrantClause, g: str, source: str, condition: Frag, rtype: str, id: str
    ) -> Frag:
        """``SELECT rtype, id`` of the rows of ``source`` satisfying ``condition``: the
        resource ``rtype``/``id`` name, live, and let to the organisation by the release of
        information of the grant row ``g``'s member."""
        if self.estimating:
            return f"SELECT {rtype} AS rtype, {id} AS id FROM {source} WHERE {condition[0]}", (
                condition[1]
            )
        t = self.alias("t")
        full = _and(
            [
                condition,
                (f"{t}.rtype = {rtype} AND {t}.id = {id} AND {t}.deleted = 0", ()),
                self._consented(clause, f"{g}.member", t),
            ]
        )
        return (
            f"SELECT {t}.rtype, {t}.id FROM {source} CROSS JOIN resource {t} WHERE {full[0]}",
            full[1],
        )

    def _range(
        self,
        table: str,
        index: str,
        param: str,
        types: Types,
        predicate: RowPredicate,
        order: str | None = None,
    ) -> Frag:
        """``SELECT rtype, id`` of the rows of ``param`` satisfying ``predicate`` read through
        the index ``<table>_<index>`` (``order``: the rows' ``low <order> high``)."""
        x = self.alias("x")
        condition = _and(
            [
                _types(f"{x}.rtype", types),
                (f"{x}.param = ?", (param,)),
                (f"{x}.low {order} {x}.high", ()) if order else _TRUE,
                predicate(x),
            ]
        )
        source = self.pinned(table, x, index)
        return f"SELECT {x}.rtype, {x}.id FROM {source} WHERE {condition[0]}", condition[1]

    def _chain_keys(self, clause: ChainClause, types: Types) -> Frag | None:
        """The reference rows of ``param`` pointing at the inner clause's keys."""
        if not clause.target_types:
            return None
        inner = self.keys(clause.clause, clause.target_types)
        if inner is None:
            return None
        k, s = self.alias("k"), self.alias("s")
        condition = _and(
            [
                (
                    f"{s}.target_type = {k}.rtype AND {s}.target_id = {k}.id AND {s}.param = ?",
                    (clause.param,),
                ),
                _types(f"{s}.rtype", types),
            ]
        )
        source = self.pinned("search_reference", s, "target")
        return (
            f"SELECT {s}.rtype, {s}.id FROM ({inner[0]}) {k} CROSS JOIN {source}"
            f" WHERE {condition[0]}",
            (*inner[1], *condition[1]),
        )

    def _has_keys(self, clause: HasClause, types: Types) -> Frag | None:
        """The live targets of the ``param`` reference rows of the inner clause's keys."""
        inner = self.keys(clause.clause, (clause.source_type,))
        if inner is None:
            return None
        param = clause.param
        return self._referred(
            inner, lambda s: (f"{s}.param = ?", (param,)), lambda s: _types(s, types)
        )

    def _referred(
        self, inner: Frag, rows: RowPredicate, targets: Callable[[str], Frag], live: bool = True
    ) -> Frag:
        """The targets (their type column passing ``targets``; ``live``: only live ones) of
        the reference rows (passing ``rows``) of the keys ``inner``."""
        k, s, t = self.alias("k"), self.alias("s"), self.alias("t")
        source = self.pinned("search_reference", s, "owner")
        condition = _and(
            [
                (f"{s}.rtype = {k}.rtype AND {s}.id = {k}.id", ()),
                rows(s),
                targets(f"{s}.target_type"),
            ]
        )
        if not live:  # tested against a live row: no target row to read
            return (
                f"SELECT {s}.target_type AS rtype, {s}.target_id AS id FROM ({inner[0]}) {k}"
                f" CROSS JOIN {source} WHERE {condition[0]}",
                (*inner[1], *condition[1]),
            )
        alive = f"{t}.rtype = {s}.target_type AND {t}.id = {s}.target_id AND {t}.deleted = 0"
        return (
            f"SELECT {t}.rtype, {t}.id FROM ({inner[0]}) {k} CROSS JOIN {source}"
            f" CROSS JOIN resource {t} WHERE {condition[0]} AND {alive}",
            (*inner[1], *condition[1]),
        )

    def _compartment_keys(self, clause: CompartmentClause, types: Types) -> Frag | None:
        s = self.alias("s")
        by_type = self._by_type(s, clause, types)
        parts: list[Frag] = []
        if by_type is not _FALSE:
            condition = _and(
                [
                    (
                        f"{s}.target_type = ? AND {s}.target_id = ?",
                        (clause.target_type, clause.target_id),
                    ),
                    by_type,
                ]
            )
            source = self.pinned("search_reference", s, "target")
            parts.append(
                (f"SELECT {s}.rtype, {s}.id FROM {source} WHERE {condition[0]}", condition[1])
            )
        if clause.include_self and (types is None or clause.target_type in types):
            k = self.alias("k")
            parts.append(
                (
                    f"SELECT {k}.rtype, {k}.id FROM resource {k}"
                    f" WHERE {k}.rtype = ? AND {k}.id = ? AND {k}.deleted = 0",
                    (clause.target_type, clause.target_id),
                )
            )
        if not parts:
            return None
        return _join(" UNION ALL ", parts)

    # -- sorting

    def sort_value(self, key: SortKey, alias: str = "r") -> Frag:
        """The value a resource sorts by: ascending its smallest, descending its largest."""
        if key.param == "_id":
            return f"{alias}.id{self.collate}", ()
        if key.param == _LAST_UPDATED:
            return f"{alias}.last_updated", ()
        x = self.alias("x")
        columns = {
            TABLES["date"]: ("low", "high"),
            TABLES["number"]: ("low", "high"),
            TABLES["quantity"]: ("low", "high"),
            TABLES["string"]: ("value", "value"),
            TABLES["token"]: ("code", "code"),
            TABLES["uri"]: ("uri", "uri"),
        }
        if key.table == TABLES["reference"]:
            column = (
                f"CASE WHEN {x}.url = '' THEN ({x}.target_type || '/' || {x}.target_id)"
                f"{self.collate} ELSE {x}.url END"
            )
        elif key.table in columns:
            column = f"{x}." + columns[key.table][1 if key.descending else 0]
        else:
            raise InvalidSearch(f"Cannot sort by '{key.param}'", expression="_sort")
        aggregate = "MAX" if key.descending else "MIN"
        source = self.pinned(key.table, x, "owner")
        return (
            f"(SELECT {aggregate}({column}) FROM {source}"
            f" WHERE {x}.rtype = {alias}.rtype AND {x}.id = {alias}.id AND {x}.param = ?)",
            (key.param,),
        )


# -- plans ------------------------------------------------------------------------------------

Probe = Callable[[str, Sequence[Any]], int]
"""Runs a ``SELECT COUNT(*) ...`` statement and gives the count."""

PROBE_LIMIT = 1000  # index entries a probe reads at most; a larger clause is "broad"
PROBE_ENOUGH = 50  # a clause this small drives without probing the others


class Plan:
    """The resources of ``criteria`` under alias ``r``: a condition, driven by the key source of
    one clause (``driver``) or walking the type (``driver`` None)."""

    def __init__(
        self,
        criteria: Criteria,
        *,
        collate: str = "",
        probe: Probe | None = None,
        walkable: bool = False,
    ) -> None:
        self.compiler = Compiler(collate, pin=_pins(collate))
        self.criteria = criteria
        self.types: Types = (criteria.type,) if criteria.type else (criteria.types or None)
        self.driver: int | None = None
        self.driver_keys: Frag | None = None
        self.narrowest: int | None = None  # index entries of the narrowest probed clause
        self._choose(probe, walkable)

    def _choose(self, probe: Probe | None, walkable: bool) -> None:
        # in order of preference; a clause's key source is compiled only when it is reached
        # (a small clause ends the probing before the costlier ones are even written)
        order = sorted(
            range(len(self.criteria.clauses)),
            key=lambda n: (_preference(self.criteria.clauses[n]), n),
        )
        estimator = Compiler(pin=self.compiler.pin, estimating=probe is not None)
        best: tuple[int, int] | None = None  # (estimate, clause number)
        for n in order:
            keys = estimator.keys(self.criteria.clauses[n], self.types)
            if keys is None:
                continue
            if probe is None:
                self.driver = n
                return
            # a clause is only of interest if it is narrower than the best so far: its probe
            # reads no more entries than that
            limit = PROBE_LIMIT if best is None else min(PROBE_LIMIT, best[0])
            estimate = probe(f"SELECT COUNT(*) FROM ({keys[0]} LIMIT {limit}) p", keys[1])
            if best is None or estimate < best[0]:
                best = (estimate, n)
            if estimate < PROBE_ENOUGH:
                break
        if best is None:
            return
        self.narrowest = best[0]
        if best[0] >= PROBE_LIMIT and walkable:
            return  # broad: walk the type in its order, stop at the page's end
        self.driver = best[1]
        assert probe is not None  # (a plan without probes chose its driver above)
        self.compiler.members_first = self._members_first(probe)

    def _members_first(self, probe: Probe) -> bool:
        """Whether the grant clauses the driver's candidates are tested on should gather
        their organisation's released members once (``Compiler.members_first``) instead of
        probing each candidate's grant rows: on SQLite, when the organisation holds fewer
        grant rows than there are candidates (one bounded probe per organisation)."""
        grants = [
            c
            for n, c in enumerate(self.criteria.clauses)
            if n != self.driver and isinstance(c, GrantClause) and not c.emergency
        ]
        candidates = self.narrowest
        if not grants or not self.compiler.pin or candidates is None:
            return False
        if candidates < PROBE_ENOUGH:
            return False
        for org in sorted({c.organization for c in grants}):
            held = probe(
                "SELECT COUNT(*) FROM (SELECT 1 FROM access_grant INDEXED BY access_grant_member"
                f" WHERE organization = ? LIMIT {min(candidates, PROBE_LIMIT)}) p",
                (org,),
            )
            if held >= candidates:
                return False
        return True

    def owned_matches(self) -> Frag | None:
        """``SELECT rtype, id, seq`` of every match in insertion order, for a narrowed search
        whose driver is a value clause read through its lookup index and whose other clauses
        are grant clauses that reach the searched type (not Patient) through its Patient
        compartment (``Compiler._one_owner``), with the released members gathered once
        (``members_first``); None otherwise. The candidates whose index rows name their
        member (migration 14) are decided by those rows alone: a match when the member is
        released by every grant clause (a row with a member carries no security label, so
        no Part 2 test applies); only the others (no member, or a grant row naming the
        resource itself, or no ``seq``) are tested on their resource rows as before."""
        if not self.compiler.members_first or self.driver is None:
            return None
        return _owned_matches(self.criteria.clauses, self.driver, self.types)

    def condition(self, alias: str = "r") -> Frag:
        """The WHERE condition (without the keyword) on the rows of ``resource`` ``alias``."""
        compiler = self.compiler
        parts: list[Frag] = []
        types = self.types
        if types is not None:
            # driven: the type test must not make the type-order index drive (SQLite)
            hint = "+" if self.driver is not None and compiler.pin else ""
            parts.append(_in(f"{hint}{alias}.rtype", types))
        parts.append((f"{alias}.deleted = 0", ()))
        if self.driver is not None:
            keys = compiler.keys(self.criteria.clauses[self.driver], types)
            assert keys is not None
            parts.append(
                (
                    f"({alias}.rtype, {alias}.id) IN (SELECT d.rtype, d.id FROM ({keys[0]}) d)",
                    keys[1],
                )
            )
        clauses = self.criteria.clauses
        if any(isinstance(c, GrantClause) for c in clauses):
            # narrowed: the same tests request after request (the view is one object for a
            # second), compiled once per clause set and plan shape on their own compiler
            parts.extend(
                _narrowed_tests(
                    clauses,
                    self.driver,
                    types,
                    alias,
                    compiler.collate,
                    compiler.pin,
                    compiler.members_first,
                )
            )
        else:
            parts.extend(
                _tested(compiler, c, clauses, types, alias)
                for n, c in enumerate(clauses)
                if n != self.driver
            )
        return _and(parts)

    def count(self) -> tuple[str, list[Any]]:
        """``SELECT COUNT(*)`` of the matches: off the driver's index when it is the only clause."""
        clauses = self.criteria.clauses
        if self.driver is not None and len(clauses) == 1:
            keys = self.compiler.keys(clauses[0], self.types)
            assert keys is not None
            if self.types is not None and len(self.types) == 1:  # one type: the ids tell
                return f"SELECT COUNT(DISTINCT d.id) FROM ({keys[0]}) d", list(keys[1])
            return (
                f"SELECT COUNT(*) FROM (SELECT DISTINCT d.rtype, d.id FROM ({keys[0]}) d) c",
                list(keys[1]),
            )
        text, args = self.condition()
        return f"SELECT COUNT(*) FROM resource r WHERE {text}", list(args)


def _tested(
    compiler: Compiler, clause: Clause, clauses: tuple[Clause, ...], types: Types, alias: str
) -> Frag:
    """``clause`` (one of the plan's ``clauses``) as a test of the row ``alias``; a grant
    clause, when the search names the one member every candidate belongs to, first as that
    member's grant (decided once per statement), then as the test of the row's own references
    (``_member_named``)."""
    compiled = compiler.clause(clause, alias, types)
    if not isinstance(clause, GrantClause):
        return compiled
    named = _member_named(clause, clauses, types)
    if named is None:
        return compiled
    member, kinds = named
    return _or([_member_granted(clause, member, kinds, alias, compiler.pin), compiled])


@lru_cache(maxsize=1024)
def _narrowed_tests(
    clauses: tuple[Clause, ...],
    driver: int | None,
    types: Types,
    alias: str,
    collate: str,
    pin: bool,
    members_first: bool,
) -> tuple[Frag, ...]:
    """The tests of a narrowed plan's clauses other than its ``driver`` (``Plan.condition``),
    compiled once per clause set (grant clauses' time is set to the second, as ``_granted``)
    and plan shape, on their own compiler (aliases ``v…``)."""
    compiler = Compiler(collate, pin=pin, prefix="v", members_first=members_first)
    return tuple(
        _tested(compiler, c, clauses, types, alias) for n, c in enumerate(clauses) if n != driver
    )


@lru_cache(maxsize=1024)
def _owned_matches(clauses: tuple[Clause, ...], driver_number: int, types: Types) -> Frag | None:
    """``Plan.owned_matches``, compiled once per clause set (grant clauses' time is set to
    the second, as ``_granted``), driver and types, on its own compiler (aliases ``w…``)."""
    driver = clauses[driver_number]
    if types is None or len(types) != 1:
        return None
    type = types[0]
    if type == "Patient" or not isinstance(driver, ValueClause) or _ordered(driver):
        return None
    positive = _positive(driver)
    if positive is None:
        return None
    grants: list[tuple[GrantClause, Reach]] = []
    for n, clause in enumerate(clauses):
        if n == driver_number:
            continue
        if not isinstance(clause, GrantClause) or clause.emergency:
            return None
        reach = [r for r in clause.reach if r[1] and r[2] and r[0] == type]
        if not reach or any(codes != compartment_params(type) for _, codes, _ in reach):
            return None
        grants.append((clause, reach))
    compiler = Compiler(pin=True, prefix="w", members_first=True)
    table, predicate = positive
    param = driver.param
    x = compiler.alias("x")
    released = _and(
        [
            (f"{x}.member IS NOT NULL AND {x}.seq IS NOT NULL", ()),
            *(
                compiler.released_members(clause, reach, x, f"{x}.member")
                for clause, reach in grants
            ),
        ]
    )
    # the others: no member (or no seq), or named by a grant row of the organisation
    # (one list per organisation), tested on their resource rows as every other search
    unknown: list[Frag] = [(f"{x}.member IS NULL OR {x}.seq IS NULL", ())]
    for organization in sorted({c.organization for c, _ in grants if c.scoped}):
        g = compiler.alias("g")
        named = compiler.pinned("access_grant", g, "scope")
        unknown.append(
            (
                f"{x}.id IN (SELECT {g}.scope_id FROM {named} WHERE {g}.organization = ?"
                f" AND {g}.scope_type = ?)",
                (organization, type),
            )
        )
    r = compiler.alias("r")
    tested = _and(
        [
            (f"{r}.rtype = {x}.rtype AND {r}.id = {x}.id AND {r}.deleted = 0", ()),
            *(compiler.clause(clause, r, types) for clause, _ in grants),
        ]
    )
    condition = _and(
        [
            (f"{x}.rtype = ?", (type,)),
            (f"{x}.param = ?", (param,)),
            predicate(x),
            _or(
                [
                    released,
                    _and(
                        [
                            _or(unknown),
                            (
                                f"EXISTS (SELECT 1 FROM resource {r} WHERE {tested[0]})",
                                tested[1],
                            ),
                        ]
                    ),
                ]
            ),
        ]
    )
    # (a row without seq: its resource row's)
    seq = (
        f"COALESCE({x}.seq, (SELECT {r}.created_seq FROM resource {r}"
        f" WHERE {r}.rtype = {x}.rtype AND {r}.id = {x}.id))"
    )
    source = compiler.pinned(table, x, "lookup")
    return (
        f"SELECT DISTINCT {x}.rtype, {x}.id, {seq} FROM {source} WHERE {condition[0]}"
        " ORDER BY 3",
        condition[1],
    )


@cache
def compartment_params(type: str) -> tuple[str, ...]:
    """The Patient compartment parameters of ``type`` (R4 CompartmentDefinition), sorted:
    those the ``owners`` access facts are written from (``search/access_facts.py``; a
    Patient's facts also name itself)."""
    return tuple(sorted(patient_compartment().get(type, ())))


@lru_cache(maxsize=1024)
def _granted(
    clause: GrantClause, alias: str, types: Types, pin: bool, members_first: bool = False
) -> Frag:
    """A grant clause as a test of the resource row ``alias``, compiled once per clause (its
    time is set to the second), alias and types: the longest fragment of a narrowed
    statement. Its own aliases (``z…``) never meet those of the statement around it."""
    return Compiler(pin=pin, prefix="z", members_first=members_first)._granted(
        clause, alias, types
    )


@lru_cache(maxsize=1024)
def _granted_keys(clause: GrantClause, types: Types, pin: bool, estimating: bool) -> Frag | None:
    """A grant clause's key source, compiled once per clause (its time is set to the second)
    and types, like ``_granted``; its own aliases (``y…``) never meet those around it."""
    return Compiler(pin=pin, prefix="y", estimating=estimating)._granted_keys(clause, types)


def _member_named(
    clause: GrantClause, clauses: Sequence[Clause], types: Types
) -> tuple[str, tuple[str, ...]] | None:
    """The member every match of ``clauses`` (of one type) belongs to under one of the grant
    clause's reach parameters, and the relationship kinds that read the type: a reference
    clause of such a parameter naming one Patient (``Observation?subject=Patient/p1``). Every
    candidate then references that member, so the member's grant decides it (when the member
    is not released the row's own test still runs: another member or a scoped grant may reach
    it). None otherwise, and for break the glass."""
    if clause.emergency or types is None or len(types) != 1:
        return None
    reach = [(codes, kinds) for type, codes, kinds in clause.reach if type == types[0]]
    if len(reach) != 1 or not reach[0][1]:
        return None
    codes, kinds = reach[0]
    for c in clauses:
        if isinstance(c, ReferenceClause) and c.param in codes and len(c.values) == 1:
            value = c.values[0]
            if value.type == "Patient" and value.id and value.url is None:
                return value.id, kinds
    return None


@lru_cache(maxsize=1024)
def _member_granted(
    clause: GrantClause, member: str, kinds: tuple[str, ...], alias: str, pin: bool
) -> Frag:
    """``Compiler._member_granted``, compiled once per clause (its time is set to the second)
    and member; its own aliases (``w…``) never meet those of the statement around it."""
    return Compiler(pin=pin, prefix="w")._member_granted(clause, member, kinds, alias)


def _pins(collate: str) -> bool:
    """Whether correlated probes name their index: on SQLite (the dialect without a collation
    clause), whose planner has no statistics to choose the owner index over the lookup one."""
    return not collate


def within(
    clauses: Sequence[Clause], alias: str = "r", *, collate: str = "", types: Types = None
) -> Frag:
    """``clauses`` (an access policy's narrowing) as tests of the resource row ``alias`` (of
    one of ``types``): the condition every other read (read, history, includes, bulk reads)
    adds to its own, so its limits count only what the caller may see. Compiled once per
    distinct narrowing (a principal's is the same request after request)."""
    return _within(tuple(clauses), alias, collate, types)


@lru_cache(maxsize=1024)
def _within(clauses: tuple[Clause, ...], alias: str, collate: str, types: Types) -> Frag:
    compiler = Compiler(collate, pin=_pins(collate))
    return _and(compiler.clause(c, alias, types) for c in clauses)


def within_types(
    clauses: Sequence[Clause], types: tuple[str, ...], alias: str = "r", *, collate: str = ""
) -> Frag:
    """``within`` for the rows of ``types`` only (their type tested first): a view that need
    cover only those types, as an include's targets of known types. True without clauses."""
    if not clauses:
        return _TRUE
    view = within(clauses, alias, collate=collate, types=types)
    return _and([_in(f"{alias}.rtype", types), view])


def where(criteria: Criteria, alias: str = "r", *, collate: str = "") -> tuple[str, list[Any]]:
    """The WHERE condition (without the keyword) selecting the live resources (rows of
    ``resource`` under ``alias``) that match ``criteria``; driven by the preferred clause."""
    text, args = Plan(criteria, collate=collate).condition(alias)
    return text, list(args)


def count_statement(
    criteria: Criteria, *, collate: str = "", probe: Probe | None = None
) -> tuple[str, list[Any]]:
    return Plan(criteria, collate=collate, probe=probe).count()


def grouped_count_statement(
    criteria: Criteria,
    param: str,
    target_type: str | None = None,
    *,
    collate: str = "",
    probe: Probe | None = None,
) -> tuple[str, list[Any]]:
    """The matches of ``criteria`` (one type) counted per target of their ``param`` references
    (rows ``target_type, target_id, count``; ``target_type`` given: of that type only): the
    plan of ``criteria`` (its matches read first) joined to ``search_reference`` on its owner
    index ``(rtype, id, param)`` and grouped by target, one statement whatever the number of
    targets. On SQLite the join order and the index are forced (``CROSS JOIN``, ``INDEXED
    BY``): without statistics it would otherwise read every reference to the target type."""
    assert criteria.type is not None, "a grouped count is of one type"
    plan = Plan(criteria, collate=collate, probe=probe)
    text, args = plan.condition()
    compiler = plan.compiler
    join: list[Any] = [param]
    only = ""
    if target_type is not None:
        only = " AND g.target_type = ?"
        join.append(target_type)
    references = compiler.pinned(TABLES["reference"], "g", "owner")
    return (
        "SELECT g.target_type, g.target_id, COUNT(DISTINCT g.id) FROM resource r"
        f" {'CROSS JOIN' if compiler.pin else 'JOIN'} {references}"
        f" ON g.rtype = r.rtype AND g.id = r.id AND g.param = ?{only}"
        f" WHERE {text} GROUP BY g.target_type, g.target_id",
        [*join, *args],
    )


def cheap_count_statement(
    criteria: Criteria, *, collate: str, probe: Probe
) -> tuple[str, list[Any]] | None:
    """The count of ``criteria`` when counting is cheap, None when it would read every match of
    a broad search. Cheap: a clause with fewer than ``PROBE_LIMIT`` index entries drives the
    count (the probes that choose the page's plan tell), or, when no clause has index entries
    to probe, the searched types hold fewer than ``PROBE_LIMIT`` live resources (one more
    bounded probe); so counting reads about as many entries as those probes did at most,
    whatever the store's size."""
    plan = Plan(criteria, collate=collate, probe=probe, walkable=True)
    if plan.driver is None:
        if plan.narrowest is not None:
            return None  # every probed clause holds PROBE_LIMIT entries or more: broad
        # nothing to probe (no clause, or none with index entries): are the types small?
        types = _in("rtype", plan.types) if plan.types is not None else ("1 = 1", ())
        live = probe(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM resource WHERE {types[0]} AND deleted = 0"
            f" LIMIT {PROBE_LIMIT}) p",
            types[1],
        )
        if live >= PROBE_LIMIT:
            return None
    return plan.count()


def matches_statement(
    criteria: Criteria, *, collate: str, probe: Probe
) -> tuple[str, list[Any]] | None:
    """``SELECT rtype, id, created_seq`` of every match, in insertion order, when that is
    one cheap evaluation a count would make anyway: more than one clause (a narrowed search,
    or several parameters: the count cannot be read off one index) and a clause with fewer
    than ``PROBE_LIMIT`` index entries driving (so fewer matches than that). None otherwise,
    and on PostgreSQL: measured on SQLite only (a PostgreSQL run with it was far slower, its
    narrowed statements JIT-compiled), so there the count and the page stay two statements."""
    if len(criteria.clauses) < 2 or not _pins(collate):
        return None
    plan = Plan(criteria, collate=collate, probe=probe, walkable=True)
    if plan.driver is None or plan.narrowest is None or plan.narrowest >= PROBE_LIMIT:
        return None
    owned = plan.owned_matches()
    if owned is not None:
        return owned[0], list(owned[1])
    text, args = plan.condition()
    return (
        f"SELECT r.rtype, r.id, r.created_seq FROM resource r WHERE {text}"
        " ORDER BY r.created_seq",
        list(args),
    )


def keyed_rows_statement(
    keys: Sequence[tuple[str, str]], *, inline: int | None
) -> tuple[str, list[Any]]:
    """The current rows (``lean_columns``) of the resources ``keys``, in insertion order: the
    page of matches read in the same snapshot as the matches (``matches_statement``)."""
    condition = _or(("(r.rtype = ? AND r.id = ?)", key) for key in keys)
    return (
        f"SELECT {lean_columns('r', inline)}{size_column('r', inline)} FROM resource r"
        f" WHERE {condition[0]} ORDER BY r.created_seq",
        list(condition[1]),
    )


def _keyset(keys: Sequence[tuple[str, bool]], cursor: Cursor, backward: bool) -> Frag:
    """Rows after (``backward``: before) the cursor in the order of ``keys`` (column,
    descending), missing values last, then ``created_seq`` ascending."""
    if len(cursor.values) != len(keys):
        raise InvalidSearch("_cursor does not belong to this search; follow the Bundle's links")
    tail: Frag = ("q.created_seq < ?" if backward else "q.created_seq > ?", (cursor.seq,))
    for (column, descending), value in reversed(list(zip(keys, cursor.values, strict=True))):
        if value is None:
            beyond: Frag = (f"{column} IS NOT NULL", ()) if backward else _FALSE
            same: Frag = (f"{column} IS NULL", ())
        else:
            greater = descending == backward  # the comparison that moves along the order
            operator = ">" if greater else "<"
            if backward:
                beyond = (f"{column} {operator} ?", (value,))
            else:
                beyond = (f"({column} IS NULL OR {column} {operator} ?)", (value,))
            same = (f"{column} = ?", (value,))
        nested = _and([same, tail])
        tail = _or([beyond, (f"({nested[0]})", nested[1])]) if beyond is not _FALSE else nested
    return tail


def page_statement(
    query: SearchQuery,
    *,
    collate: str = "",
    probe: Probe | None = None,
    inline: int | None = None,
) -> tuple[str, list[Any], int]:
    """The one statement of a search page: (sql, args, number of sort columns). Rows are the
    resource columns, then the sort values (then, with ``inline``, the body length:
    ``lean_columns``); at most ``count + 1`` of them, in the page's order (reversed for a
    backward cursor). ``probe`` lets the plan measure its clauses."""
    plan = Plan(query.criteria, collate=collate, probe=probe, walkable=not query.sort)
    compiler = plan.compiler
    condition = plan.condition()
    cursor = query.cursor
    backward = cursor is not None and cursor.backward
    limit = f" LIMIT {int(query.count) + 1}"
    if not query.sort:
        parts = [condition]
        if cursor is not None:
            if cursor.values:
                raise InvalidSearch(
                    "_cursor does not belong to this search; follow the Bundle's links"
                )
            parts.append(("r.created_seq < ?" if backward else "r.created_seq > ?", (cursor.seq,)))
        text, args = _and(parts)
        direction = " DESC" if backward else ""
        sql = (
            f"SELECT {lean_columns('r', inline)}{size_column('r', inline)} FROM resource r"
            f" WHERE {text} ORDER BY r.created_seq{direction}{limit}"
        )
        return sql, list(args), 0
    values = [compiler.sort_value(key) for key in query.sort]
    selected = ", ".join(f"{text} AS k{n}" for n, (text, _) in enumerate(values))
    value_args = tuple(a for _, args in values for a in args)
    inner = (
        f"SELECT {lean_columns('r', inline)}, {selected}{size_column('r', inline)}"
        f" FROM resource r WHERE {condition[0]}"
    )
    keys = [(f"q.k{n}", key.descending) for n, key in enumerate(query.sort)]
    outer: Frag = _TRUE
    if cursor is not None:
        outer = _keyset(keys, cursor, backward)
    order: list[str] = []
    for column, descending in keys:
        # missing values last; a backward page reads the same order from its end
        order.append(f"({column} IS NULL){' DESC' if backward else ''}")
        order.append(f"{column}{' DESC' if descending != backward else ''}")
    order.append(f"q.created_seq{' DESC' if backward else ''}")
    sql = f"SELECT q.* FROM ({inner}) q WHERE {outer[0]} ORDER BY {', '.join(order)}{limit}"
    return sql, [*value_args, *condition[1], *outer[1]], len(values)


# -- _include and _revinclude -----------------------------------------------------------------


def _include_params(alias: str, include: Include) -> Frag:
    if include.param == "*":
        # every reference parameter, not the components of composite ones
        return f"{alias}.param NOT LIKE ?", ("%#%",)
    return f"{alias}.param = ?", (include.param,)


def include_statement(
    sources: dict[str, list[str]],
    includes: Sequence[Include],
    limit: int,
    narrowing: Frag = _TRUE,
    inline: int | None = None,
) -> tuple[str, list[Any]] | None:
    """The live targets of the ``_include``s' references from ``sources`` (``{type: ids}``):
    one statement, each target once, in insertion order, at most ``limit`` rows of those
    that satisfy ``narrowing`` (a condition on ``r``: the caller's view, applied before the
    limit)."""
    condition = _include_sources("s", sources, includes)
    if condition is None:
        return None
    return _referenced_rows("s.target_type, s.target_id", condition, narrowing, limit, inline)


def _referenced_rows(
    keys: str, condition: Frag, narrowing: Frag, limit: int, inline: int | None
) -> tuple[str, list[Any]]:
    """The live rows (``lean_columns``) whose keys (``keys``, columns of the reference rows
    ``s`` that satisfy ``condition``) the reference rows give, that satisfy ``narrowing``, in
    insertion order, at most ``limit``."""
    sql = (
        f"SELECT {lean_columns('r', inline)}{size_column('r', inline)} FROM resource r"
        f" WHERE r.deleted = 0 AND (r.rtype, r.id) IN (SELECT {keys} FROM search_reference s"
        f" WHERE {condition[0]}) AND {narrowing[0]} ORDER BY r.created_seq LIMIT {int(limit)}"
    )
    return sql, [*condition[1], *narrowing[1]]


def include_types_statement(
    sources: dict[str, list[str]], includes: Sequence[Include]
) -> tuple[str, list[Any]] | None:
    """The types the ``_include``s' references from ``sources`` point at (rows ``target_type``,
    each once): what a narrowed include statement's view must cover."""
    condition = _include_sources("s", sources, includes)
    if condition is None:
        return None
    return (
        f"SELECT DISTINCT s.target_type FROM search_reference s WHERE {condition[0]}",
        list(condition[1]),
    )


def _include_sources(
    s: str, sources: dict[str, list[str]], includes: Sequence[Include]
) -> Frag | None:
    """The ``search_reference`` rows ``s`` of the ``_include``s from ``sources``; None: none."""
    alternatives: list[Frag] = []
    for type, ids in sources.items():
        wanted = [i for i in includes if i.source_type == type]
        if not wanted or not ids:
            continue
        per_include = _or(
            _and(
                [
                    _include_params(s, i),
                    (f"{s}.target_type = ?", (i.target_type,)) if i.target_type else _TRUE,
                ]
            )
            for i in wanted
        )
        alternatives.append(_and([(f"{s}.rtype = ?", (type,)), _in(f"{s}.id", ids), per_include]))
    if not alternatives:
        return None
    return _or(alternatives)


def revinclude_statement(
    targets: dict[str, list[str]],
    includes: Sequence[Include],
    limit: int,
    narrowing: Frag = _TRUE,
    inline: int | None = None,
) -> tuple[str, list[Any]] | None:
    """The live resources whose references named by the ``_revinclude``s point at ``targets``
    (``{type: ids}``): one statement, each once, in insertion order, at most ``limit`` rows of
    those that satisfy ``narrowing`` (as in ``include_statement``)."""
    s = "s"
    alternatives: list[Frag] = []
    for include in includes:
        kinds = [
            (type, ids)
            for type, ids in targets.items()
            if ids and (include.target_type is None or include.target_type == type)
        ]
        if not kinds:
            continue
        pointing = _or(
            _and([(f"{s}.target_type = ?", (type,)), _in(f"{s}.target_id", ids)])
            for type, ids in kinds
        )
        alternatives.append(
            _and(
                [(f"{s}.rtype = ?", (include.source_type,)), _include_params(s, include), pointing]
            )
        )
    if not alternatives:
        return None
    return _referenced_rows("s.rtype, s.id", _or(alternatives), narrowing, limit, inline)
