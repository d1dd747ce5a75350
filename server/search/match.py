"""In-memory search matching: does one resource satisfy search ``Criteria``?

Subscriptions and access policies ask this of a single resource without a database round
trip. The answer is the one the SQL store gives for the same resource: every clause is
evaluated over the resource's index rows (``RowSource.rows``, the rows the store keeps), with
the comparison rules written in the docstrings of ``server/search/query.py``.

``compile_matcher`` turns criteria into a reusable ``Matcher`` once (one predicate per clause,
prepared value sets); ``matches`` is the one-shot convenience. A resource's rows are grouped by
parameter once per evaluation, and only when some clause needs them.

Choices where ``query.py`` leaves room:

* date ``ap``: the clause range is the search range already widened by the ``ap`` margin, so
  the test is plain overlap of ``[low, high)`` ranges;
* number/quantity ``ap``: the stored range overlaps the closed range from
  ``value - abs(value) * 0.1`` to ``value + abs(value) * 0.1``;
* quantity ``ne``: some row with a matching unit exists and none of those rows is ``eq``;
* uri ``above``: the stored URI equals the value or ``value[:i]`` where ``value[i] == "/"``;
* composite: a group matches when each component clause holds on that component's rows of the
  group (component ``i`` rows live under ``<code>#<i>``; a component clause whose ``param`` is
  not already ``<code>#...`` is read from ``<code>#<i>`` by its position);
* chains follow local reference rows only (no ``url``), to types in ``target_types``;
* ``_lastUpdated``: the version stamp ``t`` is the range ``[t, t + 1)`` under date rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any, Protocol

from server.errors import InvalidSearch
from server.fhir.instant import parse_fhir_range
from server.search.query import (
    AllClause,
    AnyClause,
    ChainClause,
    Clause,
    CompartmentClause,
    CompositeClause,
    Criteria,
    DateClause,
    GrantClause,
    HasClause,
    IdClause,
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
    StringClause,
    TokenClause,
    TypeClause,
    UriClause,
)
from server.search.registry import patient_compartment
from server.search.rows import IndexRows

Resolve = Callable[[str, str], dict[str, Any] | None]
"""``resolve(type, id)``: the live resource, or None."""
Referrers = Callable[[str, str, str, str], list[tuple[str, dict[str, Any]]]]
"""``referrers(source_type, param, target_type, target_id)``: ``(id, resource)`` of the live
resources of ``source_type`` whose ``param`` references the target."""


class RowSource(Protocol):
    """Whatever yields a resource's index rows (the search indexer)."""

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows: ...


_TABLES = ("token", "string", "reference", "date", "number", "quantity", "uri")

Row = tuple[Any, ...]
RowTest = Callable[[Sequence[Row]], bool]  # the rows of one parameter -> does the clause hold


class _Env:
    """What one evaluation shares across the resources it visits (chains, _has)."""

    __slots__ = ("indexer", "resolve", "referrers", "resolved")

    def __init__(
        self, indexer: RowSource, resolve: Resolve | None, referrers: Referrers | None
    ) -> None:
        self.indexer = indexer
        self.resolve = resolve
        self.referrers = referrers
        self.resolved: dict[tuple[str, str], dict[str, Any] | None] = {}

    def target(self, type: str, id: str) -> dict[str, Any] | None:
        key = (type, id)
        if key not in self.resolved:
            assert self.resolve is not None
            self.resolved[key] = self.resolve(type, id)
        return self.resolved[key]


class _Subject:
    """One resource under evaluation; its rows are grouped by table and parameter lazily."""

    __slots__ = ("type", "resource", "id", "_stamp", "_stamp_known", "_view", "env")

    def __init__(
        self,
        type: str,
        resource: dict[str, Any],
        id: str | None,
        stamp: int | None,
        env: _Env,
    ) -> None:
        self.type = type
        self.resource = resource
        if id is None:
            own = resource.get("id")
            id = own if isinstance(own, str) else None
        self.id = id
        self._stamp = stamp
        self._stamp_known = stamp is not None
        self._view: dict[str, dict[str, list[Row]]] | None = None
        self.env = env

    @property
    def stamp(self) -> int | None:
        if not self._stamp_known:
            self._stamp_known = True
            self._stamp = _meta_stamp(self.resource)
        return self._stamp

    def rows(self, table: str, param: str) -> list[Row]:
        view = self._view
        if view is None:
            view = self._view = _group(self.env.indexer.rows(self.type, self.resource))
        return view[table].get(param, _NONE)


_NONE: list[Row] = []


def _group(rows: IndexRows) -> dict[str, dict[str, list[Row]]]:
    view: dict[str, dict[str, list[Row]]] = {}
    for table in _TABLES:
        by_param: dict[str, list[Row]] = {}
        for row in getattr(rows, table):
            by_param.setdefault(row[0], []).append(row)
        view[table] = by_param
    return view


def _meta_stamp(resource: dict[str, Any]) -> int | None:
    meta = resource.get("meta")
    text = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    span = parse_fhir_range(text)
    return None if span is None else span[0]


Pred = Callable[[_Subject], bool]


# -- row tests per parameter type ----------------------------------------------------------


def _any_row(test: Callable[[Row], bool]) -> RowTest:
    def rows_test(rows: Sequence[Row]) -> bool:
        return any(test(row) for row in rows)

    return rows_test


def _string_test(clause: StringClause) -> RowTest:
    values = clause.values
    if clause.mode == "exact":
        exact = frozenset(values)
        return _any_row(lambda row: row[3] in exact)
    if clause.mode == "contains":
        return _any_row(lambda row: any(v in row[2] for v in values))
    starts = tuple(values)
    return _any_row(lambda row: row[2].startswith(starts))


def _token_test(clause: TokenClause) -> RowTest:
    every = False
    codes: set[str] = set()  # any system
    pairs: set[tuple[str, str]] = set()
    systems: set[str] = set()  # any code
    for system, code in clause.values:
        if system is None and code is None:
            every = True
        elif system is None:
            assert code is not None
            codes.add(code)
        elif code is None:
            systems.add(system)
        else:
            pairs.add((system, code))

    def hit(row: Row) -> bool:
        return every or row[3] in codes or row[2] in systems or (row[2], row[3]) in pairs

    found = _any_row(hit)
    if clause.negate:
        return lambda rows: not found(rows)
    return found


def _reference_test(clause: ReferenceClause) -> RowTest:
    urls: set[str] = set()
    ids: set[str] = set()  # any target type
    pairs: set[tuple[str, str]] = set()
    for value in clause.values:
        if value.url is not None:
            urls.add(value.url)
        elif value.id is not None:
            if value.type is None:
                ids.add(value.id)
            else:
                pairs.add((value.type, value.id))

    def hit(row: Row) -> bool:
        if row[4]:
            return row[4] in urls
        return row[3] in ids or (row[2], row[3]) in pairs

    return _any_row(hit)


RangeTest = Callable[[Any, Any], bool]  # (stored low, stored high) -> bool


def _date_range_test(prefix: Prefix, low: int, high: int) -> RangeTest:
    """Stored ``[rlow, rhigh)`` against search ``[low, high)`` (``ne`` handled by the caller
    as "not eq")."""
    if prefix in ("eq", "ne"):
        return lambda rlow, rhigh: rlow >= low and rhigh <= high
    if prefix == "gt":
        return lambda rlow, rhigh: rhigh > high
    if prefix == "lt":
        return lambda rlow, rhigh: rlow < low
    if prefix == "ge":
        return lambda rlow, rhigh: rhigh > high or (rlow >= low and rhigh <= high)
    if prefix == "le":
        return lambda rlow, rhigh: rlow < low or (rlow >= low and rhigh <= high)
    if prefix == "sa":
        return lambda rlow, rhigh: rlow >= high
    if prefix == "eb":
        return lambda rlow, rhigh: rhigh <= low
    if prefix == "ap":
        return lambda rlow, rhigh: rlow < high and rhigh > low
    raise InvalidSearch(f"unknown date prefix {prefix!r}")


def _number_range_test(value: NumberValue) -> RangeTest:
    """Stored ``[rlow, rhigh]`` against a number search value (``ne``: "not eq")."""
    prefix, v, low, high = value.prefix, value.value, value.low, value.high
    if prefix in ("eq", "ne"):
        return lambda rlow, rhigh: rlow >= low and rhigh < high
    if prefix in ("gt", "sa"):
        return lambda rlow, rhigh: rhigh > v
    if prefix in ("lt", "eb"):
        return lambda rlow, rhigh: rlow < v
    if prefix == "ge":
        return lambda rlow, rhigh: rhigh >= v
    if prefix == "le":
        return lambda rlow, rhigh: rlow <= v
    if prefix == "ap":
        margin = abs(v) * 0.1
        ap_low, ap_high = v - margin, v + margin
        return lambda rlow, rhigh: rlow <= ap_high and rhigh >= ap_low
    raise InvalidSearch(f"unknown number prefix {prefix!r}")


def _ranged_alternative(
    prefix: Prefix, test: RangeTest, keep: Callable[[Row], bool] | None, lo: int, hi: int
) -> RowTest:
    """One prefix alternative over rows whose range sits at ``row[lo]``, ``row[hi]``.

    ``keep`` restricts the rows considered (quantity units); ``ne`` holds when some considered
    row exists and none of them is ``eq``.
    """

    def considered(rows: Sequence[Row]) -> Iterator[Row]:
        return iter(rows) if keep is None else (row for row in rows if keep(row))

    if prefix == "ne":

        def ne(rows: Sequence[Row]) -> bool:
            seen = False
            for row in considered(rows):
                if test(row[lo], row[hi]):
                    return False
                seen = True
            return seen

        return ne

    def found(rows: Sequence[Row]) -> bool:
        return any(test(row[lo], row[hi]) for row in considered(rows))

    return found


def _ranged(
    alternatives: Sequence[tuple[Prefix, RangeTest, Callable[[Row], bool] | None]],
    lo: int,
    hi: int,
) -> RowTest:
    """The OR of prefix alternatives (see ``_ranged_alternative``)."""
    tests = [_ranged_alternative(p, test, keep, lo, hi) for p, test, keep in alternatives]
    if len(tests) == 1:
        return tests[0]
    return lambda rows: any(test(rows) for test in tests)


def _date_test(clause: DateClause) -> RowTest:
    return _ranged(
        [(p, _date_range_test(p, low, high), None) for p, low, high in clause.values], 2, 3
    )


def _number_test(clause: NumberClause) -> RowTest:
    return _ranged([(v.prefix, _number_range_test(v), None) for v in clause.values], 2, 3)


def _unit_test(value: QuantityValue) -> Callable[[Row], bool] | None:
    system, code = value.system, value.code
    if system is not None:
        if code is None:
            return lambda row: row[2] == system
        return lambda row: row[2] == system and row[3] == code
    if code is None:
        return None
    return lambda row: row[3] == code or row[4] == code


def _quantity_test(clause: QuantityClause) -> RowTest:
    return _ranged(
        [(v.number.prefix, _number_range_test(v.number), _unit_test(v)) for v in clause.values],
        5,
        6,
    )


def _uri_test(clause: UriClause) -> RowTest:
    if clause.mode == "below":
        starts = tuple(clause.values)
        return _any_row(lambda row: row[2].startswith(starts))
    accepted: set[str] = set(clause.values)
    if clause.mode == "above":
        for value in clause.values:
            accepted.update(value[:i] for i, ch in enumerate(value) if ch == "/" and i > 0)
    return _any_row(lambda row: row[2] in accepted)


def _row_test(clause: Clause) -> tuple[str, str, RowTest] | None:
    """``(table, param, test)`` of a clause decided by one parameter's rows, else None."""
    if isinstance(clause, StringClause):
        return "string", clause.param, _string_test(clause)
    if isinstance(clause, TokenClause):
        return "token", clause.param, _token_test(clause)
    if isinstance(clause, ReferenceClause):
        return "reference", clause.param, _reference_test(clause)
    if isinstance(clause, DateClause):
        return "date", clause.param, _date_test(clause)
    if isinstance(clause, NumberClause):
        return "number", clause.param, _number_test(clause)
    if isinstance(clause, QuantityClause):
        return "quantity", clause.param, _quantity_test(clause)
    if isinstance(clause, UriClause):
        return "uri", clause.param, _uri_test(clause)
    return None


# -- clause predicates ---------------------------------------------------------------------


def _id_pred(clause: IdClause) -> Pred:
    ids = frozenset(clause.ids)
    return lambda subject: subject.id is not None and subject.id in ids


def _last_updated_pred(clause: LastUpdatedClause) -> Pred:
    tests = [(p, _date_range_test(p, low, high)) for p, low, high in clause.values]

    def pred(subject: _Subject) -> bool:
        stamp = subject.stamp
        if stamp is None:
            return False
        for prefix, test in tests:
            equal_or_hit = test(stamp, stamp + 1)
            if (not equal_or_hit) if prefix == "ne" else equal_or_hit:
                return True
        return False

    return pred


def _missing_pred(clause: MissingClause) -> Pred:
    table = clause.table.removeprefix("search_")
    tables = (table,) if table in _TABLES else _TABLES
    param, missing = clause.param, clause.missing

    def pred(subject: _Subject) -> bool:
        present = any(subject.rows(t, param) for t in tables)
        return present != missing

    return pred


def _composite_pred(clause: CompositeClause) -> Pred:
    alternatives: list[list[tuple[str, str, RowTest]]] = []
    for components in clause.values:
        compiled = []
        for i, component in enumerate(components):
            found = _row_test(component)
            if found is None:
                raise InvalidSearch(
                    f"composite parameter {clause.param!r} has a component that is not a value"
                )
            table, key, test = found
            if not key.startswith(clause.param + "#"):
                key = f"{clause.param}#{i}"
            compiled.append((table, key, test))
        alternatives.append(compiled)

    def pred(subject: _Subject) -> bool:
        for compiled in alternatives:
            by_group: list[dict[int, list[Row]]] = []
            groups: set[int] = set()
            for table, key, _ in compiled:
                buckets: dict[int, list[Row]] = {}
                for row in subject.rows(table, key):
                    buckets.setdefault(row[1], []).append(row)
                by_group.append(buckets)
                groups.update(buckets)
            for group in sorted(groups):
                if all(
                    test(buckets.get(group, _NONE))
                    for (_, _, test), buckets in zip(compiled, by_group, strict=True)
                ):
                    return True
        return False

    return pred


def _chain_pred(clause: ChainClause) -> Pred:
    inner = _predicate(clause.clause)
    targets = frozenset(clause.target_types)
    param = clause.param

    def pred(subject: _Subject) -> bool:
        env = subject.env
        seen: set[tuple[str, str]] = set()
        for row in subject.rows("reference", param):
            type, id = row[2], row[3]
            if row[4] or not id or type not in targets or (type, id) in seen:
                continue
            seen.add((type, id))
            target = env.target(type, id)
            if target is not None and inner(_Subject(type, target, id, None, env)):
                return True
        return False

    return pred


def _has_pred(clause: HasClause) -> Pred:
    inner = _predicate(clause.clause)
    source_type, param = clause.source_type, clause.param

    def pred(subject: _Subject) -> bool:
        if subject.id is None:
            return False
        env = subject.env
        assert env.referrers is not None
        for id, source in env.referrers(source_type, param, subject.type, subject.id):
            if inner(_Subject(source_type, source, id, None, env)):
                return True
        return False

    return pred


def _compartment_pred(clause: CompartmentClause) -> Pred:
    by_type = {type: frozenset(codes) for type, codes in clause.params}
    target = (clause.target_type, clause.target_id)

    def pred(subject: _Subject) -> bool:
        if clause.include_self and (subject.type, subject.id) == target:
            return True
        codes = by_type.get(subject.type)
        if not codes:
            return False
        return any(
            not row[4] and (row[2], row[3]) == target
            for code in codes
            for row in subject.rows("reference", code)
        )

    return pred


def _owner_pred(clause: OwnerClause) -> Pred:
    """In memory the facts are the rows they are written from: the full compartment."""
    params = tuple(sorted((t, tuple(sorted(c))) for t, c in patient_compartment().items()))
    return _compartment_pred(CompartmentClause("Patient", clause.patient, params, True))


def _per_type_pred(clause: PerTypeClause) -> Pred:
    inner = _predicate(clause.clause)
    type = clause.type
    return lambda subject: subject.type != type or inner(subject)


def _any_pred(clause: AnyClause) -> Pred:
    inner = tuple(_predicate(c) for c in clause.alternatives)
    return lambda subject: any(pred(subject) for pred in inner)


def _all_pred(clause: AllClause) -> Pred:
    inner = tuple(_predicate(c) for c in sorted(clause.clauses, key=_cost))
    return lambda subject: all(pred(subject) for pred in inner)


def _predicate(clause: Clause) -> Pred:
    if isinstance(clause, AnyClause):
        return _any_pred(clause)
    if isinstance(clause, AllClause):
        return _all_pred(clause)
    if isinstance(clause, TypeClause):
        types = frozenset(clause.types)
        return lambda subject: subject.type in types
    if isinstance(clause, ReferencedClause):
        # referrers are found by source type and parameter; a view's "referred to by any
        # member" is answered by the store alone: in memory nothing is referred to that way
        return lambda subject: False
    if isinstance(clause, GrantClause):
        # care relationships are rows of the store's access_grant table: the store alone
        # answers them; in memory nothing is reached that way
        return lambda subject: False
    if isinstance(clause, IdClause):
        return _id_pred(clause)
    if isinstance(clause, LastUpdatedClause):
        return _last_updated_pred(clause)
    if isinstance(clause, MissingClause):
        return _missing_pred(clause)
    if isinstance(clause, CompositeClause):
        return _composite_pred(clause)
    if isinstance(clause, ChainClause):
        return _chain_pred(clause)
    if isinstance(clause, HasClause):
        return _has_pred(clause)
    if isinstance(clause, CompartmentClause):
        return _compartment_pred(clause)
    if isinstance(clause, PerTypeClause):
        return _per_type_pred(clause)
    if isinstance(clause, OwnerClause):
        return _owner_pred(clause)
    if isinstance(clause, LabelClause):  # in memory: the rows the facts are written from
        return _predicate(TokenClause("_security", ((clause.system, clause.code),)))
    found = _row_test(clause)
    if found is None:
        raise InvalidSearch(f"unsupported search clause {type(clause).__name__}")
    table, param, test = found
    return lambda subject: test(subject.rows(table, param))


def _needs(clause: Clause) -> tuple[bool, bool]:
    """Whether evaluating ``clause`` needs ``resolve`` and ``referrers``."""
    if isinstance(clause, ChainClause):
        _, referrers = _needs(clause.clause)
        return True, referrers
    if isinstance(clause, HasClause):
        resolve, _ = _needs(clause.clause)
        return resolve, True
    if isinstance(clause, PerTypeClause):
        return _needs(clause.clause)
    if isinstance(clause, AnyClause | AllClause):
        parts = clause.alternatives if isinstance(clause, AnyClause) else clause.clauses
        needs = [_needs(c) for c in parts]
        return any(r for r, _ in needs), any(f for _, f in needs)
    return False, False


def _cost(clause: Clause) -> int:
    """Evaluation order: columns first, then rows, then other resources."""
    if isinstance(clause, IdClause | LastUpdatedClause):
        return 0
    if isinstance(clause, ChainClause | HasClause | ReferencedClause | GrantClause):
        return 2
    if isinstance(clause, AnyClause):
        return max((_cost(c) for c in clause.alternatives), default=0)
    if isinstance(clause, AllClause):
        return max((_cost(c) for c in clause.clauses), default=0)
    if isinstance(clause, PerTypeClause):
        return _cost(clause.clause)
    return 1


# -- public API ----------------------------------------------------------------------------


class Matcher:
    """Criteria compiled for repeated evaluation against single resources."""

    __slots__ = ("criteria", "_preds", "_needs_resolve", "_needs_referrers")

    def __init__(self, criteria: Criteria) -> None:
        self.criteria = criteria
        ordered = sorted(criteria.clauses, key=_cost)
        self._preds = tuple(_predicate(clause) for clause in ordered)
        needs = [_needs(clause) for clause in criteria.clauses]
        self._needs_resolve = any(resolve for resolve, _ in needs)
        self._needs_referrers = any(referrers for _, referrers in needs)

    def __call__(
        self,
        type: str,
        resource: dict[str, Any],
        indexer: RowSource,
        *,
        id: str | None = None,
        last_updated: int | None = None,
        resolve: Resolve | None = None,
        referrers: Referrers | None = None,
    ) -> bool:
        """Whether ``resource`` (of ``type``) satisfies the criteria.

        ``id`` defaults to ``resource["id"]``; ``last_updated`` (µs) to ``meta.lastUpdated``.
        Chained parameters need ``resolve`` and ``_has`` needs ``referrers``; without them
        ``InvalidSearch`` is raised.
        """
        if self._needs_resolve and resolve is None:
            raise InvalidSearch("chained parameters cannot be evaluated here")
        if self._needs_referrers and referrers is None:
            raise InvalidSearch("_has parameters cannot be evaluated here")
        criteria = self.criteria
        if criteria.type is None:
            if criteria.types and type not in criteria.types:
                return False
        elif criteria.type != type:
            return False
        subject = _Subject(type, resource, id, last_updated, _Env(indexer, resolve, referrers))
        return all(pred(subject) for pred in self._preds)


@lru_cache(maxsize=512)
def compile_matcher(criteria: Criteria) -> Matcher:
    """The ``Matcher`` of ``criteria`` (compiled once per distinct criteria)."""
    return Matcher(criteria)


def matches(
    criteria: Criteria,
    type: str,
    resource: dict[str, Any],
    indexer: RowSource,
    *,
    id: str | None = None,
    last_updated: int | None = None,
    resolve: Resolve | None = None,
    referrers: Referrers | None = None,
) -> bool:
    """Whether ``resource`` of ``type`` satisfies ``criteria``, as the SQL store would answer.

    See ``Matcher.__call__`` for the keyword arguments.
    """
    return compile_matcher(criteria)(
        type,
        resource,
        indexer,
        id=id,
        last_updated=last_updated,
        resolve=resolve,
        referrers=referrers,
    )
