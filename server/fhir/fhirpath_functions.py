"""The FHIRPath functions the invariant compiler supports, each compiled to a closure.

Existence: ``exists([criterion])``, ``empty()``, ``count()``, ``all(criterion)``,
``allTrue()``, ``anyTrue()``, ``allFalse()``, ``anyFalse()``, ``isDistinct()``,
``distinct()``, ``hasValue()``. Filtering: ``where``, ``select``, ``ofType``, ``is``, ``as``,
``extension(url)``. Subsetting: ``first``, ``last``, ``tail``, ``single``. Logic and
branching: ``not()``, ``iif(criterion, then[, else])``. Strings: ``startsWith``,
``endsWith``, ``contains``, ``matches``, ``length``, ``lower``, ``upper``. Terminology:
``memberOf(url)`` (a literal URL of a ValueSet the Terminology knows; a code is a member when
some code of the expansion has that code, a Coding when its system and code are in it, a
CodeableConcept when one of its codings is). Any other function raises ``FhirPathError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.fhir.fhirpath_syntax import Ast
from server.fhir.fhirpath_values import Node, boolean, distinct, truth
from server.fhir.invariants import Compiled, FhirPathError, Run

if TYPE_CHECKING:
    from server.fhir.invariants import Compiler

_BOOL = frozenset(("boolean",))
_STRING_TYPES = frozenset(("string", "code", "id", "markdown", "uri", "url", "canonical", "uuid"))


def type_test(compiler: Compiler, kind: str, source: Compiled, name: str) -> Compiled:
    """``x is T`` (one value, true when of type T) and ``x as T`` (the values of type T)."""
    compiler.check_type(name)
    if kind == "as":
        return compiler.filter(source, name)
    pull = source.run
    matches = compiler.matches_type

    def is_a(nodes: list[Node], root: Node | None) -> list[Node]:
        found = pull(nodes, root)
        return [("boolean", matches(found[0][0], name))] if len(found) == 1 else []

    return Compiled(is_a, _BOOL)


def _per_item(
    compiler: Compiler, source: Compiled, tree: Ast
) -> Callable[[Node, Node | None], list[Node]]:
    """``tree`` compiled to run on one item of ``source`` (``$this``)."""
    run = compiler.compile(tree, Compiled(lambda nodes, root: nodes, source.types)).run
    return lambda node, root: run([node], root)


def _literal_string(args: tuple[Ast, ...], name: str) -> str:
    if len(args) != 1 or args[0][0] != "literal" or args[0][1] != "string":
        raise FhirPathError(f"{name}() takes one string literal")
    value: str = args[0][2]
    return value


def call(
    compiler: Compiler, name: str, base_tree: Ast, args: tuple[Ast, ...], inputs: Compiled
) -> Compiled:
    source = compiler.compile(base_tree, inputs)
    pull = source.run
    if name in ("ofType", "is", "as"):
        if len(args) != 1 or args[0][0] != "type":
            raise FhirPathError(f"{name}() takes one type")
        return type_test(compiler, "as" if name == "ofType" else name, source, args[0][1])
    if name in ("where", "select", "all", "exists") and args:
        if len(args) != 1:
            raise FhirPathError(f"{name}() takes one argument")
        each = _per_item(compiler, source, args[0])
        return _iterate(name, pull, each, source)
    if name == "iif":
        return _iif(compiler, args, inputs, pull)
    if name == "extension":
        url = _literal_string(args, name)

        def extension(nodes: list[Node], root: Node | None) -> list[Node]:
            out: list[Node] = []
            for _, value in pull(nodes, root):
                if value.__class__ is dict:
                    for item in value.get("extension") or ():
                        if item.__class__ is dict and item.get("url") == url:
                            out.append(("Extension", item))
            return out

        return Compiled(extension, frozenset(("Extension",)))
    if name == "memberOf":
        return _member_of(compiler, _literal_string(args, name), pull)
    if name in _STRING_FUNCTIONS:
        return _string_function(compiler, name, args, inputs, pull)
    if args:
        raise FhirPathError(f"unsupported FHIRPath function {name}() with arguments")
    simple = _SIMPLE.get(name)
    if simple is None:
        raise FhirPathError(f"unsupported FHIRPath function {name}()")
    fn, same_types = simple
    return Compiled(lambda nodes, root: fn(pull(nodes, root)), source.types if same_types else None)


def _iterate(
    name: str, pull: Run, each: Callable[[Node, Node | None], list[Node]], source: Compiled
) -> Compiled:
    if name == "where":

        def where(nodes: list[Node], root: Node | None) -> list[Node]:
            return [node for node in pull(nodes, root) if truth(each(node, root)) is True]

        return Compiled(where, source.types)
    if name == "select":

        def select(nodes: list[Node], root: Node | None) -> list[Node]:
            out: list[Node] = []
            for node in pull(nodes, root):
                out += each(node, root)
            return out

        return Compiled(select, None)
    if name == "all":

        def all_(nodes: list[Node], root: Node | None) -> list[Node]:
            return [("boolean", all(truth(each(n, root)) is True for n in pull(nodes, root)))]

        return Compiled(all_, _BOOL)

    def exists(nodes: list[Node], root: Node | None) -> list[Node]:
        return [("boolean", any(truth(each(n, root)) is True for n in pull(nodes, root)))]

    return Compiled(exists, _BOOL)


def _iif(compiler: Compiler, args: tuple[Ast, ...], inputs: Compiled, pull: Run) -> Compiled:
    if len(args) not in (2, 3):
        raise FhirPathError("iif() takes a criterion, a result and an optional otherwise")
    item = Compiled(lambda nodes, root: nodes, None)
    test = compiler.compile(args[0], item).run
    then = compiler.compile(args[1], item).run
    otherwise = compiler.compile(args[2], item).run if len(args) == 3 else None

    def iif(nodes: list[Node], root: Node | None) -> list[Node]:
        focus = pull(nodes, root)
        if truth(test(focus, root)) is True:
            return then(focus, root)
        return otherwise(focus, root) if otherwise is not None else []

    return Compiled(iif, None)


def _member_of(compiler: Compiler, url: str, pull: Run) -> Compiled:
    terminology = compiler.terminology
    if terminology is None or (
        terminology.valueset(url) is None and terminology.expand(url) is None
    ):
        raise FhirPathError(f"memberOf(): unknown ValueSet {url}")
    codes = terminology.expand(url)
    bare = frozenset(code for _, code in codes or ())

    def member(node: Node) -> bool | None:
        type, value = node
        if codes is None:
            return None
        if value.__class__ is str:
            return value in bare
        if value.__class__ is not dict:
            return None
        if type == "CodeableConcept" or "coding" in value:
            codings = value.get("coding") or []
        else:
            codings = [value]
        return any(
            c.__class__ is dict and (c.get("system"), c.get("code")) in codes for c in codings
        )

    def member_of(nodes: list[Node], root: Node | None) -> list[Node]:
        found = pull(nodes, root)
        return boolean(member(found[0])) if len(found) == 1 else []

    return Compiled(member_of, _BOOL)


def _text(nodes: list[Node]) -> str | None:
    if len(nodes) != 1 or nodes[0][1].__class__ is not str:
        return None
    value: str = nodes[0][1]
    return value


_STRING_FUNCTIONS: dict[str, Callable[[str, str], Any]] = {
    "startsWith": lambda s, arg: s.startswith(arg),
    "endsWith": lambda s, arg: s.endswith(arg),
    "contains": lambda s, arg: arg in s,
    "matches": lambda s, arg: re.search(arg, s, re.DOTALL) is not None,
}


def _string_function(
    compiler: Compiler, name: str, args: tuple[Ast, ...], inputs: Compiled, pull: Run
) -> Compiled:
    if len(args) != 1:
        raise FhirPathError(f"{name}() takes one argument")
    argument = compiler.compile(args[0], inputs).run
    fn = _STRING_FUNCTIONS[name]
    if name == "matches" and args[0][0] == "literal":
        try:
            re.compile(args[0][2])
        except re.error as error:
            raise FhirPathError(f"matches(): invalid regular expression: {error}") from None

    def string_function(nodes: list[Node], root: Node | None) -> list[Node]:
        text, arg = _text(pull(nodes, root)), _text(argument(nodes, root))
        if text is None or arg is None:
            return []
        return [("boolean", bool(fn(text, arg)))]

    return Compiled(string_function, _BOOL)


def _not(nodes: list[Node]) -> list[Node]:
    value = truth(nodes)
    return [] if value is None else [("boolean", not value)]


def _has_value(nodes: list[Node]) -> list[Node]:
    return [("boolean", len(nodes) == 1 and nodes[0][1].__class__ is not dict)]


def _all_of(want: bool, every: bool) -> Callable[[list[Node]], list[Node]]:
    def test(nodes: list[Node]) -> list[Node]:
        values = [value is want for _, value in nodes if value.__class__ is bool]
        return [("boolean", all(values) if every else any(values))]

    return test


def _string_map(fn: Callable[[str], Any], type: str) -> Callable[[list[Node]], list[Node]]:
    def mapped(nodes: list[Node]) -> list[Node]:
        text = _text(nodes)
        return [] if text is None else [(type, fn(text))]

    return mapped


_SIMPLE: dict[str, tuple[Callable[[list[Node]], list[Node]], bool]] = {
    "exists": (lambda nodes: [("boolean", bool(nodes))], False),
    "empty": (lambda nodes: [("boolean", not nodes)], False),
    "count": (lambda nodes: [("integer", len(nodes))], False),
    "first": (lambda nodes: nodes[:1], True),
    "last": (lambda nodes: nodes[-1:], True),
    "tail": (lambda nodes: nodes[1:], True),
    "single": (lambda nodes: nodes if len(nodes) == 1 else [], True),
    "distinct": (distinct, True),
    "isDistinct": (lambda nodes: [("boolean", len(distinct(nodes)) == len(nodes))], False),
    "not": (_not, False),
    "hasValue": (_has_value, False),
    "allTrue": (_all_of(True, True), False),
    "anyTrue": (_all_of(True, False), False),
    "allFalse": (_all_of(False, True), False),
    "anyFalse": (_all_of(False, False), False),
    "length": (_string_map(len, "integer"), False),
    "lower": (_string_map(str.lower, "string"), False),
    "upper": (_string_map(str.upper, "string"), False),
}
