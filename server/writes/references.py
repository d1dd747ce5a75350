"""Conditional references (R4 http.html#trules): a ``reference`` element written as a search,
``Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999912345``, is resolved to the one
resource the search matches before anything is stored.

Every write resolves them: a transaction entry (``transaction.py``, with the transaction's own
entries), a batch entry, a REST create, update or patch, a write a program rule derives. A
search that matches nothing fails the write with 400, several matches with 412; the reference
is never stored as the search text. Outside the writers' lock the pipeline resolves them to
validate the resource; inside the unit they are resolved again with the unit's locked matches,
and a different answer means the resource is rewritten and validated again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

from server.errors import BadRequest, FhirError, MultipleMatches
from server.ports import Version
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import Criteria

Find = Callable[[Criteria], list[Version]]


class UnresolvedReference(BadRequest):
    """A conditional reference that matches no resource."""

    code = "not-found"


def conditional(reference: str) -> tuple[str, str] | None:
    """``(type, query)`` of a conditional reference (``Type?query``); None for any other."""
    type, sep, query = reference.partition("?")
    if sep and type and "/" not in type and ":" not in type:
        return type, query
    return None


def _walk(resource: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str]]:
    """``(node, path, value)`` of every ``reference`` string, iteratively (a resource may nest
    deeper than Python's recursion limit). Paths are FHIRPath-like: ``subject.reference``."""
    stack: list[tuple[Any, str]] = [(resource, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    yield node, (f"{path}.{key}" if path else key), value
                elif isinstance(value, dict | list):
                    stack.append((value, f"{path}.{key}" if path else key))
        else:
            for index, value in enumerate(node):
                if isinstance(value, dict | list):
                    stack.append((value, f"{path}[{index}]"))


def found(resource: dict[str, Any]) -> dict[str, str]:
    """The conditional references of ``resource``, each with the path of one occurrence.
    A resource whose JSON has no ``?`` at all has none: that is settled by one serialisation
    (in C) instead of a walk of every element, which most writes would otherwise pay."""
    try:
        if b"?" not in orjson.dumps(resource):
            return {}
    except orjson.JSONEncodeError:  # beyond the serialiser (nesting, huge integers): walk it
        pass
    out: dict[str, str] = {}
    for _, path, value in _walk(resource):
        if value not in out and conditional(value) is not None:
            out[value] = path
    return out


def resolve(reference: str, search: SearchContext, find: Find, expression: str = "") -> str:
    """The ``Type/id`` the conditional ``reference`` names; the error when it matches nothing
    or several resources (``expression`` locates it)."""
    parts = conditional(reference)
    assert parts is not None
    type, query = parts
    shown = reference[:120]
    try:
        criteria = parse_criteria_string(type, query, search)
    except FhirError as exc:  # an unknown type or parameter, a malformed value
        raise BadRequest(f"Conditional reference '{shown}': {exc}", expression=expression) from exc
    matches = find(criteria)
    if not matches:
        raise UnresolvedReference(
            f"Conditional reference '{shown}' matches no resource", expression=expression
        )
    if len(matches) > 1:
        raise MultipleMatches(
            f"Conditional reference '{shown}' matches several resources", expression=expression
        )
    return f"{type}/{matches[0].id}"


def resolve_all(
    references: dict[str, str], search: SearchContext, find: Find, root: str
) -> dict[str, str]:
    """Each conditional reference of ``references`` (as ``found`` gives them) -> ``Type/id``."""
    return {
        reference: resolve(reference, search, find, f"{root}.{path}")
        for reference, path in references.items()
    }


def rewritten(resource: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """A copy of ``resource`` with the references of ``mapping`` replaced (``resource`` is left
    as it was)."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(resource))
    for node, _, value in _walk(copy):
        target = mapping.get(value)
        if target is not None:
            node["reference"] = target
    return copy
