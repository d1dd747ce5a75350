"""``Patient/[id]/$everything`` (R4 patient-operation-everything): the patient's compartment.

Its OperationDefinition (``profiles/operations/OperationDefinition-Patient-everything.json``)
says where it runs and what it takes; the inputs arrive parsed against it. The patient and every
resource in its Patient compartment (the R4 CompartmentDefinition), as one paged search across
types:

* ``start``/``end`` (dates): resources with a clinical ``date`` parameter are kept when that
  date overlaps [start, end]; resources of types without one are always kept;
* ``_since`` (instant): only resources changed at or after it;
* ``_type``: only these types; ``_count`` and paging (``_cursor``) as in any search.

The router has already answered 404/410 for an unknown or deleted patient; the page is read
through the caller's reader (the door), so a caller sees only what it may read.
"""

from __future__ import annotations

from dataclasses import replace

from server.errors import InvalidSearch
from server.fhir.instant import date_range
from server.operations.call import Answer, Call, Implementation, Inputs
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

_PASSED = ("_type", "_count", "_cursor")  # handed to the search as they are


def _date(name: str, value: str, ctx: SearchContext) -> tuple[int, int]:
    span = date_range(value, ctx.zone)
    if span is None:
        raise InvalidSearch(f"{name} must be a date, got '{value[:40]}'", expression=name)
    return span


def parse(patient_id: str, params: Inputs, ctx: SearchContext) -> SearchRequest:
    """The search that answers ``$everything`` for ``Patient/<patient_id>`` with ``params``
    (parsed against the OperationDefinition)."""
    passed = [(name, str(value)) for name in _PASSED for value in params.get(name, [])]
    given = {name: str(params[name][0]) for name in ("start", "end", "_since") if name in params}
    compartment = patient_compartment()
    if "_type" not in params:
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


def run(call: Call) -> Answer:
    assert call.id is not None, "an instance-level operation"
    if call.page is None:
        raise InvalidSearch("$everything pages its answer: call it on its own URL")
    parsed = parse(call.id, call.params, call.services.search.context)
    return call.page(parsed, f"Patient/{call.id}/$everything")


IMPLEMENTATION = Implementation("Patient-everything", run)
