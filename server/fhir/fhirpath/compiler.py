"""The FHIRPath compiler: an expression on a JSON value of a FHIR type becomes a closure.

``compile_fhirpath(expression, context_type, terminology)`` compiles an invariant (or any
expression of the supported language); ``compile_search_expression(expression, context)``
compiles a SearchParameter expression in the subset index extraction uses;
``compile_tree`` compiles a parsed expression (FHIRPath Patch). Each returns an evaluator
``(focus, resource) -> collection`` of typed nodes (:mod:`server.fhir.fhirpath.values`),
``resource`` being the root resource ``%resource`` stands for. ``search_root_keys`` tells
which properties of its context a SearchParameter expression needs to select anything.

Element types come from the R4 schema (:mod:`server.fhir.fhirpath.type_model`): every value
comes out labelled with its FHIR type (``("Quantity", {...})``, ``("date", "1980-01-01")``),
choice elements (``value[x]``) are read from their typed JSON names (``valueQuantity``), and
``ofType``/``as``/``is`` are decided while compiling wherever the types are known. A leading
type name filters the focus (``Condition.code`` selects nothing on an Observation);
``Resource``/``DomainResource`` as the context means the focus's own ``resourceType`` decides.

Supported: paths, indexers, ``{}``, string/number/boolean/date/dateTime/time literals,
``$this``, ``%resource`` (also ``%rootResource``), ``%context`` outside function arguments,
the operators of :mod:`server.fhir.fhirpath.operators` and the functions of
:mod:`server.fhir.fhirpath.functions`. Anything else, a member no possible type has, or an
unknown type raises ``FhirPathError`` (a ``ValueError``) at compile time; evaluation never
raises: values of an unexpected shape are skipped.

The search subset (:data:`SEARCH`) is what an index row can be made of: values of the resource
selected by paths, filtered with ``where``, ``exists``, ``empty``, ``not``, ``first``,
``last``, ``ofType``, ``as``, ``is``, ``extension`` and ``where(resolve() is T)``, on a
resource, datatype or backbone element (``%resource`` only); any other function (``select``,
``count``...) or a primitive context refuses the parameter at compile time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from server.fhir.fhirpath.errors import FhirPathError
from server.fhir.fhirpath.functions import FUNCTIONS, as_type, is_type
from server.fhir.fhirpath.navigation import EMPTY, Compiled, member, nothing, same
from server.fhir.fhirpath.operators import (
    ARITHMETIC,
    ARITHMETIC_TYPES,
    BOOLEAN,
    TESTS,
    logic,
    union,
)
from server.fhir.fhirpath.parser import Ast, parse
from server.fhir.fhirpath.type_model import TypeModel, type_model
from server.fhir.fhirpath.values import Node, truth
from server.fhir.references import reference_type

if TYPE_CHECKING:
    from server.fhir.terminology import Terminology

__all__ = [
    "FULL",
    "SEARCH",
    "Evaluator",
    "Subset",
    "compile_fhirpath",
    "compile_search_expression",
    "compile_tree",
    "output_types",
    "search_root_keys",
]

Evaluator = Callable[[Any, Any], list[Node]]  # (focus JSON, root resource JSON) -> collection


@dataclass(frozen=True, slots=True)
class Subset:
    """The part of the language a caller accepts: functions and ``%`` variables (None: all
    the engine has), and whether the context may be a primitive type."""

    functions: frozenset[str] | None
    variables: frozenset[str]
    primitive_context: bool


FULL = Subset(None, frozenset({"resource", "rootResource", "context"}), True)
SEARCH = Subset(
    frozenset(
        {"where", "exists", "empty", "not", "first", "last", "ofType", "as", "is", "extension"}
    ),
    frozenset({"resource", "rootResource"}),
    False,
)


def _reference_type(value: Any, resource: Any) -> str | None:
    """The resource type a Reference points at, from its ``reference`` (or a contained one)."""
    if value.__class__ is not dict:
        return None
    text = value.get("reference")
    if text.__class__ is not str:
        return None
    if text.startswith("#"):
        if resource.__class__ is not dict:
            return None
        if text == "#":
            kind = resource.get("resourceType")
            return kind if kind.__class__ is str else None
        contained = resource.get("contained")
        if contained.__class__ is list:
            for item in contained:
                if item.__class__ is dict and item.get("id") == text[1:]:
                    kind = item.get("resourceType")
                    return kind if kind.__class__ is str else None
        return None
    return reference_type(text)


_RESOLVE = ("call", ("this",), "resolve", ())


def _resolve_types(tree: Ast, model: TypeModel) -> frozenset[str] | None:
    """The types of ``resolve() is A or resolve() is B ...``, or None for anything else."""
    if tree[0] == "is" and tree[1] == _RESOLVE:
        return model.type_set(tree[2])
    if tree[0] == "call" and tree[2] == "is" and tree[1] == _RESOLVE and tree[3][:1]:
        return model.type_set(tree[3][0][1])
    if tree[0] == "binary" and tree[1] == "or":
        left = _resolve_types(tree[2], model)
        right = _resolve_types(tree[3], model)
        if left is not None and right is not None:
            return left | right
    return None


def _union_terms(tree: Ast) -> list[Ast]:
    if tree[0] == "binary" and tree[1] == "|":
        return _union_terms(tree[2]) + _union_terms(tree[3])
    return [tree]


class Compiler:
    """Compiles the AST of one expression on values of ``context_types``."""

    def __init__(
        self,
        model: TypeModel,
        context_types: frozenset[str],
        subset: Subset,
        terminology: Terminology | None,
    ) -> None:
        self.model = model
        self.context_types = context_types
        self.subset = subset
        self.terminology = terminology
        self.start = Compiled(same, context_types, identity=True)

    def compile(self, tree: Ast, inputs: Compiled) -> Compiled:
        kind = tree[0]
        if kind == "this":
            return inputs
        if kind == "member":
            return self.path(tree[1], tree[2], inputs)
        if kind == "call":
            return self.call(tree[2], tree[1], tree[3], inputs)
        if kind == "literal":
            node: Node = (tree[1], tree[2])

            def literal(nodes: list[Node], resource: Any) -> list[Node]:
                return [node]

            return Compiled(literal, frozenset((tree[1],)))
        if kind == "binary":
            return self.binary(tree, inputs)
        if kind == "variable":
            return self.variable(tree[1], inputs)
        if kind == "empty":
            return EMPTY
        if kind == "index":
            return self.index(self.compile(tree[1], inputs), tree[2], inputs)
        if kind == "is":
            return is_type(self, self.compile(tree[1], inputs), tree[2])
        if kind == "as":
            return as_type(self, self.compile(tree[1], inputs), tree[2])
        raise FhirPathError(f"unsupported FHIRPath construct {kind}")

    # -- terms -----------------------------------------------------------------------------

    def variable(self, name: str, inputs: Compiled) -> Compiled:
        if name not in self.subset.variables:
            raise FhirPathError(f"unsupported variable %{name}")
        if name == "context":
            if inputs is not self.start:
                raise FhirPathError("%context is supported only outside function arguments")
            return inputs
        return self.resource()

    def resource(self) -> Compiled:
        """``%resource``: the root resource, typed by its ``resourceType`` (one of the
        resource types owning the context, when known)."""
        owners = frozenset(t.split("_", 1)[0] for t in self.context_types)
        static = owners & self.model.resources or self.model.resources
        only = next(iter(static)) if len(static) == 1 else None

        def root(nodes: list[Node], resource: Any) -> list[Node]:
            if resource.__class__ is not dict:
                return []
            kind = resource.get("resourceType", only)
            return [(kind, resource)] if kind.__class__ is str and kind in static else []

        return Compiled(root, static)

    def path(self, base_tree: Ast, name: str, inputs: Compiled) -> Compiled:
        source = self.compile(base_tree, inputs)
        if base_tree == ("this",) and name[:1].isupper():
            return as_type(self, source, name)
        return self.member(source, name)

    def member(self, source: Compiled, name: str) -> Compiled:
        found = member(source, name, self.model)
        if found is None:
            raise FhirPathError(f"{name!r} is not an element of {', '.join(sorted(source.types))}")
        return found

    def index(self, source: Compiled, index_tree: Ast, inputs: Compiled) -> Compiled:
        pull = source.run
        if index_tree[0] == "literal" and index_tree[1] == "integer":
            at: int = index_tree[2]

            def literal_index(nodes: list[Node], resource: Any) -> list[Node]:
                return pull(nodes, resource)[at : at + 1]

            return Compiled(literal_index, source.types)
        position = self.compile(index_tree, inputs).run

        def indexed(nodes: list[Node], resource: Any) -> list[Node]:
            found = position(nodes, resource)
            if len(found) != 1 or found[0][1].__class__ is not int:
                return []
            i: int = found[0][1]
            return pull(nodes, resource)[i : i + 1] if i >= 0 else []

        return Compiled(indexed, source.types)

    # -- operators -------------------------------------------------------------------------

    def binary(self, tree: Ast, inputs: Compiled) -> Compiled:
        op = tree[1]
        if op == "|":
            return union([self.compile(term, inputs) for term in _union_terms(tree)])
        left = self.compile(tree[2], inputs)
        right = self.compile(tree[3], inputs)
        a, b = left.run, right.run
        if op in ("and", "or", "xor", "implies"):
            return Compiled(logic(op, a, b), BOOLEAN)
        test = TESTS.get(op)
        if test is not None:

            def tested(nodes: list[Node], resource: Any) -> list[Node]:
                return test(a(nodes, resource), b(nodes, resource))

            return Compiled(tested, BOOLEAN)
        arithmetic = ARITHMETIC.get(op)
        if arithmetic is not None:

            def computed(nodes: list[Node], resource: Any) -> list[Node]:
                return arithmetic(a(nodes, resource), b(nodes, resource))

            return Compiled(computed, ARITHMETIC_TYPES[op])
        raise FhirPathError(f"unsupported operator {op!r}")

    # -- functions -------------------------------------------------------------------------

    def call(self, name: str, base_tree: Ast, args: tuple[Ast, ...], inputs: Compiled) -> Compiled:
        allowed = self.subset.functions
        function = FUNCTIONS.get(name)
        if function is None or (allowed is not None and name not in allowed):
            hint = " (supported only as where(resolve() is Type))" if name == "resolve" else ""
            raise FhirPathError(f"unsupported FHIRPath function {name}(){hint}")
        return function(self, self.compile(base_tree, inputs), args, inputs)

    def where(self, source: Compiled, criterion: Ast) -> Compiled:
        """``source.where(criterion)``; ``where(resolve() is T or ...)`` keeps the references
        whose target is of one of the types."""
        targets = _resolve_types(criterion, self.model)
        if targets is not None:
            if source.types and "Reference" not in source.types:
                raise FhirPathError("resolve() needs references")
            return self._resolves(source, targets)
        if not source.types:
            return EMPTY
        pull = source.run
        item = Compiled(same, source.types, identity=True)
        if (
            criterion[0] == "binary"
            and criterion[1] == "="
            and criterion[3][0] == "literal"
            and criterion[3][1] in ("string", "integer", "decimal", "boolean")
        ):
            # where(path = literal): only a single value can equal a single literal
            left = self.compile(criterion[2], item).run
            wanted = criterion[3][2]
            wanted_bool = wanted.__class__ is bool

            def where_equal(nodes: list[Node], resource: Any) -> list[Node]:
                out: list[Node] = []
                for node in pull(nodes, resource):
                    found = left([node], resource)
                    if len(found) == 1:
                        value = found[0][1]
                        if value == wanted and (value.__class__ is bool) == wanted_bool:
                            out.append(node)
                return out

            return Compiled(where_equal, source.types)
        test = self.compile(criterion, item).run

        def where(nodes: list[Node], resource: Any) -> list[Node]:
            return [node for node in pull(nodes, resource) if truth(test([node], resource))]

        return Compiled(where, source.types)

    def _resolves(self, source: Compiled, targets: frozenset[str]) -> Compiled:
        if not source.types:
            return EMPTY
        pull = source.run

        def resolves(nodes: list[Node], resource: Any) -> list[Node]:
            return [
                node
                for node in pull(nodes, resource)
                if node[0] == "Reference" and _reference_type(node[1], resource) in targets
            ]

        return Compiled(resolves, frozenset(("Reference",)))


# -- entry points -----------------------------------------------------------------------------


def _context_types(context: str, model: TypeModel, subset: Subset) -> frozenset[str]:
    if context in ("Resource", "DomainResource"):
        return model.type_set(context)
    if model.is_complex(context) or (subset.primitive_context and model.elements.known(context)):
        return frozenset((context,))
    raise FhirPathError(f"unknown context type {context!r}")


def _compile(tree: Ast, context: str, subset: Subset, terminology: Terminology | None) -> Compiled:
    model = type_model()
    types = _context_types(context, model, subset)
    compiler = Compiler(model, types, subset, terminology)
    return compiler.compile(tree, compiler.start)


def _evaluator(compiled: Compiled, context: str) -> Evaluator:
    run = compiled.run
    if run is nothing:
        return lambda focus, resource: []
    if context in ("Resource", "DomainResource"):
        allowed = type_model().type_set(context)

        def evaluate_resource(focus: Any, resource: Any) -> list[Node]:
            kind = focus.get("resourceType") if focus.__class__ is dict else None
            if kind.__class__ is str and kind in allowed:
                return run([(kind, focus)], resource)
            return []

        return evaluate_resource

    def evaluate(focus: Any, resource: Any) -> list[Node]:
        return run([(context, focus)], resource)

    return evaluate


def compile_tree(tree: Ast, context_type: str, terminology: Terminology | None = None) -> Evaluator:
    """``compile_fhirpath`` of an expression already parsed (or of a part of one)."""
    return _evaluator(_compile(tree, context_type, FULL, terminology), context_type)


def compile_fhirpath(
    expression: str, context_type: str, terminology: Terminology | None = None
) -> Evaluator:
    """Compile ``expression`` evaluated on a JSON value of ``context_type`` (a resource type,
    ``Resource``/``DomainResource``, a datatype or a backbone definition name such as
    ``Observation_Component``). ``terminology`` serves ``memberOf``."""
    return compile_tree(parse(expression), context_type, terminology)


@lru_cache(maxsize=4096)
def _search_compiled(expression: str, context: str) -> Compiled:
    return _compile(parse(expression), context, SEARCH, None)


def compile_search_expression(expression: str, context: str) -> Evaluator:
    """Compile a SearchParameter ``expression`` (the :data:`SEARCH` subset) evaluated on a
    resource of type ``context`` (or ``Resource``/``DomainResource``), or on a datatype or
    backbone element (the roots of a composite's components)."""
    return _evaluator(_search_compiled(expression, context), context)


def output_types(expression: str, context: str) -> frozenset[str]:
    """The FHIR types the values of a SearchParameter ``expression`` on ``context`` can have
    (for instance the contexts in which to compile the components of a composite)."""
    return _search_compiled(expression, context).types


# functions whose output is empty when their input is (``where(resolve() is T)`` included)
_EMPTY_ON_EMPTY = frozenset({"where", "first", "last"})


def search_root_keys(expression: str, context: str) -> frozenset[str] | None:
    """The JSON properties of a value of ``context`` at least one of which it must have for
    the SearchParameter ``expression`` to select anything there (``Observation.value.ofType(
    Quantity) | Observation.component.value.ofType(Quantity)``: ``valueQuantity``,
    ``valueCodeableConcept``... and ``component``; an empty set: it selects nothing on that
    type), so an indexer can pass over the expressions a resource has no data for; None when
    the expression may select something whatever the properties (``%resource``,
    ``exists()``...), and for anything this analysis does not know."""
    try:
        return _root_keys(parse(expression), context, type_model())
    except FhirPathError:
        return None


def _root_keys(
    tree: Ast, context: str, model: TypeModel, allowed: frozenset[str] | None = None
) -> frozenset[str] | None:
    """``allowed``: the types an ``ofType``/``as`` right above ``tree`` keeps."""
    kind = tree[0]
    if kind == "binary" and tree[1] == "|":
        left = _root_keys(tree[2], context, model)
        right = _root_keys(tree[3], context, model)
        return None if left is None or right is None else left | right
    if kind == "member":
        base, name = tree[1], tree[2]
        if base == ("this",):
            return None if name[:1].isupper() else _member_keys(context, name, model, allowed)
        if base[0] == "member" and base[1] == ("this",) and base[2][:1].isupper():
            # ``Type.name``: nothing on a context the type filter drops
            kept = _search_compiled(base[2], context).types
            if not kept:
                return frozenset()
            return _member_keys(context, name, model, allowed) if kept == {context} else None
        return _root_keys(base, context, model)
    if kind == "as" or (kind == "call" and tree[2] in ("ofType", "as") and len(tree[3]) == 1):
        name = tree[2] if kind == "as" else tree[3][0][1]
        return _root_keys(tree[1], context, model, model.type_set(name))
    if kind == "call" and tree[2] == "extension":  # ``extension.where(url = ...)``
        return _root_keys(("member", tree[1], "extension"), context, model)
    if kind == "index" or (kind == "call" and tree[2] in _EMPTY_ON_EMPTY):
        return _root_keys(tree[1], context, model)
    return None


def _member_keys(
    context: str, name: str, model: TypeModel, allowed: frozenset[str] | None
) -> frozenset[str] | None:
    """The JSON properties member ``name`` of ``context`` is read from (choice elements: one
    per type; of the ``allowed`` types alone, as ``ofType`` narrows the step)."""
    variants = model.members(context).get(name)
    if variants is None:
        return None
    return frozenset(
        key for key, type, _ in variants if allowed is None or type in allowed or type == "Resource"
    )
