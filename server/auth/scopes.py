"""SMART scopes (App Launch 2.2, "Scopes and launch context"): parsing, granting, deciding.

Grammar: ``( patient | user | system ) / ( <ResourceType> | * ) . <permissions> [ ?query ]``
where the permissions are SMART v2 letters, a subset of ``cruds`` in that order, or a v1
word: ``read`` (= ``rs``), ``write`` (= ``cud``), ``*`` (= ``cruds``).

What each letter allows, by the door's interactions (``server/auth/interactions.py``):

====  ===========================================================================
c     create
r     read, vread, history-instance (and what a request reads on the side, such as
      an ``_include``)
u     update (and update-as-create), patch
d     delete
s     search-type (and the match of a conditional interaction), history-type,
      search-system, history-system
====  ===========================================================================

Several scopes are a **union**: an interaction on a type is permitted when any one scope of
the set permits it. A system-level interaction (type ``None``: a system search, system
history) needs a wildcard (``*``) scope, which covers every type. The scopes are enforced by
the door as one of its access policies (``scope_policy.py``), never anywhere else.

A granular scope (``system/Observation.rs?category=...``) covers only the resources its query
matches: the policy turns the query into clauses of the door's typed query
(``scope_policy.py``), so every read path is narrowed by it and a read outside it answers as
not found. Only the token parameters ``category`` and ``code`` of a named type are
enforceable (``GRANULAR``); a scope with any other query is refused where it would be granted
(``invalid_scope``), never ignored: ignoring a filter would widen access.

A ``patient/`` scope covers only the resources of the token's patient context
(``Principal.patient``, set by a launch): the Patient itself, its compartment, and for reads
what the compartment's resources refer to (``policies.py``, the door's compartment clauses).
It never covers a type whole (``covers`` is False), so it only narrows. Backend services
establish no patient context: the token endpoint refuses ``patient/`` scopes for them
(``enforceable(..., patient=False)``), and a ``patient/`` scope on a principal without a
patient (an external identity provider's token) reaches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from server.auth.interactions import Interaction

CONTEXTS = ("patient", "user", "system")
LETTERS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}

#: the letter each door interaction needs
NEEDS: dict[Interaction, str] = {
    Interaction.CREATE: "c",
    Interaction.READ: "r",
    Interaction.VREAD: "r",
    Interaction.HISTORY_INSTANCE: "r",
    Interaction.UPDATE: "u",
    Interaction.PATCH: "u",
    Interaction.DELETE: "d",
    Interaction.SEARCH_TYPE: "s",
    Interaction.SEARCH_SYSTEM: "s",
    Interaction.HISTORY_TYPE: "s",
    Interaction.HISTORY_SYSTEM: "s",
}

#: scopes a client may ask for that grant no resource access; they are not granted here
#: (``openid``/``fhirUser`` need an id_token, ``launch*`` a launch, ``*_access`` refresh
#: tokens: none of which backend services have)
#: the search parameters a granular scope's query may name (token parameters, no modifier)
GRANULAR = frozenset({"category", "code"})

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

    def covers(self, interaction: Interaction, type: str | None) -> bool:
        """Whether this scope permits ``interaction`` on every resource of ``type`` (None:
        of every type): never a granular or a ``patient/`` scope."""
        return not self.query and self.context != "patient" and self.reaches(interaction, type)

    def reaches(self, interaction: Interaction, type: str | None) -> bool:
        """Whether this scope permits ``interaction`` on ``type``, on the resources its query
        (if any) and, for a ``patient/`` scope, the patient context match."""
        if NEEDS[interaction] not in self.letters:
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


def enforceable(scope: Scope, *, patient: bool = False) -> None:
    """Raise ``ScopeError`` unless this server can enforce ``scope`` exactly (a granular
    query's parameters are checked against the type's by ``scope_policy.clauses_of``).
    ``patient``: whether the grant establishes a patient context (a launch); without one a
    ``patient/`` scope is refused."""
    enforceable_query(scope)
    if scope.context == "patient" and not patient:
        raise ScopeError(
            f"Scope {scope.text!r}: patient/ scopes need a patient context, which backend "
            "services do not establish; use system/ or user/ scopes"
        )


def enforceable_query(scope: Scope) -> None:
    """Raise ``ScopeError`` for a granular query this server cannot enforce."""
    if scope.query:
        names = {name for name, _ in scope.query}
        if scope.type is None or not names <= GRANULAR:
            raise ScopeError(
                f"Scope {scope.text!r}: this server enforces granular scopes on a named type "
                f"with the parameters {', '.join(sorted(GRANULAR))} only; ask for the scope "
                "without the query only if the partner agreement allows the wider access"
            )


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """A token's scopes; ``permits`` is their union."""

    scopes: tuple[Scope, ...]

    @classmethod
    def of(cls, text: str) -> ScopeSet:
        return cls(tuple(parse_scopes(text)))

    def permits(self, interaction: Interaction, type: str | None) -> bool:
        return any(scope.covers(interaction, type) for scope in self.scopes)

    def types(self, interaction: Interaction) -> tuple[str, ...] | None:
        """The types some scope permits ``interaction`` on, sorted; None: every type (a
        wildcard scope)."""
        if self.permits(interaction, None):
            return None
        covered = {s.type for s in self.scopes if s.type and s.covers(interaction, s.type)}
        return tuple(sorted(covered))

    @property
    def text(self) -> str:
        return " ".join(scope.text for scope in self.scopes)


def grant(
    requested: str,
    registered: Iterable[Scope],
    check: Callable[[Scope], object] = enforceable,
) -> ScopeSet:
    """The scopes granted for ``requested`` to a client registered with ``registered``: each
    requested resource scope limited to the letters some registered scope of the same
    context covers for its type (a wildcard request only by a wildcard registration; a
    granular registration covers the very same query only); scopes that keep no letter, and
    non-resource scopes, are left out. ``check`` raises ``ScopeError`` for a scope the server
    cannot enforce. Raises ``ScopeError`` for a malformed or unenforceable scope, or when
    nothing at all can be granted."""
    allowed = list(registered)
    granted: list[Scope] = []
    for part in requested.split():
        scope = parse_scope(part)
        if scope is None:
            continue
        check(scope)
        letters: set[str] = set()
        for have in allowed:
            if have.context == scope.context and have.query in ((), scope.query) and (
                have.type is None or have.type == scope.type
            ):
                letters |= have.letters
        kept = Scope(scope.context, scope.type, frozenset(scope.letters & letters), scope.query)
        if kept.letters and kept not in granted:
            granted.append(kept)
    if not granted:
        raise ScopeError("None of the requested scopes can be granted to this client")
    return ScopeSet(tuple(granted))
