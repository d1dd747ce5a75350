"""The FHIRPath operators (N1 §6) as closures over collections: three-valued logic, equality and
equivalence, ordering, membership, arithmetic and string concatenation, union.

``and``/``or``/``implies`` evaluate their right side only when the left side does not
decide; ``|`` keeps the values of every branch in order without duplicates and leaves out
branches that cannot select anything (rooted in another type).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.fhir.fhirpath.navigation import EMPTY, Compiled, Run
from server.fhir.fhirpath.values import Node, boolean, compare, distinct, equal, equivalent, truth

Test = Callable[[list[Node], list[Node]], list[Node]]
BOOLEAN = frozenset(("boolean",))


def logic(op: str, a: Run, b: Run) -> Run:
    """Three-valued ``and``/``or``/``xor``/``implies`` (the right side is evaluated only
    when the left side does not decide)."""

    def logic(nodes: list[Node], resource: Any) -> list[Node]:
        x = truth(a(nodes, resource))
        if op == "and":
            if x is False:
                return [("boolean", False)]
            y = truth(b(nodes, resource))
            return boolean(False if y is False else None if x is None or y is None else True)
        if op == "or":
            if x is True:
                return [("boolean", True)]
            y = truth(b(nodes, resource))
            return boolean(True if y is True else None if x is None or y is None else False)
        if op == "implies":
            if x is False:
                return [("boolean", True)]
            y = truth(b(nodes, resource))
            if y is True:
                return [("boolean", True)]
            return boolean(None if x is None or y is None else False)
        y = truth(b(nodes, resource))
        return boolean(None if x is None or y is None else x != y)

    return logic


def _membership(left: list[Node], right: list[Node]) -> list[Node]:
    if not left:
        return []
    if len(left) != 1:
        return []
    return [("boolean", any(equal(left, [item]) is True for item in right))]


def _order(test: Callable[[int], bool]) -> Test:
    def ordered(left: list[Node], right: list[Node]) -> list[Node]:
        result = compare(left, right)
        return [] if result is None else [("boolean", test(result))]

    return ordered


def _not_equal(left: list[Node], right: list[Node]) -> list[Node]:
    same = equal(left, right)
    return boolean(None if same is None else not same)


TESTS: dict[str, Test] = {
    "=": lambda left, right: boolean(equal(left, right)),
    "!=": _not_equal,
    "~": lambda left, right: [("boolean", equivalent(left, right))],
    "!~": lambda left, right: [("boolean", not equivalent(left, right))],
    "in": _membership,
    "contains": lambda left, right: _membership(right, left),
    "<": _order(lambda r: r < 0),
    ">": _order(lambda r: r > 0),
    "<=": _order(lambda r: r <= 0),
    ">=": _order(lambda r: r >= 0),
}


def _numbers(op: str) -> Test:
    def arithmetic(left: list[Node], right: list[Node]) -> list[Node]:
        if len(left) != 1 or len(right) != 1:
            return []
        x, y = left[0][1], right[0][1]
        if op == "&" or (op == "+" and x.__class__ is str and y.__class__ is str):
            return [
                ("string", f"{x if x.__class__ is str else ''}{y if y.__class__ is str else ''}")
            ]
        if not isinstance(x, int | float) or not isinstance(y, int | float):
            return []
        if x.__class__ is bool or y.__class__ is bool:
            return []
        if op == "+":
            value: Any = x + y
        elif op == "-":
            value = x - y
        elif op == "*":
            value = x * y
        elif y == 0:
            return []
        elif op == "/":
            return [("decimal", x / y)]
        elif op == "div":
            value = int(x // y)
        else:
            value = x % y
        return [("integer" if value.__class__ is int else "decimal", value)]

    return arithmetic


ARITHMETIC = {op: _numbers(op) for op in ("+", "-", "*", "/", "div", "mod", "&")}


_CONCAT = _numbers("&")


def _string_concat(left: list[Node], right: list[Node]) -> list[Node]:
    """``&``: string concatenation in which an empty operand counts as ``''``."""
    return _CONCAT(left or [("string", "")], right or [("string", "")])


ARITHMETIC["&"] = _string_concat


# the types an arithmetic operator's result can have
ARITHMETIC_TYPES: dict[str, frozenset[str]] = {
    "+": frozenset(("integer", "decimal", "string")),
    "-": frozenset(("integer", "decimal")),
    "*": frozenset(("integer", "decimal")),
    "/": frozenset(("decimal",)),
    "div": frozenset(("integer",)),
    "mod": frozenset(("integer", "decimal")),
    "&": frozenset(("string",)),
}


def union(parts: list[Compiled]) -> Compiled:
    """``a | b | ...`` of compiled branches."""
    pulls = [part.run for part in parts if part.types]
    types = frozenset(t for part in parts for t in part.types)
    if not pulls:
        return EMPTY
    if len(pulls) == 1:
        (pull,) = pulls

        def distinct_one(nodes: list[Node], resource: Any) -> list[Node]:
            return distinct(pull(nodes, resource))

        return Compiled(distinct_one, types)

    def union_all(nodes: list[Node], resource: Any) -> list[Node]:
        found: list[Node] = []
        for pull in pulls:
            found += pull(nodes, resource)
        return distinct(found)

    return Compiled(union_all, types)
