"""``Patient/[id]/$everything`` (R4 patient-operation-everything): the patient's compartment.

The patient and every resource in its Patient compartment (the R4 CompartmentDefinition), as
one paged search across types:

* ``start``/``end`` (dates): resources with a clinical ``date`` parameter are kept when that
  date overlaps [start, end]; resources of types without one are always kept;
* ``_since`` (instant): only resources changed at or after it;
* ``_type``: only these types; ``_count`` and paging as in any search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from server.errors import InvalidSearch
from server.fhir.instant import date_range
from server.search.parse import SearchContext, SearchRequest, parse_search
from server.search.query import (
    Clause,
    CompartmentClause,
    Criteria,
    DateClause,
    LastUpdatedClause,
    PerTypeClause,
)
from server.search.registry import patient_compartment

PARAMETERS = frozenset({"start", "end", "_since", "_type", "_count", "_cursor"})
_PASSED = frozenset({"_type", "_count", "_cursor"})


def _date(name: str, value: str, ctx: SearchContext) -> tuple[int, int]:
    span = date_range(value, ctx.zone)
    if span is None:
        raise InvalidSearch(f"{name} must be a date, got '{value[:40]}'", expression=name)
    return span


def parse(patient_id: str, pairs: Sequence[tuple[str, str]], ctx: SearchContext) -> SearchRequest:
    """The search that answers ``$everything`` for ``Patient/<patient_id>``."""
    passed: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for name, value in pairs:
        if name in ("_format", "_pretty"):
            continue
        if name not in PARAMETERS:
            raise InvalidSearch(
                f"$everything takes start, end, _since, _type and _count, not '{name[:60]}'",
                expression=name[:60],
            )
        if name in _PASSED:
            passed.append((name, value))
        else:
            given[name] = value
    compartment = patient_compartment()
    if not any(name == "_type" for name, _ in passed):
        passed.append(("_type", ",".join(sorted({"Patient", *compartment}))))
    parsed = parse_search(None, passed, ctx)
    types = parsed.query.criteria.types
    members = tuple((t, compartment[t]) for t in types if t in compartment)
    clauses: list[Clause] = [CompartmentClause("Patient", patient_id, members, include_self=True)]
    applied = list(parsed.applied)
    if "_since" in given:
        low, _ = _date("_since", given["_since"], ctx)
        clauses.append(LastUpdatedClause((("ge", low, low + 1),)))
        applied.append(("_since", given["_since"]))
    if "start" in given or "end" in given:
        start = _date("start", given["start"], ctx)[0] if "start" in given else None
        end = _date("end", given["end"], ctx)[1] if "end" in given else None
        for type in types:
            param = ctx.registry.get(type, "date")
            if param is None or param.type != "date":
                continue
            if start is not None:
                clauses.append(PerTypeClause(type, DateClause("date", (("ge", start, start + 1),))))
            if end is not None:
                clauses.append(PerTypeClause(type, DateClause("date", (("le", end - 1, end),))))
        applied.extend((k, given[k]) for k in ("start", "end") if k in given)
    criteria = Criteria(None, tuple(sorted(applied)), tuple(clauses), types)
    return replace(parsed, query=replace(parsed.query, criteria=criteria), applied=tuple(applied))
