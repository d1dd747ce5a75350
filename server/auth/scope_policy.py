"""SMART scopes as an access policy of the door (``policy.py``).

The principal of an access token carries its granted scopes (``Principal.scopes``,
``scopes.py``). For each interaction and type the policy answers what the union of those
scopes allows: a type and interaction no scope covers → ``NOTHING`` (the door answers 403),
covered → ``EVERYTHING``; covered only by granular scopes (``?category=``, ``?code=``) → the
clauses of their queries, parsed by the search parser into the typed query's clauses (several
scopes: any of them), so a search, an include, a history page or a conditional match sees only
what the query matches, and a read outside it answers as not found. Each interaction needs
its own letter only (``scopes.NEEDS``): an update needs ``u``, not ``r`` as well — the door
reads a write's target under the write's own interaction (``Unit.target``).

Type ``None``:

- a system-level search or history (``search-system``, ``history-system``) needs a wildcard
  scope with ``s``; the door checks each type a ``_type`` names besides;
- any other interaction of no single type (what an ``_include`` or a chain over several
  target types reads) reaches the types some scope covers for it: one ``TypeClause`` spanning
  them, or for a type covered only by granular scopes that type with their clauses
  (everything with a wildcard scope, nothing without a scope).

``patient/`` scopes: a principal with a patient context (``Principal.patient``, from a
launch) reaches, through a ``patient/`` scope on a type, what the patient compartment policy
(``policies.CompartmentPolicy``) lets it reach of that type — the Patient, its compartment,
and for reads the resources they refer to — further narrowed by the scope's query if any.
Such scopes are alternatives of the union like granular ones; without a patient context they
reach nothing.

A principal without scopes (not a token's) reaches nothing through this policy. The app
installs it whenever authentication is on (``server/app.py``); with authentication off
every request is the local operator's (``allow_all``), which no policy narrows.
"""

from __future__ import annotations

from urllib.parse import unquote

from server.auth.interactions import Interaction
from server.auth.policies import CompartmentPolicy
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing, where
from server.auth.principal import Principal
from server.auth.scopes import Scope, ScopeError, ScopeSet, enforceable_query
from server.errors import FhirError
from server.search.parse import SearchContext, parse_criteria
from server.search.query import AllClause, AnyClause, Clause, TypeClause

SYSTEM_LEVEL = frozenset({Interaction.SEARCH_SYSTEM, Interaction.HISTORY_SYSTEM})


def clauses_of(scope: Scope, context: SearchContext) -> tuple[Clause, ...]:
    """The clauses of a granular scope's query on its type; ``ScopeError`` when the server
    cannot enforce it (``scopes.enforceable_query``, or a parameter its type does not
    have)."""
    enforceable_query(scope)
    if not scope.query or scope.type is None:
        return ()
    type = scope.type
    pairs = [(name, unquote(value)) for name, value in scope.query]
    try:
        criteria = parse_criteria(type, pairs, context)
    except FhirError as exc:
        raise ScopeError(f"Scope query on {type} cannot be enforced: {exc}") from exc
    if not criteria.clauses:
        raise ScopeError(f"Scope query on {type} names no search criterion")
    return criteria.clauses


class SmartScopes:
    def __init__(self, context: SearchContext) -> None:
        self._context = context
        self._clauses: dict[Scope, Clause | None] = {}  # each granular scope's, parsed once
        self._compartment = CompartmentPolicy(lambda principal: principal.patient)

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        scopes = principal.scopes
        if scopes is None:
            return NOTHING
        if type is not None:
            return self._of_type(principal, scopes, interaction, type)
        if scopes.permits(interaction, None):
            return EVERYTHING
        wildcard = self._alternatives(principal, scopes, interaction, None)
        if interaction in SYSTEM_LEVEL:
            return _any(wildcard)
        full = scopes.types(interaction) or ()
        parts: list[Clause] = [TypeClause(full)] if full else []
        parts.extend(wildcard)
        narrow = {s.type for s in scopes.scopes if s.type and (s.query or s.context == "patient")}
        for each in sorted(narrow - set(full)):
            narrowed = self._of_type(principal, scopes, interaction, each)
            if narrowed.permitted:
                parts.append(AllClause((TypeClause((each,)), *narrowed.clauses)))
        return _any(parts)

    def _of_type(
        self, principal: Principal, scopes: ScopeSet, interaction: Interaction, type: str
    ) -> Narrowing:
        if scopes.permits(interaction, type):
            return EVERYTHING
        return _any(self._alternatives(principal, scopes, interaction, type))

    def _alternatives(
        self, principal: Principal, scopes: ScopeSet, interaction: Interaction, type: str | None
    ) -> list[Clause]:
        """The clauses of each narrowing scope (granular, ``patient/``) that reaches
        ``type`` (None: the wildcard ones, for what they reach of every type)."""
        found: list[Clause] = []
        for scope in scopes.scopes:
            if scope.covers(interaction, type) or not scope.reaches(interaction, type):
                continue
            clauses: list[Clause] = []
            if scope.query:
                clause = self._clause(scope)
                if clause is None:
                    continue
                clauses.append(clause)
            if scope.context == "patient":
                view = self._compartment.narrowing(principal, interaction, type)
                if not view.permitted:
                    continue
                clauses.extend(view.clauses)
            if clauses:
                found.append(clauses[0] if len(clauses) == 1 else AllClause(tuple(clauses)))
        return found

    def _clause(self, scope: Scope) -> Clause | None:
        """A granular scope's clause; None (it grants nothing) for one the server cannot
        enforce, which only an external provider's token can carry (the token endpoint
        refuses it)."""
        if scope in self._clauses:
            return self._clauses[scope]
        try:
            clauses: tuple[Clause, ...] | None = clauses_of(scope, self._context)
        except ScopeError:
            clauses = None
        found = None if not clauses else clauses[0] if len(clauses) == 1 else AllClause(clauses)
        if len(self._clauses) < 4096:
            self._clauses[scope] = found
        return found

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        """By type and letter (a granular scope's query is the narrowing's part: the facts
        cannot tell a category)."""
        scopes = principal.scopes
        return scopes is not None and any(
            s.reaches(interaction, facts.type)
            and (s.context != "patient" or self._compartment.admits(principal, interaction, facts))
            for s in scopes.scopes
        )


def _any(parts: list[Clause]) -> Narrowing:
    """Permitted where any of ``parts`` holds; nothing without one."""
    if not parts:
        return NOTHING
    return where(parts[0] if len(parts) == 1 else AnyClause(tuple(parts)))
