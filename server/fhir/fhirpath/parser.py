"""FHIRPath syntax: the one tokenizer and recursive-descent parser, producing a small tuple AST
that :mod:`server.fhir.fhirpath.compiler` compiles.

The grammar is FHIRPath's (N1, as R4 uses it) without ``$index``/``$total``, quantity
literals and unary minus. Nodes:

* ``("literal", type, value)`` with type ``string``, ``integer``, ``decimal``, ``boolean``,
  ``date``, ``dateTime`` or ``time`` (date/time literals ``@2024-01-01`` keep their text);
* ``("empty",)`` for ``{}``; ``("this",)`` for ``$this`` (and the implicit focus);
  ``("variable", name)`` for ``%resource`` etc.;
* ``("member", base, name)``, ``("call", base, name, args)``, ``("index", base, index)``;
* ``("binary", op, left, right)`` and ``("is" | "as", base, type name)``;
* ``("type", name)`` for the argument of ``ofType``/``is``/``as``.

Parsing errors raise ``FhirPathSyntaxError`` (a ``ValueError``). Parsed trees are cached:
the same expression text is parsed once per process.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from server.fhir.fhirpath.errors import FhirPathSyntaxError

Ast = tuple[Any, ...]


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>@\d{4}(?:-\d{2}(?:-\d{2})?)?(?:T[0-9:.]*(?:Z|[+-]\d{2}:\d{2})?)?)
    | (?P<time>@T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
    | (?P<variable>%[A-Za-z_][A-Za-z0-9_]*|%`[^`]*`|\$[a-z]+)
    | (?P<op><=|>=|!=|!~|\{\}|[.()\[\],|=<>~+\-*/&])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n"}
_ESCAPES.update({"r": "\r", "t": "\t"})

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
_TYPE_ARGUMENT = frozenset({"ofType", "is", "as"})


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FhirPathSyntaxError(f"cannot read FHIRPath at {text[position:]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        position = match.end()
    return out


def _unquote(token: str) -> str:
    body, out, i = token[1:-1], [], 0
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
            raise FhirPathSyntaxError("unexpected end of expression")
        self.position += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] in ("op", "ident") and token[1] in values

    def expect(self, value: str) -> None:
        if not self.at(value):
            found = self.peek()
            raise FhirPathSyntaxError(f"expected {value!r}, found {found[1] if found else 'end'!r}")
        self.take()

    def parse(self) -> Ast:
        tree = self.expression(0)
        rest = self.peek()
        if rest is not None:
            raise FhirPathSyntaxError(f"unexpected {rest[1]!r}")
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
            raise FhirPathSyntaxError(f"expected an identifier, found {text!r}")
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
        if function in _TYPE_ARGUMENT:
            return ("type", self.type_name())
        return self.expression(0)

    def term(self) -> Ast:
        kind, text = self.take()
        if kind == "string":
            return ("literal", "string", _unquote(text))
        if kind == "number":
            return (
                ("literal", "decimal", float(text))
                if "." in text
                else ("literal", "integer", int(text))
            )
        if kind == "datetime":
            # ``@2024-01-01T`` is a dateTime of date precision
            return ("literal", "dateTime" if "T" in text else "date", text[1:].rstrip("T"))
        if kind == "time":
            return ("literal", "time", text[2:])
        if kind == "variable":
            if text == "$this":
                return ("this",)
            if text.startswith("$"):
                raise FhirPathSyntaxError(f"unsupported variable {text}")
            return ("variable", text[1:].strip("`"))
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
        raise FhirPathSyntaxError(f"unexpected {text!r}")


@lru_cache(maxsize=4096)
def parse(expression: str) -> Ast:
    """The AST of a FHIRPath expression (see the module docstring)."""
    return _Parser(expression).parse()
