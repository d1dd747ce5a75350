"""SMART scopes (App Launch 2.2, "Scopes and launch context"): parsing, granting, deciding.

Grammar: ``( patient | user | system ) / ( <ResourceType> | * ) . <permissions> [ ?query ]``
where the permissions are SMART v2 letters, a subset of ``cruds`` in that order, or a v1
word: ``read`` (= ``rs``), ``write`` (= ``cud``), ``*`` (= ``cruds``).

What each letter allows, by the interaction names of the door (``store/authorized.py``):

====  ===========================================================================
c     create
r     read, vread, instance history (``history``)
u     update (and update-as-create), patch
d     delete
s     search-type, search-system, search (conditional matches), history-type,
      history-system
====  ===========================================================================

Several scopes are a **union**: an interaction on a type is permitted when any one scope of
the set permits it. A system-level interaction (type ``None``: a system search without
``_type``, system history) needs a wildcard (``*``) scope, which covers every type.

A granular scope (``?category=...``) narrows what a scope covers; narrowing is a clause of
the door's queries, which this server does not apply yet, so such a scope is refused where it
would be granted (``grant``: ``invalid_scope``) and never counts here: ignoring its filter
would widen access. ``patient/`` scopes are refused the same way: backend services establish
no patient context, and the patient compartment is a narrowing too; a ``patient/`` scope
that reaches a principal some other way (an external identity provider's token) counts for
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
LETTERS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}

#: the letter each door interaction needs
NEEDS: dict[str, str] = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search-type": "s",
    "search-system": "s",
    "search": "s",
    "history-type": "s",
    "history-system": "s",
}

#: scopes a client may ask for that grant no resource access; they are not granted here
#: (``openid``/``fhirUser`` need an id_token, ``launch*`` a launch, ``*_access`` refresh
#: tokens: none of which backend services have)
NON_RESOURCE = frozenset(
    {"openid", "fhirUser", "profile", "launch", "offline_access", "online_access"}
)

_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})"
    r"\.(?P<perms>read|write|\*|[cruds]{1,5})(?:\?(?P<query>.*))?"
)
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.]*(?::[A-Za-z\-]+)?")


class ScopeError(ValueError):
    """A scope the server refuses: malformed, or one it cannot enforce (``invalid_scope``)."""


@dataclass(frozen=True, slots=True)
class Scope:
    context: str
    type: str | None  # None: every type (``*``)
    letters: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()

    def covers(self, interaction: str, type: str | None) -> bool:
        letter = NEEDS.get(interaction)
        if letter is None or letter not in self.letters or self.query:
            return False
        if self.context == "patient":  # the patient compartment is a narrowing (see above)
            return False
        return self.type is None or self.type == type

    @property
    def text(self) -> str:
        """The v2 form of the scope."""
        letters = "".join(c for c in LETTERS if c in self.letters)
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.context}/{self.type or '*'}.{letters}" + (f"?{query}" if query else "")


def parse_scope(text: str) -> Scope | None:
    """A resource scope; None for a scope that names no resource access (``openid``,
    ``launch/patient``, ...). Raises ``ScopeError`` for a malformed resource scope."""
    if text in NON_RESOURCE or text.startswith("launch/"):
        return None
    match = _SCOPE.fullmatch(text)
    if match is None:
        raise ScopeError(f"Unknown or malformed scope {text!r}")
    perms = match["perms"]
    letters = V1.get(perms, perms)
    if perms not in V1 and "".join(c for c in LETTERS if c in letters) != letters:
        raise ScopeError(f"Scope {text!r}: permissions must be a subset of 'cruds' in order")
    query: tuple[tuple[str, str], ...] = ()
    if match["query"] is not None:
        query = _query(text, match["query"])
    type = None if match["type"] == "*" else match["type"]
    return Scope(match["context"], type, frozenset(letters), query)


def _query(text: str, raw: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        name, sep, value = part.partition("=")
        if not sep or not value or not _PARAM.fullmatch(name):
            raise ScopeError(f"Scope {text!r}: malformed query {raw!r}")
        pairs.append((name, value))
    return tuple(pairs)


def parse_scopes(text: str) -> list[Scope]:
    """Every resource scope of a space-separated scope string (others dropped)."""
    return [scope for part in text.split() if (scope := parse_scope(part)) is not None]


def enforceable(scope: Scope) -> None:
    """Raise ``ScopeError`` unless this server can enforce ``scope`` exactly."""
    if scope.query:
        raise ScopeError(
            f"Scope {scope.text!r}: granular scopes (a ?query) cannot be enforced by this "
            "server yet; ask for the scope without the query only if the partner agreement "
            "allows the wider access"
        )
    if scope.context == "patient":
        raise ScopeError(
            f"Scope {scope.text!r}: patient/ scopes need a patient context, which backend "
            "services do not establish; use system/ or user/ scopes"
        )


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """A token's scopes; ``permits`` is their union."""

    scopes: tuple[Scope, ...]

    @classmethod
    def of(cls, text: str) -> ScopeSet:
        return cls(tuple(parse_scopes(text)))

    def permits(self, interaction: str, type: str | None) -> bool:
        return any(scope.covers(interaction, type) for scope in self.scopes)

    def covers_type(self, type: str) -> bool:
        """Whether any scope names ``type`` (or every type), whatever its letters."""
        return any(s.type is None or s.type == type for s in self.scopes if not s.query)

    @property
    def text(self) -> str:
        return " ".join(scope.text for scope in self.scopes)


def grant(requested: str, registered: Iterable[Scope]) -> ScopeSet:
    """The scopes granted for ``requested`` to a client registered with ``registered``: each
    requested resource scope limited to the letters some registered scope of the same
    context covers for its type (a wildcard request only by a wildcard registration); scopes
    that keep no letter, and non-resource scopes, are left out. Raises ``ScopeError`` for a
    malformed or unenforceable scope, or when nothing at all can be granted."""
    allowed = list(registered)
    granted: list[Scope] = []
    for part in requested.split():
        scope = parse_scope(part)
        if scope is None:
            continue
        enforceable(scope)
        letters: set[str] = set()
        for have in allowed:
            if have.context == scope.context and not have.query and (
                have.type is None or have.type == scope.type
            ):
                letters |= have.letters
        kept = frozenset(scope.letters & letters)
        if kept and scope not in granted:
            granted.append(Scope(scope.context, scope.type, kept))
    if not granted:
        raise ScopeError("None of the requested scopes can be granted to this client")
    return ScopeSet(tuple(granted))
