"""FHIRPath invariants compiled to Python closures.

``compile_fhirpath(expression, context_type, terminology)`` parses an expression
(:mod:`server.fhir.fhirpath_syntax`) and returns an evaluator ``(focus, resource) ->
collection`` (:mod:`server.fhir.fhirpath_values`); ``holds`` tells whether a result satisfies
an invariant. Element types come from the R4 schema (:mod:`server.fhir.element_paths`):
members are read from their JSON names (``value`` on an Observation reads ``valueQuantity``,
``valueString``, ...), so ``ofType``/``is``/``as`` see the FHIR types.

Supported: paths (a leading type name filters the focus), indexers, ``{}``, literals, ``$this``,
``%resource`` (also ``%rootResource``, ``%context``), the operators ``implies or xor and in
contains = != ~ !~ < > <= >= | is as + - & * /`` and the functions of
:mod:`server.fhir.fhirpath_functions`. Anything else (and a member no possible type has)
raises ``FhirPathError`` at compile time; evaluation never raises: values of an unexpected
shape yield empty collections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.fhir.element_paths import ElementModel, element_model
from server.fhir.fhirpath_syntax import Ast, FhirPathSyntaxError, parse
from server.fhir.fhirpath_values import (
    Node,
    boolean,
    compare,
    distinct,
    equal,
    equivalent,
    holds,
    truth,
)

if TYPE_CHECKING:
    from server.fhir.terminology import Terminology

__all__ = ["Evaluator", "FhirPathError", "compile_fhirpath", "compile_tree", "holds"]

Evaluator = Callable[[Any, Any], list[Node]]  # (focus JSON, root resource JSON) -> collection
Run = Callable[[list[Node], Node | None], list[Node]]  # (input, %resource node) -> output
Types = frozenset[str] | None  # the types a collection may hold (None: not known)

_SYSTEM_TYPES = {
    "Boolean": ("boolean",),
    "String": ("string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid"),
    "Integer": ("integer", "positiveInt", "unsignedInt"),
    "Decimal": ("decimal",),
    "Date": ("date",),
    "DateTime": ("dateTime", "instant"),
    "Time": ("time",),
}


class FhirPathError(ValueError):
    """An expression outside the supported subset, or naming an element no type has."""


@dataclass(frozen=True, slots=True)
class Compiled:
    run: Run
    types: Types


def _input(nodes: list[Node], root: Node | None) -> list[Node]:
    return nodes


def _nothing(nodes: list[Node], root: Node | None) -> list[Node]:
    return []


def node_of(type: str, value: Any) -> Node:
    """The node of a JSON value of declared ``type`` (a resource is typed by its
    ``resourceType``)."""
    if type == "Resource" and value.__class__ is dict:
        kind = value.get("resourceType")
        return (kind if kind.__class__ is str else "Resource", value)
    return (type, value)


class Compiler:
    """Compiles an AST against the element model; ``functions`` (a table of compilers of
    function calls, :mod:`server.fhir.fhirpath_functions`) is consulted for ``name(...)``."""

    def __init__(self, model: ElementModel, terminology: Terminology | None) -> None:
        self.model = model
        self.terminology = terminology
        self._members: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    # -- types -----------------------------------------------------------------------------

    def matches_type(self, node_type: str, name: str) -> bool:
        """Whether a value of ``node_type`` is a value of the type specifier ``name``."""
        bare = name.removeprefix("FHIR.")
        if bare.startswith("System."):
            return node_type in _SYSTEM_TYPES.get(bare[7:], ())
        if bare in self.model.ancestors(node_type):
            return True
        return bare in _SYSTEM_TYPES and node_type in _SYSTEM_TYPES[bare]

    def check_type(self, name: str) -> None:
        bare = name.removeprefix("FHIR.").removeprefix("System.")
        if not (
            self.model.known(bare)
            or bare in _SYSTEM_TYPES
            or bare in ("Resource", "DomainResource", "Element", "BackboneElement")
            or bare in ("SimpleQuantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity")
        ):
            raise FhirPathError(f"unknown type {name!r}")

    def narrow(self, types: Types, name: str) -> Types:
        if types is None:
            return None
        return frozenset(t for t in types if self.matches_type(t, name))

    def variants(self, type: str, name: str) -> tuple[tuple[str, str], ...]:
        key = (type, name)
        found = self._members.get(key)
        if found is None:
            table = self.model.elements(type)
            info = table.get(name) or table.get(f"{name}[x]")
            found = () if info is None else info.variants
            self._members[key] = found
        return found

    # -- compiling -------------------------------------------------------------------------

    def compile(self, tree: Ast, inputs: Compiled) -> Compiled:
        kind = tree[0]
        if kind == "this":
            return inputs
        if kind == "variable":
            if tree[1] not in ("resource", "rootResource", "context"):
                raise FhirPathError(f"unsupported variable %{tree[1]}")
            if tree[1] == "context":
                return inputs

            def resource(nodes: list[Node], root: Node | None) -> list[Node]:
                return [] if root is None else [root]

            return Compiled(resource, None)
        if kind == "literal":
            node: Node = (tree[1], tree[2])
            return Compiled(lambda nodes, root: [node], frozenset((tree[1],)))
        if kind == "empty":
            return Compiled(_nothing, frozenset())
        if kind == "member":
            return self.member(tree[1], tree[2], inputs)
        if kind == "index":
            return self.index(tree, inputs)
        if kind in ("is", "as"):
            from server.fhir.fhirpath_functions import type_test

            return type_test(self, kind, self.compile(tree[1], inputs), tree[2])
        if kind == "call":
            from server.fhir.fhirpath_functions import call

            return call(self, tree[2], tree[1], tree[3], inputs)
        if kind == "binary":
            return self.binary(tree[1], tree[2], tree[3], inputs)
        raise FhirPathError(f"unsupported FHIRPath construct {kind}")

    def member(self, base_tree: Ast, name: str, inputs: Compiled) -> Compiled:
        source = self.compile(base_tree, inputs)
        if base_tree == ("this",) and name[:1].isupper():
            self.check_type(name)
            return self.filter(source, name)
        if source.types is not None:
            out_types = {t for type in source.types for _, t in self.variants(type, name)}
            if not out_types and source.types:
                raise FhirPathError(
                    f"{name!r} is not an element of {', '.join(sorted(source.types))}"
                )
            types: Types = frozenset(out_types)
            if "Resource" in out_types:
                types = None
        else:
            types = None
        pull = source.run
        variants = self.variants

        def member(nodes: list[Node], root: Node | None) -> list[Node]:
            out: list[Node] = []
            for type, value in pull(nodes, root):
                if value.__class__ is not dict:
                    continue
                for key, child_type in variants(type, name):
                    child = value.get(key)
                    if child is None:
                        continue
                    if child.__class__ is list:
                        out.extend(node_of(child_type, item) for item in child if item is not None)
                    else:
                        out.append(node_of(child_type, child))
            return out

        return Compiled(member, types)

    def filter(self, source: Compiled, name: str) -> Compiled:
        pull = source.run
        matches = self.matches_type

        def of_type(nodes: list[Node], root: Node | None) -> list[Node]:
            return [node for node in pull(nodes, root) if matches(node[0], name)]

        return Compiled(of_type, self.narrow(source.types, name))

    def index(self, tree: Ast, inputs: Compiled) -> Compiled:
        source = self.compile(tree[1], inputs).run
        position = self.compile(tree[2], inputs).run

        def indexed(nodes: list[Node], root: Node | None) -> list[Node]:
            at = position(nodes, root)
            if len(at) != 1 or at[0][1].__class__ is not int:
                return []
            i: int = at[0][1]
            found = source(nodes, root)
            return found[i : i + 1] if i >= 0 else []

        return Compiled(indexed, self.compile(tree[1], inputs).types)

    def binary(self, op: str, left_tree: Ast, right_tree: Ast, inputs: Compiled) -> Compiled:
        left = self.compile(left_tree, inputs)
        right = self.compile(right_tree, inputs)
        a, b = left.run, right.run
        bool_types = frozenset(("boolean",))
        if op in ("and", "or", "xor", "implies"):
            return Compiled(_logic(op, a, b), bool_types)
        if op == "|":

            def union(nodes: list[Node], root: Node | None) -> list[Node]:
                return distinct(a(nodes, root) + b(nodes, root))

            types = None if left.types is None or right.types is None else left.types | right.types
            return Compiled(union, types)
        test = _TESTS.get(op)
        if test is not None:
            return Compiled(lambda nodes, root: test(a(nodes, root), b(nodes, root)), bool_types)
        arithmetic = _ARITHMETIC.get(op)
        if arithmetic is not None:
            return Compiled(lambda nodes, root: arithmetic(a(nodes, root), b(nodes, root)), None)
        raise FhirPathError(f"unsupported operator {op!r}")


def _logic(op: str, a: Run, b: Run) -> Run:
    """Three-valued ``and``/``or``/``xor``/``implies`` (the right side is evaluated only
    when the left side does not decide)."""

    def logic(nodes: list[Node], root: Node | None) -> list[Node]:
        x = truth(a(nodes, root))
        if op == "and":
            if x is False:
                return [("boolean", False)]
            y = truth(b(nodes, root))
            return boolean(False if y is False else None if x is None or y is None else True)
        if op == "or":
            if x is True:
                return [("boolean", True)]
            y = truth(b(nodes, root))
            return boolean(True if y is True else None if x is None or y is None else False)
        if op == "implies":
            if x is False:
                return [("boolean", True)]
            y = truth(b(nodes, root))
            if y is True:
                return [("boolean", True)]
            return boolean(None if x is None or y is None else False)
        y = truth(b(nodes, root))
        return boolean(None if x is None or y is None else x != y)

    return logic


def _membership(left: list[Node], right: list[Node]) -> list[Node]:
    if not left:
        return []
    if len(left) != 1:
        return []
    return [("boolean", any(equal(left, [item]) is True for item in right))]


def _order(test: Callable[[int], bool]) -> Callable[[list[Node], list[Node]], list[Node]]:
    def ordered(left: list[Node], right: list[Node]) -> list[Node]:
        result = compare(left, right)
        return [] if result is None else [("boolean", test(result))]

    return ordered


def _not_equal(left: list[Node], right: list[Node]) -> list[Node]:
    same = equal(left, right)
    return boolean(None if same is None else not same)


_TESTS: dict[str, Callable[[list[Node], list[Node]], list[Node]]] = {
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


def _numbers(op: str) -> Callable[[list[Node], list[Node]], list[Node]]:
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


_ARITHMETIC = {op: _numbers(op) for op in ("+", "-", "*", "/", "div", "mod", "&")}


_CONCAT = _numbers("&")


def _string_concat(left: list[Node], right: list[Node]) -> list[Node]:
    """``&``: string concatenation in which an empty operand counts as ``''``."""
    return _CONCAT(left or [("string", "")], right or [("string", "")])


_ARITHMETIC["&"] = _string_concat


def compile_fhirpath(
    expression: str, context_type: str, terminology: Terminology | None = None
) -> Evaluator:
    """Compile ``expression`` evaluated on a JSON value of ``context_type`` (a resource type,
    datatype or backbone definition name). ``terminology`` serves ``memberOf``."""
    try:
        tree = parse(expression)
    except FhirPathSyntaxError as error:
        raise FhirPathError(str(error)) from None
    return compile_tree(tree, context_type, terminology)


def compile_tree(tree: Ast, context_type: str, terminology: Terminology | None = None) -> Evaluator:
    """``compile_fhirpath`` of an expression already parsed (or of a part of one)."""
    model = element_model()
    if not model.known(context_type) and context_type != "Resource":
        raise FhirPathError(f"unknown context type {context_type!r}")
    start = Compiled(_input, None if context_type == "Resource" else frozenset((context_type,)))
    run = Compiler(model, terminology).compile(tree, start).run

    def evaluate(focus: Any, resource: Any) -> list[Node]:
        root = node_of("Resource", resource) if resource.__class__ is dict else None
        return run([node_of(context_type, focus)], root)

    return evaluate
