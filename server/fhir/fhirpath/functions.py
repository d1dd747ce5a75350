"""The FHIRPath functions of the engine, each compiled to a closure.

Existence: ``exists([criterion])``, ``empty()``, ``count()``, ``all(criterion)``,
``allTrue()``, ``anyTrue()``, ``allFalse()``, ``anyFalse()``, ``isDistinct()``,
``distinct()``, ``hasValue()``. Filtering: ``where``, ``select``, ``ofType``, ``is``, ``as``,
``extension(url)``. Subsetting: ``first``, ``last``, ``tail``, ``single``, ``skip(n)``,
``take(n)``. Logic and branching: ``not()``, ``iif(criterion, then[, else])``. Strings:
``startsWith``, ``endsWith``, ``contains``, ``matches``, ``length``, ``lower``, ``upper``.
Terminology: ``memberOf(url)`` (a literal URL of a ValueSet the Terminology knows; a code is a
member when some code of the expansion has that code, a Coding when its system and code are
in it, a CodeableConcept when one of its codings is). ``resolve()`` is understood only in
``where(resolve() is T [or resolve() is U ...])`` (the compiler's ``where``).

A function compiler takes the :class:`Scope` compiling the expression, the compiled input,
the argument trees and the compiled focus the call is made in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from server.fhir.fhirpath.errors import FhirPathError
from server.fhir.fhirpath.navigation import Compiled, Run, keep_types, same
from server.fhir.fhirpath.operators import BOOLEAN
from server.fhir.fhirpath.parser import Ast
from server.fhir.fhirpath.values import Node, boolean, distinct, truth

if TYPE_CHECKING:
    from server.fhir.fhirpath.type_model import TypeModel
    from server.fhir.terminology import Terminology

_INTEGER = frozenset(("integer",))
_STRING = frozenset(("string",))


class Scope(Protocol):
    """What function compilers need of the compiler."""

    model: TypeModel
    terminology: Terminology | None

    def compile(self, tree: Ast, inputs: Compiled) -> Compiled: ...

    def member(self, source: Compiled, name: str) -> Compiled: ...

    def where(self, source: Compiled, criterion: Ast) -> Compiled: ...


Function = Callable[[Scope, Compiled, tuple[Ast, ...], Compiled], Compiled]


def _arity(name: str, args: tuple[Ast, ...], *allowed: int) -> None:
    if len(args) not in allowed:
        if allowed == (0,):
            raise FhirPathError(f"unsupported FHIRPath function {name}() with arguments")
        raise FhirPathError(f"{name}() takes {' or '.join(map(str, allowed))} argument(s)")


def _item(scope: Scope, source: Compiled, tree: Ast) -> Run:
    """``tree`` compiled to run on the collection of one item of ``source`` (``$this``)."""
    return scope.compile(tree, Compiled(same, source.types, identity=True)).run


def _type_argument(name: str, args: tuple[Ast, ...]) -> str:
    if len(args) != 1 or args[0][0] != "type":
        raise FhirPathError(f"{name}() takes one type")
    type_name: str = args[0][1]
    return type_name


def _literal_string(name: str, args: tuple[Ast, ...]) -> str:
    if len(args) != 1 or args[0][0] != "literal" or args[0][1] != "string":
        raise FhirPathError(f"{name}() takes one string literal")
    value: str = args[0][2]
    return value


def is_type(scope: Scope, source: Compiled, name: str) -> Compiled:
    """``x is T``: one value, true when it is of type T (empty unless one value)."""
    allowed = scope.model.type_set(name)
    pull = source.run

    def is_a(nodes: list[Node], resource: Any) -> list[Node]:
        found = pull(nodes, resource)
        return [("boolean", found[0][0] in allowed)] if len(found) == 1 else []

    return Compiled(is_a, BOOLEAN)


def as_type(scope: Scope, source: Compiled, name: str) -> Compiled:
    """``x as T``, ``x.ofType(T)``: the values of type T."""
    return keep_types(source, scope.model.type_set(name), scope.model)


def _of_type(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    return as_type(scope, source, _type_argument("ofType", args))


def _as(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    return as_type(scope, source, _type_argument("as", args))


def _is(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    return is_type(scope, source, _type_argument("is", args))


def _where(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    if len(args) != 1:
        raise FhirPathError("where() takes one argument")
    return scope.where(source, args[0])


def _exists(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    _arity("exists", args, 0, 1)
    if args:
        source = scope.where(source, args[0])
    pull = source.run

    def exists(nodes: list[Node], resource: Any) -> list[Node]:
        return [("boolean", bool(pull(nodes, resource)))]

    return Compiled(exists, BOOLEAN)


def _select(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    if len(args) != 1:
        raise FhirPathError("select() takes one argument")
    pull = source.run
    item = Compiled(same, source.types, identity=True)
    projection = scope.compile(args[0], item)
    each = projection.run

    def select(nodes: list[Node], resource: Any) -> list[Node]:
        out: list[Node] = []
        for node in pull(nodes, resource):
            out += each([node], resource)
        return out

    return Compiled(select, projection.types)


def _all(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    if len(args) != 1:
        raise FhirPathError("all() takes one argument")
    pull, each = source.run, _item(scope, source, args[0])

    def all_(nodes: list[Node], resource: Any) -> list[Node]:
        return [("boolean", all(truth(each([n], resource)) is True for n in pull(nodes, resource)))]

    return Compiled(all_, BOOLEAN)


def _iif(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    if len(args) not in (2, 3):
        raise FhirPathError("iif() takes a criterion, a result and an optional otherwise")
    pull = source.run
    item = Compiled(same, source.types, identity=True)
    test = scope.compile(args[0], item).run
    then = scope.compile(args[1], item)
    otherwise = scope.compile(args[2], item) if len(args) == 3 else None
    when_true, when_false = then.run, otherwise.run if otherwise is not None else None

    def iif(nodes: list[Node], resource: Any) -> list[Node]:
        focus = pull(nodes, resource)
        if truth(test(focus, resource)) is True:
            return when_true(focus, resource)
        return when_false(focus, resource) if when_false is not None else []

    types = then.types | (otherwise.types if otherwise is not None else frozenset())
    return Compiled(iif, types)


def _extension(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    """``extension(url)``: ``extension.where(url = url)``."""
    url = ("literal", "string", _literal_string("extension", args))
    extensions = scope.member(source, "extension")
    return scope.where(extensions, ("binary", "=", ("member", ("this",), "url"), url))


def _member_of(scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
    url = _literal_string("memberOf", args)
    terminology = scope.terminology
    if terminology is None or (
        terminology.valueset(url) is None and terminology.expand(url) is None
    ):
        raise FhirPathError(f"memberOf(): unknown ValueSet {url}")
    codes = terminology.expand(url)
    bare = frozenset(code for _, code in codes or ())
    pull = source.run

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

    def member_of(nodes: list[Node], resource: Any) -> list[Node]:
        found = pull(nodes, resource)
        return boolean(member(found[0])) if len(found) == 1 else []

    return Compiled(member_of, BOOLEAN)


def _text(nodes: list[Node]) -> str | None:
    if len(nodes) != 1 or nodes[0][1].__class__ is not str:
        return None
    value: str = nodes[0][1]
    return value


_STRING_TESTS: Mapping[str, Callable[[str, str], Any]] = {
    "startsWith": lambda s, arg: s.startswith(arg),
    "endsWith": lambda s, arg: s.endswith(arg),
    "contains": lambda s, arg: arg in s,
    "matches": lambda s, arg: re.search(arg, s, re.DOTALL) is not None,
}


def _string_test(name: str) -> Function:
    test = _STRING_TESTS[name]

    def compile_test(
        scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled
    ) -> Compiled:
        if len(args) != 1:
            raise FhirPathError(f"{name}() takes one argument")
        if name == "matches" and args[0][0] == "literal":
            try:
                re.compile(args[0][2])
            except re.error as error:
                raise FhirPathError(f"matches(): invalid regular expression: {error}") from None
        pull, argument = source.run, scope.compile(args[0], inputs).run

        def string_test(nodes: list[Node], resource: Any) -> list[Node]:
            text, arg = _text(pull(nodes, resource)), _text(argument(nodes, resource))
            if text is None or arg is None:
                return []
            return [("boolean", bool(test(text, arg)))]

        return Compiled(string_test, BOOLEAN)

    return compile_test


def _slice(name: str) -> Function:
    """``skip(n)`` and ``take(n)`` with an integer argument."""

    def compile_slice(
        scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled
    ) -> Compiled:
        if len(args) != 1:
            raise FhirPathError(f"{name}() takes one argument")
        pull, argument = source.run, scope.compile(args[0], inputs).run

        def sliced(nodes: list[Node], resource: Any) -> list[Node]:
            count = argument(nodes, resource)
            if len(count) != 1 or count[0][1].__class__ is not int:
                return []
            n: int = count[0][1]
            found = pull(nodes, resource)
            if name == "skip":
                return found[max(n, 0) :]
            return found[: max(n, 0)]

        return Compiled(sliced, source.types)

    return compile_slice


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


def _first(nodes: list[Node]) -> list[Node]:
    return nodes[:1]


def _last(nodes: list[Node]) -> list[Node]:
    return nodes[-1:]


# functions of the input collection alone: (function, output types; None: the input's types)
_OF_COLLECTION: Mapping[str, tuple[Callable[[list[Node]], list[Node]], frozenset[str] | None]] = {
    "empty": (lambda nodes: [("boolean", not nodes)], BOOLEAN),
    "count": (lambda nodes: [("integer", len(nodes))], _INTEGER),
    "first": (_first, None),
    "last": (_last, None),
    "tail": (lambda nodes: nodes[1:], None),
    "single": (lambda nodes: nodes if len(nodes) == 1 else [], None),
    "distinct": (distinct, None),
    "isDistinct": (lambda nodes: [("boolean", len(distinct(nodes)) == len(nodes))], BOOLEAN),
    "not": (_not, BOOLEAN),
    "hasValue": (_has_value, BOOLEAN),
    "allTrue": (_all_of(True, True), BOOLEAN),
    "anyTrue": (_all_of(True, False), BOOLEAN),
    "allFalse": (_all_of(False, True), BOOLEAN),
    "anyFalse": (_all_of(False, False), BOOLEAN),
    "length": (_string_map(len, "integer"), _INTEGER),
    "lower": (_string_map(str.lower, "string"), _STRING),
    "upper": (_string_map(str.upper, "string"), _STRING),
}


def _of_collection(name: str) -> Function:
    fn, types = _OF_COLLECTION[name]

    def compile_function(
        scope: Scope, source: Compiled, args: tuple[Ast, ...], inputs: Compiled
    ) -> Compiled:
        _arity(name, args, 0)
        pull = source.run

        def function(nodes: list[Node], resource: Any) -> list[Node]:
            return fn(pull(nodes, resource))

        return Compiled(function, source.types if types is None else types)

    return compile_function


FUNCTIONS: Mapping[str, Function] = {
    "ofType": _of_type,
    "as": _as,
    "is": _is,
    "where": _where,
    "exists": _exists,
    "select": _select,
    "all": _all,
    "iif": _iif,
    "extension": _extension,
    "memberOf": _member_of,
    "skip": _slice("skip"),
    "take": _slice("take"),
    **{name: _string_test(name) for name in _STRING_TESTS},
    **{name: _of_collection(name) for name in _OF_COLLECTION},
}
