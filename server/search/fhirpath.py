"""FHIRPath for search: the subset SearchParameter expressions use, compiled to Python closures.

A SearchParameter says which values of a resource it indexes with a FHIRPath expression
(``Observation.value.ofType(Quantity)``, ``Patient.telecom.where(system='email')``).
``compile_expression`` turns one expression into an *extractor*: a function from a JSON value
of the context type (and the root resource, for ``%resource``) to the typed values the
expression selects. Element types come from the R4 JSON schema, so every value comes out
labelled with its FHIR type (``("Quantity", {...})``, ``("date", "1980-01-01")``), choice
elements (``value[x]``) are read from their typed JSON names (``valueQuantity``), and
``ofType``/``as``/``is`` are decided while compiling wherever the types are known.

Supported: member paths (a leading type name filters the focus: ``Condition.code`` selects
nothing on an Observation), ``|``, ``=``, ``!=``, ``and``, ``or``, ``xor``, ``is``, ``as``,
indexers, string/number/boolean literals, ``%resource``, ``$this`` and the functions
``where``, ``exists``, ``empty``, ``not``, ``first``, ``last``, ``ofType``, ``as``, ``is`` and
``extension``. ``resolve()`` is understood only as ``where(resolve() is T [or resolve() is U
...])`` on references, which keeps the references whose target type is one of the types.
Anything else raises ``ValueError`` when compiling; running an extractor never raises: values
of the wrong shape are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import orjson

from server.fhir.definitions import DATA as FHIR_DATA
from server.fhir.definitions import r4_schema

Node = tuple[str, Any]  # (FHIR type code, JSON value)
Extractor = Callable[[Any, Any], list[Node]]  # extractor(focus, resource) -> nodes

# compiled pieces map an input collection (and the root resource) to an output collection
_Run = Callable[[list[Node], Any], list[Node]]

# how a value of a type is stored in JSON
_PRIMITIVE = 0  # a JSON string, number or boolean
_COMPLEX = 1  # a JSON object
_RESOURCE = 2  # a JSON object whose ``resourceType`` is its type

# (JSON name, FHIR type, shape) of one way an element is stored
_Variant = tuple[str, str, int]

# FHIR types derived from another one (R4 StructureDefinition.baseDefinition)
_PARENTS = {
    "Age": "Quantity",
    "Count": "Quantity",
    "Distance": "Quantity",
    "Duration": "Quantity",
    "MoneyQuantity": "Quantity",
    "SimpleQuantity": "Quantity",
    "code": "string",
    "id": "string",
    "markdown": "string",
    "canonical": "uri",
    "oid": "uri",
    "url": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
}
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})

# FHIRPath system types and the FHIR primitive types whose values they are
_SYSTEM_TYPES = {
    "Boolean": ("boolean",),
    "String": ("string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid"),
    "Integer": ("integer", "positiveInt", "unsignedInt"),
    "Decimal": ("decimal",),
    "Date": ("date",),
    "DateTime": ("dateTime", "instant"),
    "Time": ("time",),
    "Quantity": ("Quantity",),
}


# -- the type model -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Model:
    elements: Mapping[str, Mapping[str, tuple[_Variant, ...]]]  # type -> name -> variants
    primitives: frozenset[str]
    resources: frozenset[str]

    def known(self, name: str) -> bool:
        return name in self.elements or name in self.primitives or name in _PARENTS

    def subtypes(self, name: str) -> frozenset[str]:
        """The concrete types whose values are of type ``name`` (itself included)."""
        if name == "Resource":
            return self.resources
        if name == "DomainResource":
            return self.resources - _NOT_DOMAIN
        out = {name}
        out.update(child for child, parent in _PARENTS.items() if parent == name)
        return frozenset(out)


def _ref_type(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _variant_type(prefix: str, json_name: str, primitives: frozenset[str]) -> str:
    suffix = json_name[len(prefix) :]
    lowered = suffix[:1].lower() + suffix[1:]
    return lowered if lowered in primitives else suffix


def _schema_choices(
    properties: Mapping[str, Any], primitives: frozenset[str]
) -> dict[str, list[str]]:
    """Choice elements read off a definition's properties: two or more properties named
    ``<element><Type>`` whose schema type is that type, sharing one description, with no
    property named ``<element>`` itself (``Task.instantiatesCanonical`` and
    ``Task.instantiatesUri`` are separate elements: their descriptions differ)."""
    groups: dict[str, list[str]] = {}
    for prop, spec in properties.items():
        if prop.startswith("_"):
            continue
        for split in range(1, len(prop)):
            if not prop[split].isupper() or prop[:split] in properties:
                continue
            suffix = prop[split:]
            lowered = suffix[:1].lower() + suffix[1:]
            ref = spec.get("$ref")
            if ref is not None:
                fits = _ref_type(ref) in (suffix, lowered)
            else:
                fits = lowered in primitives and "pattern" in spec
            if fits:
                groups.setdefault(prop[:split], []).append(prop)
    return {
        element: names
        for element, names in groups.items()
        if len(names) >= 2 and len({properties[n].get("description") for n in names}) == 1
    }


def _element_paths(definitions: Mapping[str, Any]) -> dict[str, str]:
    """The element path (``Observation.component``) of every complex definition."""
    paths: dict[str, str] = {}
    queue = [name for name in definitions if "_" not in name and "properties" in definitions[name]]
    for name in queue:
        paths[name] = name
    while queue:
        name = queue.pop(0)
        for prop, spec in definitions[name].get("properties", {}).items():
            ref = spec.get("$ref") or spec.get("items", {}).get("$ref")
            if not ref:
                continue
            target = _ref_type(ref)
            if "_" in target and target not in paths and target in definitions:
                paths[target] = f"{paths[name]}.{prop}"
                queue.append(target)
    return paths


@cache
def _model() -> _Model:
    definitions: dict[str, Any] = r4_schema()["definitions"]
    choices: dict[str, list[str]] = orjson.loads((FHIR_DATA / "choice-elements.json").read_bytes())
    primitives = frozenset(
        name for name, spec in definitions.items() if "properties" not in spec and name[0].islower()
    )
    resources = frozenset(
        _ref_type(option["$ref"]) for option in definitions["ResourceList"]["oneOf"]
    )
    paths = _element_paths(definitions)
    by_path: dict[str, dict[str, list[str]]] = {}
    for path, names in choices.items():
        owner, _, element = path.rpartition(".")
        by_path.setdefault(owner, {})[element.removesuffix("[x]")] = names

    elements: dict[str, dict[str, tuple[_Variant, ...]]] = {}
    for name, spec in definitions.items():
        properties = spec.get("properties")
        if properties is None:
            continue
        own_choices = _schema_choices(properties, primitives)
        for element, names in by_path.get(paths.get(name, name), {}).items():
            listed = set(names) | set(own_choices.get(element, ()))
            present = [prop for prop in properties if prop in listed]
            if present:
                own_choices[element] = present
        taken = {json_name for names in own_choices.values() for json_name in names}
        table: dict[str, tuple[_Variant, ...]] = {}
        for element, names in own_choices.items():
            variants = []
            for json_name in names:
                type = _variant_type(element, json_name, primitives)
                shape = _PRIMITIVE if type in primitives else _COMPLEX
                variants.append((json_name, type, shape))
            table[element] = tuple(variants)
        for prop, prop_spec in properties.items():
            if prop.startswith("_") or prop == "resourceType" or prop in taken:
                continue
            ref = prop_spec.get("$ref") or prop_spec.get("items", {}).get("$ref")
            if ref:
                type = _ref_type(ref)
            elif "enum" in prop_spec or "enum" in prop_spec.get("items", {}):
                type = "code"
            else:
                continue
            shape = _RESOURCE if type == "ResourceList" else _COMPLEX
            if type in primitives:
                shape = _PRIMITIVE
            table[prop] = ((prop, type, shape),)
        elements[name] = table
    return _Model(elements, primitives, resources)


def _type_set(name: str, model: _Model) -> frozenset[str]:
    """The concrete FHIR types a type specifier (``Patient``, ``FHIR.Quantity``,
    ``System.DateTime``, ``DateTime``) stands for."""
    bare = name.removeprefix("FHIR.")
    if bare in ("Resource", "DomainResource") or (
        not bare.startswith("System.") and model.known(bare)
    ):
        return model.subtypes(bare)
    system = bare.removeprefix("System.")
    if system in _SYSTEM_TYPES:
        out: set[str] = set()
        for fhir_type in _SYSTEM_TYPES[system]:
            out |= model.subtypes(fhir_type)
        return frozenset(out)
    raise ValueError(f"unknown type {name!r}")


# -- parsing --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
    | (?P<special>[%$][A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|!=|!~|\{\}|[.()\[\],|=<>~+\-*/&])
    )""",
    re.VERBOSE,
)
_ESCAPES = {
    "'": "'",
    '"': '"',
    "`": "`",
    "\\": "\\",
    "/": "/",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}

# binary operators by precedence, loosest first
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<", ">", "<=", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
)

Ast = tuple[Any, ...]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot read FHIRPath at {text[position:]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ValueError("unexpected end of FHIRPath expression")
        self.position += 1
        return token

    def expect(self, value: str) -> None:
        kind, text = self.take()
        if text != value or kind not in ("op", "ident"):
            raise ValueError(f"expected {value!r}, found {text!r}")

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] in ("op", "ident") and token[1] in values

    def parse(self) -> Ast:
        tree = self.expression(0)
        rest = self.peek()
        if rest is not None:
            raise ValueError(f"unexpected {rest[1]!r}")
        return tree

    def expression(self, level: int) -> Ast:
        if level == len(_LEVELS):
            return self.postfix()
        left = self.expression(level + 1)
        while self.at(*_LEVELS[level]):
            op = self.take()[1]
            if op in ("is", "as"):
                left = (op, left, self.type_name())
            else:
                left = ("binary", op, left, self.expression(level + 1))
        return left

    def type_name(self) -> str:
        parts = [self.identifier()]
        while self.at("."):
            self.take()
            parts.append(self.identifier())
        return ".".join(parts)

    def identifier(self) -> str:
        kind, text = self.take()
        if kind != "ident":
            raise ValueError(f"expected an identifier, found {text!r}")
        return text[1:-1] if text.startswith("`") else text

    def postfix(self) -> Ast:
        tree = self.term()
        while True:
            if self.at("."):
                self.take()
                tree = self.invocation(tree)
            elif self.at("["):
                self.take()
                index = self.expression(0)
                self.expect("]")
                tree = ("index", tree, index)
            else:
                return tree

    def invocation(self, base: Ast) -> Ast:
        name = self.identifier()
        if not self.at("("):
            return ("member", base, name)
        self.take()
        args: list[Ast] = []
        if not self.at(")"):
            args.append(self.argument(name))
            while self.at(","):
                self.take()
                args.append(self.argument(name))
        self.expect(")")
        return ("call", base, name, tuple(args))

    def argument(self, function: str) -> Ast:
        if function in ("ofType", "as", "is"):
            return ("type", self.type_name())
        return self.expression(0)

    def term(self) -> Ast:
        kind, text = self.take()
        if kind == "string":
            return ("literal", "string", _unquote(text))
        if kind == "number":
            if "." in text:
                return ("literal", "decimal", float(text))
            return ("literal", "integer", int(text))
        if kind == "special":
            if text in ("%resource", "%rootResource"):
                return ("resource",)
            if text == "$this":
                return ("this",)
            raise ValueError(f"unsupported variable {text}")
        if kind == "op" and text == "(":
            tree = self.expression(0)
            self.expect(")")
            return tree
        if kind == "op" and text == "{}":
            return ("empty",)
        if kind == "ident" and text in ("true", "false"):
            return ("literal", "boolean", text == "true")
        if kind == "ident":
            self.position -= 1
            return self.invocation(("this",))
        raise ValueError(f"unexpected {text!r}")


# -- compiling ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """A member access, kept so that ``ofType`` can narrow it to the variants it needs."""

    source: _Compiled
    table: Mapping[str, tuple[_Variant, ...]]  # input type -> variants to read


@dataclass(frozen=True, slots=True)
class _Compiled:
    run: _Run
    types: frozenset[str]  # the types the output may hold
    step: _Step | None = None
    identity: bool = False  # the output is the input


def _nothing(nodes: list[Node], resource: Any) -> list[Node]:
    return []


def _input(nodes: list[Node], resource: Any) -> list[Node]:
    return nodes


_EMPTY = _Compiled(_nothing, frozenset())
_NUMBER_CLASSES: dict[str, frozenset[type]] = {
    "boolean": frozenset((bool,)),
    "integer": frozenset((int,)),
    "positiveInt": frozenset((int,)),
    "unsignedInt": frozenset((int,)),
    "decimal": frozenset((int, float)),
}
_TEXT_CLASSES: frozenset[type] = frozenset((str,))


def _classes(name: str) -> frozenset[type]:
    """The JSON value classes a primitive type is stored as (``true`` is not an integer)."""
    return _NUMBER_CLASSES.get(name, _TEXT_CLASSES)


def _collect(value: Any, type: str, shape: int, out: list[Node], resources: frozenset[str]) -> None:
    """Append the items of one JSON element value that have the right shape."""
    items = value if value.__class__ is list else (value,)
    if shape == _COMPLEX:
        for item in items:
            if item.__class__ is dict:
                out.append((type, item))
    elif shape == _PRIMITIVE:
        classes = _classes(type)
        for item in items:
            if item.__class__ in classes:
                out.append((type, item))
    else:
        for item in items:
            if item.__class__ is dict:
                kind = item.get("resourceType")
                if kind.__class__ is str and kind in resources:
                    out.append((kind, item))


def _step_run(source: _Compiled, table: Mapping[str, tuple[_Variant, ...]]) -> _Run:
    resources = _model().resources
    pull = source.run
    direct = source.identity
    if len(table) == 1:
        ((_, variants),) = table.items()
        if len(variants) == 1:
            ((key, type, shape),) = variants
            if shape == _COMPLEX:

                def complex_member(nodes: list[Node], resource: Any) -> list[Node]:
                    out: list[Node] = []
                    for _, value in nodes if direct else pull(nodes, resource):
                        if value.__class__ is dict:
                            child = value.get(key)
                            if child.__class__ is list:
                                for item in child:
                                    if item.__class__ is dict:
                                        out.append((type, item))
                            elif child.__class__ is dict:
                                out.append((type, child))
                    return out

                return complex_member
            if shape == _PRIMITIVE:
                classes = _classes(type)

                def primitive_member(nodes: list[Node], resource: Any) -> list[Node]:
                    out: list[Node] = []
                    for _, value in nodes if direct else pull(nodes, resource):
                        if value.__class__ is dict:
                            child = value.get(key)
                            if child is None:
                                continue
                            if child.__class__ is list:
                                for item in child:
                                    if item.__class__ in classes:
                                        out.append((type, item))
                            elif child.__class__ in classes:
                                out.append((type, child))
                    return out

                return primitive_member

        def single_type_member(nodes: list[Node], resource: Any) -> list[Node]:
            out: list[Node] = []
            for _, value in nodes if direct else pull(nodes, resource):
                if value.__class__ is dict:
                    for key, type, shape in variants:
                        child = value.get(key)
                        if child is not None:
                            _collect(child, type, shape, out, resources)
            return out

        return single_type_member

    def any_type_member(nodes: list[Node], resource: Any) -> list[Node]:
        out: list[Node] = []
        for node_type, value in nodes if direct else pull(nodes, resource):
            if value.__class__ is dict:
                for key, type, shape in table.get(node_type, ()):
                    child = value.get(key)
                    if child is not None:
                        _collect(child, type, shape, out, resources)
        return out

    return any_type_member


def _step(source: _Compiled, table: Mapping[str, tuple[_Variant, ...]]) -> _Compiled:
    table = {type: variants for type, variants in table.items() if variants}
    if not table:
        return _EMPTY
    types: set[str] = set()
    for variants in table.values():
        for _, type, _ in variants:
            if type == "ResourceList":
                types |= _model().resources
            else:
                types.add(type)
    return _Compiled(_step_run(source, table), frozenset(types), _Step(source, table))


def _filter(source: _Compiled, allowed: frozenset[str]) -> _Compiled:
    """The nodes of ``source`` whose type is one of ``allowed``."""
    kept = source.types & allowed
    if not kept:
        return _EMPTY
    if kept == source.types:
        return source
    if source.step is not None:
        narrowed = {
            type: tuple(v for v in variants if v[1] in allowed or v[1] == "ResourceList")
            for type, variants in source.step.table.items()
        }
        stepped = _step(source.step.source, narrowed)
        if stepped.types <= allowed:
            return stepped
        source = stepped
    pull = source.run

    def of_type(nodes: list[Node], resource: Any) -> list[Node]:
        return [node for node in pull(nodes, resource) if node[0] in allowed]

    return _Compiled(of_type, kept)


def _union_terms(tree: Ast) -> list[Ast]:
    if tree[0] == "binary" and tree[1] == "|":
        return _union_terms(tree[2]) + _union_terms(tree[3])
    return [tree]


def _distinct(nodes: list[Node]) -> list[Node]:
    """``nodes`` without repeated values (FHIRPath equality: a boolean is not a number)."""
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


def _truth(nodes: list[Node]) -> bool | None:
    """A collection in a boolean position: empty is unknown, a single value decides."""
    if len(nodes) != 1:
        return None
    value = nodes[0][1]
    return value if value.__class__ is bool else True


def _equal(left: list[Node], right: list[Node]) -> bool | None:
    if not left or not right:
        return None
    if len(left) != len(right):
        return False
    for (_, a), (_, b) in zip(left, right, strict=True):
        if (a.__class__ is bool) != (b.__class__ is bool) or a != b:
            return False
    return True


def _boolean(value: bool | None) -> list[Node]:
    return [] if value is None else [("boolean", value)]


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
    parts = text.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    return parts[-2]


def _resolve_types(tree: Ast, model: _Model) -> frozenset[str] | None:
    """The types of ``resolve() is A or resolve() is B ...``, or None for anything else."""
    if tree[0] == "is" and tree[1] == ("call", ("this",), "resolve", ()):
        return _type_set(tree[2], model)
    if tree[0] == "call" and tree[2] == "is" and tree[1] == ("call", ("this",), "resolve", ()):
        return _type_set(tree[3][0][1], model)
    if tree[0] == "binary" and tree[1] == "or":
        left = _resolve_types(tree[2], model)
        right = _resolve_types(tree[3], model)
        if left is not None and right is not None:
            return left | right
    return None


def _mentions_resolve(tree: Any) -> bool:
    if isinstance(tree, tuple):
        if len(tree) >= 3 and tree[0] == "call" and tree[2] == "resolve":
            return True
        return any(_mentions_resolve(part) for part in tree)
    return False


class _Compiler:
    def __init__(self, context_types: frozenset[str], model: _Model) -> None:
        self.model = model
        self.context_types = context_types

    def compile(self, tree: Ast, inputs: _Compiled) -> _Compiled:
        kind = tree[0]
        if kind == "this":
            return inputs
        if kind == "resource":
            return self.resource()
        if kind == "literal":
            node: Node = (tree[1], tree[2])

            def literal(nodes: list[Node], resource: Any) -> list[Node]:
                return [node]

            return _Compiled(literal, frozenset((tree[1],)))
        if kind == "empty":
            return _EMPTY
        if kind == "member":
            return self.member(tree, inputs)
        if kind == "call":
            return self.call(tree[2], tree[1], tree[3], inputs)
        if kind == "index":
            return self.index(self.compile(tree[1], inputs), tree[2])
        if kind == "is":
            return self.is_type(self.compile(tree[1], inputs), tree[2])
        if kind == "as":
            return _filter(self.compile(tree[1], inputs), _type_set(tree[2], self.model))
        if kind == "binary" and tree[1] == "|":
            return self.union(tree, inputs)
        if kind == "binary":
            return self.binary(tree[1], tree[2], tree[3], inputs)
        raise ValueError(f"unsupported FHIRPath construct {kind}")

    def resource(self) -> _Compiled:
        owners = frozenset(t.split("_", 1)[0] for t in self.context_types)
        static = owners & self.model.resources or self.model.resources
        only = next(iter(static)) if len(static) == 1 else None

        def root(nodes: list[Node], resource: Any) -> list[Node]:
            if resource.__class__ is not dict:
                return []
            kind = resource.get("resourceType", only)
            return [(kind, resource)] if kind.__class__ is str and kind in static else []

        return _Compiled(root, static)

    def member(self, tree: Ast, inputs: _Compiled) -> _Compiled:
        base_tree, name = tree[1], tree[2]
        source = self.compile(base_tree, inputs)
        if base_tree == ("this",) and name[:1].isupper():
            return _filter(source, _type_set(name, self.model))
        if not source.types:
            return _EMPTY
        table = {
            type: self.model.elements.get(type, {}).get(name, ())
            for type in sorted(source.types)
            if name in self.model.elements.get(type, {})
        }
        if not table:
            raise ValueError(f"{name!r} is not an element of {', '.join(sorted(source.types))}")
        return _step(source, table)

    def index(self, source: _Compiled, index_tree: Ast) -> _Compiled:
        if index_tree[0] != "literal" or index_tree[1] != "integer":
            raise ValueError("only integer literal indexes are supported")
        at: int = index_tree[2]
        pull = source.run

        def indexed(nodes: list[Node], resource: Any) -> list[Node]:
            return pull(nodes, resource)[at : at + 1]

        return _Compiled(indexed, source.types)

    def is_type(self, source: _Compiled, name: str) -> _Compiled:
        allowed = _type_set(name, self.model)
        pull = source.run

        def is_a(nodes: list[Node], resource: Any) -> list[Node]:
            found = pull(nodes, resource)
            return [("boolean", found[0][0] in allowed)] if len(found) == 1 else []

        return _Compiled(is_a, frozenset(("boolean",)))

    def union(self, tree: Ast, inputs: _Compiled) -> _Compiled:
        """``a | b | ...``: the values of every branch in order, without duplicates. Branches
        that cannot select anything here (rooted in another type) are left out."""
        parts = [self.compile(term, inputs) for term in _union_terms(tree)]
        pulls = [part.run for part in parts if part.types]
        types = frozenset(t for part in parts for t in part.types)
        if not pulls:
            return _EMPTY
        if len(pulls) == 1:
            (pull,) = pulls

            def distinct(nodes: list[Node], resource: Any) -> list[Node]:
                return _distinct(pull(nodes, resource))

            return _Compiled(distinct, types)

        def union(nodes: list[Node], resource: Any) -> list[Node]:
            found: list[Node] = []
            for pull in pulls:
                found += pull(nodes, resource)
            return _distinct(found)

        return _Compiled(union, types)

    def binary(self, op: str, left_tree: Ast, right_tree: Ast, inputs: _Compiled) -> _Compiled:
        left = self.compile(left_tree, inputs)
        right = self.compile(right_tree, inputs)
        pull_left, pull_right = left.run, right.run
        boolean = frozenset(("boolean",))
        if op in ("=", "!="):
            negate = op == "!="

            def equality(nodes: list[Node], resource: Any) -> list[Node]:
                same = _equal(pull_left(nodes, resource), pull_right(nodes, resource))
                return _boolean(same if same is None or not negate else not same)

            return _Compiled(equality, boolean)
        if op in ("and", "or", "xor"):

            def logic(nodes: list[Node], resource: Any) -> list[Node]:
                a = _truth(pull_left(nodes, resource))
                if op == "and" and a is False or op == "or" and a is True:
                    return [("boolean", a)]
                b = _truth(pull_right(nodes, resource))
                if op == "and":
                    return _boolean(
                        False if b is False else None if a is None or b is None else True
                    )
                if op == "or":
                    return _boolean(
                        True if b is True else None if a is None or b is None else False
                    )
                return _boolean(None if a is None or b is None else a != b)

            return _Compiled(logic, boolean)
        raise ValueError(f"unsupported FHIRPath operator {op!r}")

    def call(
        self, name: str, base_tree: Ast, args: tuple[Ast, ...], inputs: _Compiled
    ) -> _Compiled:
        if name == "resolve":
            raise ValueError("resolve() is supported only as where(resolve() is Type)")
        source = self.compile(base_tree, inputs)
        if name in ("ofType", "as", "is"):
            if len(args) != 1:
                raise ValueError(f"{name}() takes one type")
            type_name: str = args[0][1]
            if name == "is":
                return self.is_type(source, type_name)
            return _filter(source, _type_set(type_name, self.model))
        if name == "where":
            if len(args) != 1:
                raise ValueError("where() takes one criterion")
            return self.where(source, args[0])
        if name == "extension":
            if len(args) != 1 or args[0][0] != "literal" or args[0][1] != "string":
                raise ValueError("extension() takes one url string")
            url = ("literal", "string", args[0][2])
            extensions = self.member(("member", ("this",), "extension"), source)
            return self.where(extensions, ("binary", "=", ("member", ("this",), "url"), url))
        if name in ("exists", "empty"):
            if len(args) > 1:
                raise ValueError(f"{name}() takes at most one criterion")
            if args:
                source = self.where(source, args[0])
            pull = source.run
            want = name == "exists"

            def exists(nodes: list[Node], resource: Any) -> list[Node]:
                return [("boolean", bool(pull(nodes, resource)) is want)]

            return _Compiled(exists, frozenset(("boolean",)))
        if args:
            raise ValueError(f"{name}() takes no arguments")
        pull = source.run
        if name == "first":

            def first(nodes: list[Node], resource: Any) -> list[Node]:
                return pull(nodes, resource)[:1]

            return _Compiled(first, source.types)
        if name == "last":

            def last(nodes: list[Node], resource: Any) -> list[Node]:
                return pull(nodes, resource)[-1:]

            return _Compiled(last, source.types)
        if name == "not":

            def negation(nodes: list[Node], resource: Any) -> list[Node]:
                found = pull(nodes, resource)
                value = found[0][1] if len(found) == 1 else None
                return [("boolean", not value)] if value.__class__ is bool else []

            return _Compiled(negation, frozenset(("boolean",)))
        raise ValueError(f"unsupported FHIRPath function {name}()")

    def where(self, source: _Compiled, criterion: Ast) -> _Compiled:
        if not source.types:
            return _EMPTY
        pull = source.run
        targets = _resolve_types(criterion, self.model)
        if targets is not None:
            if "Reference" not in source.types:
                raise ValueError("resolve() needs references")

            def resolves(nodes: list[Node], resource: Any) -> list[Node]:
                return [
                    node
                    for node in pull(nodes, resource)
                    if node[0] == "Reference" and _reference_type(node[1], resource) in targets
                ]

            return _Compiled(resolves, frozenset(("Reference",)))
        if _mentions_resolve(criterion):
            raise ValueError("resolve() is supported only as where(resolve() is Type)")
        item = _Compiled(_input, source.types, identity=True)
        if criterion[0] == "binary" and criterion[1] == "=" and criterion[3][0] == "literal":
            # where(path = 'literal'): only a single value can equal a single literal
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

            return _Compiled(where_equal, source.types)
        test = self.compile(criterion, item).run

        def where(nodes: list[Node], resource: Any) -> list[Node]:
            return [node for node in pull(nodes, resource) if _truth(test([node], resource))]

        return _Compiled(where, source.types)


def _context_types(context: str, model: _Model) -> frozenset[str]:
    if context in ("Resource", "DomainResource"):
        return model.subtypes(context)
    if context not in model.elements:
        raise ValueError(f"unknown context type {context!r}")
    return frozenset((context,))


@lru_cache(maxsize=4096)
def _compiled(expression: str, context: str) -> _Compiled:
    model = _model()
    types = _context_types(context, model)
    tree = _Parser(expression).parse()
    return _Compiler(types, model).compile(tree, _Compiled(_input, types, identity=True))


def compile_expression(expression: str, context: str) -> Extractor:
    """Compile a FHIRPath ``expression`` evaluated on a JSON value of type ``context``.

    ``context`` is a resource type, ``Resource``/``DomainResource`` (the focus's own
    ``resourceType`` decides) or a schema definition of a datatype or backbone element
    (``Quantity``, ``Observation_Component``). The extractor takes the focus and the root
    resource (for ``%resource``) and returns the selected values with their FHIR types.
    Raises ``ValueError`` for expressions outside the supported subset or naming elements the
    context types do not have.
    """
    compiled = _compiled(expression, context)
    run = compiled.run
    model = _model()
    if context in ("Resource", "DomainResource"):
        allowed = _context_types(context, model)

        def extract_resource(focus: Any, resource: Any) -> list[Node]:
            kind = focus.get("resourceType") if focus.__class__ is dict else None
            if kind.__class__ is str and kind in allowed:
                return run([(kind, focus)], resource)
            return []

        return extract_resource

    def extract(focus: Any, resource: Any) -> list[Node]:
        return run([(context, focus)], resource)

    return extract


def output_types(expression: str, context: str) -> frozenset[str]:
    """The FHIR types the values of ``expression`` on ``context`` can have (for instance the
    contexts in which to compile the components of a composite parameter)."""
    return _compiled(expression, context).types
