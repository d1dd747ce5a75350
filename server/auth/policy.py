"""Access policies: what a principal may see and change, as clauses of the typed query.

The door (``server/store/authorized.py``) asks every policy of the application, for each
interaction and resource type, for a ``Narrowing``: refused outright, or permitted for the
resources that satisfy some clauses (``server/search/query.py``). The door adds those clauses
to whatever it runs — a search's criteria, a read, every ``_include`` branch before its row
limit, the inner queries of chains and ``_has``, history, the bulk reads, the match of a
conditional interaction — so limits, pages and totals count only what the caller may see.
Several policies narrow together (every one must permit; their clauses are ANDed).

Besides the clauses, each policy decides on single resources from their indexed facts
(``Facts``: type, id, security labels and compartment owners, written at index time, never
read from the stored JSON). The door applies that decision to everything it returns, as a
safety net behind the narrowing, and to every version a write would store (a caller never
writes what it could not see).

A policy is any object with ``narrowing`` and ``admits``. SMART scopes are one
(``scope_policy.py``, installed by the app whenever authentication is on: a type and
interaction no scope covers is refused). In view: granular scopes
(``patient/Observation.rs?category=...`` as the clauses of ``category`` on Observation), care
relationships and consent (a policy whose clauses join the access-grant rows). The two
policies in ``policies.py`` (security label, patient compartment) are complete examples.

A principal with ``allow_all`` (the local operator) is not narrowed. Any other principal is
refused everything no policy grants: an application without policies serves only
``allow_all`` principals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from server.auth.interactions import Interaction
from server.auth.principal import Principal
from server.search.query import Clause


@dataclass(frozen=True, slots=True)
class Narrowing:
    """What a principal may reach of one type for one interaction: nothing (``permitted``
    False), or the resources that satisfy every clause (none: all of them)."""

    permitted: bool = True
    clauses: tuple[Clause, ...] = ()

    def __and__(self, other: Narrowing) -> Narrowing:
        if not (self.permitted and other.permitted):
            return NOTHING
        return Narrowing(True, self.clauses + other.clauses)

    @property
    def narrowed(self) -> bool:
        return bool(self.clauses) or not self.permitted


EVERYTHING = Narrowing()
NOTHING = Narrowing(False)


def where(*clauses: Clause) -> Narrowing:
    return Narrowing(True, clauses)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the door knows of one stored version without reading its body: written with its
    index rows. ``labels``: its ``meta.security`` codings as ``(system, code)``;
    ``owners``: the compartments it belongs to (``Patient/123``: a reference under one of
    its type's Patient compartment parameters, or the Patient itself)."""

    type: str
    id: str
    labels: frozenset[tuple[str, str]] = frozenset()
    owners: frozenset[str] = frozenset()


class Policy(Protocol):
    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        """What ``principal`` may reach of ``type`` (None: of any type, for a system-level
        interaction or a read whose type is known only afterwards, such as an include: the
        clauses must then hold for every type they admit)."""

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        """Whether ``principal`` may have the version these facts describe (read
        interactions: never refuse what ``narrowing`` lets through; writes: the version a
        write would store)."""


class Access:
    """The policies of an application bound to one principal (for one request): the door's
    single source of decisions. Narrowings are computed once per (interaction, type)."""

    __slots__ = ("principal", "_policies", "_cache")

    def __init__(self, principal: Principal, policies: Sequence[Policy] = ()) -> None:
        self.principal = principal
        self._policies = tuple(policies)
        self._cache: dict[tuple[Interaction, str | None], Narrowing] = {}

    @property
    def unrestricted(self) -> bool:
        return self.principal.allow_all

    def narrowing(self, interaction: Interaction, type: str | None) -> Narrowing:
        if self.principal.allow_all:
            return EVERYTHING
        key = (interaction, type)
        found = self._cache.get(key)
        if found is None:
            found = NOTHING
            if self._policies:
                found = EVERYTHING
                for policy in self._policies:
                    found = found & policy.narrowing(self.principal, interaction, type)
            self._cache[key] = found
        return found

    def admits(self, interaction: Interaction, facts: Facts) -> bool:
        if self.principal.allow_all:
            return True
        if not self._policies:
            return False
        for policy in self._policies:
            if not policy.admits(self.principal, interaction, facts):
                return False
        return True
