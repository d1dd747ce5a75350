"""FHIRPath values: collections of typed nodes, equality, equivalence, ordering, truth.

A node is ``(type, value)``: the FHIR type of a JSON value (``CodeableConcept``, ``code``,
``Observation_Component``, a resource type) or the type of a literal (``string``,
``integer``, ``decimal``, ``boolean``, ``date``, ``dateTime``, ``time``). A collection is a
list of nodes. The semantics follow FHIRPath N1:

* equality ``=`` is empty when either side is empty, false when the sizes differ, else
  item-wise; a boolean never equals a number; dates of different precision compare as empty;
* equivalence ``~`` is never empty: strings compare case- and whitespace-insensitively;
* ordering compares single numbers, strings, or date/time values of the same precision;
* a collection used as a boolean is empty → unknown (None), one boolean → that boolean, one
  other value → true.
"""

from __future__ import annotations

from typing import Any

Node = tuple[str, Any]

DATE_TYPES = frozenset({"date", "dateTime", "instant"})
_NUMBER = (int, float)


def truth(nodes: list[Node]) -> bool | None:
    """A collection in a boolean position (``and``, ``where``, ``iif``)."""
    if len(nodes) != 1:
        return None
    value = nodes[0][1]
    return value if value.__class__ is bool else True


def boolean(value: bool | None) -> list[Node]:
    return [] if value is None else [("boolean", value)]


def _precision(value: str) -> int:
    """How much of a date/time a value states (its length without the time zone)."""
    body = value.split("T", 1)
    if len(body) == 1:
        return len(value)
    time = body[1]
    for mark in ("Z", "+", "-"):
        time = time.split(mark, 1)[0]
    return len(body[0]) + 1 + len(time.split(".", 1)[0])


def _is_date(node: Node) -> bool:
    return node[0] in DATE_TYPES and node[1].__class__ is str


def item_equal(a: Node, b: Node) -> bool | None:
    x, y = a[1], b[1]
    if (x.__class__ is bool) != (y.__class__ is bool):
        return False
    if _is_date(a) and _is_date(b) and _precision(x) != _precision(y):
        return None
    if isinstance(x, _NUMBER) and isinstance(y, _NUMBER):
        return bool(x == y)
    return bool(x == y)


def equal(left: list[Node], right: list[Node]) -> bool | None:
    if not left or not right:
        return None
    if len(left) != len(right):
        return False
    result: bool | None = True
    for a, b in zip(left, right, strict=True):
        same = item_equal(a, b)
        if same is False:
            return False
        if same is None:
            result = None
    return result


def _normal(value: Any) -> Any:
    if value.__class__ is str:
        return " ".join(value.lower().split())
    if value.__class__ is dict:
        return {k: _normal(v) for k, v in value.items() if k != "id"}
    if value.__class__ is list:
        return [_normal(v) for v in value]
    return value


def item_equivalent(a: Node, b: Node) -> bool:
    x, y = a[1], b[1]
    if (x.__class__ is bool) != (y.__class__ is bool):
        return False
    if _is_date(a) and _is_date(b) and _precision(x) != _precision(y):
        return False
    return bool(_normal(x) == _normal(y))


def equivalent(left: list[Node], right: list[Node]) -> bool:
    if not left and not right:
        return True
    if len(left) != len(right):
        return False
    return all(any(item_equivalent(a, b) for b in right) for a in left)


def compare(left: list[Node], right: list[Node]) -> int | None:
    """-1, 0 or 1 for single comparable values, None (empty) otherwise."""
    if len(left) != 1 or len(right) != 1:
        return None
    a, b = left[0], right[0]
    x, y = a[1], b[1]
    if x.__class__ is bool or y.__class__ is bool:
        return None
    if isinstance(x, _NUMBER) and isinstance(y, _NUMBER):
        return (x > y) - (x < y)
    if x.__class__ is str and y.__class__ is str:
        if (_is_date(a) or _is_date(b)) and _precision(x) != _precision(y):
            return None
        return (x > y) - (x < y)
    return None


def distinct(nodes: list[Node]) -> list[Node]:
    """``nodes`` without repeated values (``=``: a boolean is not a number; dates of other
    precisions are not equal, and as texts they differ anyway)."""
    if len(nodes) < 2:
        return nodes
    out: list[Node] = []
    for node in nodes:
        value = node[1]
        flag = value.__class__ is bool
        for _, seen in out:
            if seen == value and (seen.__class__ is bool) == flag:
                break
        else:
            out.append(node)
    return out


def holds(nodes: list[Node]) -> bool:
    """Whether an invariant's result means "satisfied": one ``true``, or any non-empty
    collection that is not a single ``false``. An empty result does not satisfy it."""
    if not nodes:
        return False
    if len(nodes) == 1 and nodes[0][1].__class__ is bool:
        return bool(nodes[0][1])
    return True
