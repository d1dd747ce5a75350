"""Program rules: checks and consequences that run on every write, inside its unit.

A ``Rule`` is registered for resource types (or all of them) in a ``RuleSet``, which the
composition root builds (``server/app.py``) and hands to the pipeline. For each write of a
type it is registered for, the pipeline calls ``check`` with a ``Change``, inside the write's
unit, after conditional matching and ``If-Match`` and before the version is stored. The rule
answers with a ``Verdict``: allow, refuse (an error: its HTTP status and issues reach the
client, and the whole unit — a transaction Bundle's every entry — is rolled back), allow with
an amended next version (``amend``: a server-owned element the rule sets, such as a stamp;
the pipeline validates the amended resource again, inside the unit, before storing it, and
the rules after it see the amended one), with warnings for the client, or with derived
writes. Derived writes run through the same pipeline in the same unit after the cause is
stored (validated, ruled, stored, with their own outbox events), as the server's own writes:
the caller's permissions do not limit them; the rules judge them as the cause's principal, or
as the one the rule names (``Write.principal``: an organisation the rule acts for). They nest
at most ``MAX_DEPTH`` deep.

``admit`` runs before anything else, outside the unit, on the write as asked: for refusals
that depend on nothing stored (a type that cannot be written at all). ``prepare`` may amend a
create, an update by id or a patch by id before it is validated, outside the unit, from the
version stored then; inside the unit ``Change.prepared`` says whether that version is still
the stored one — when it is, what ``prepare`` decided holds and ``check`` need not amend again
(and the pipeline need not validate again). Inside a unit ``prepare`` runs for a create, a
transaction's PUT that creates (as for a create) and an operation's or derived update by id
(from the version the unit holds); other Bundle entries and conditional updates skip it.

Rules run on every kind of write: create, update, patch, delete, their conditional forms,
Bundle entries, operations' writes and derived writes. They must be cheap (they run while the
writers' lock is held) and deterministic; they read through ``Change.reader``, which sees the
unit's earlier writes and is not narrowed by the caller's permissions — what a rule reads must
reach the caller only through the issues it chooses to write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from server.auth.principal import Principal
from server.errors import FhirError, MethodNotAllowed
from server.fhir.conformance import CONFORMANCE_TYPES
from server.fhir.outcome import Issue
from server.ports import Reader, Version
from server.writes.write import Interaction, Write

MAX_DEPTH = 4  # derived writes of derived writes ...


class Change:
    """One write as a rule sees it. ``stored`` is the current stored version (None when the
    resource was never stored; a deleted resource's deletion version otherwise), ``previous``
    its resource (None when absent or deleted), ``next`` the proposed resource (None on
    delete). ``depth`` is 0 for the write a client asked for, 1 and more for derived writes."""

    __slots__ = (
        "principal",
        "interaction",
        "type",
        "id",
        "stored",
        "next",
        "reader",
        "depth",
        "root",
        "prepared",
    )

    def __init__(
        self,
        principal: Principal,
        interaction: Interaction,
        type: str,
        id: str,
        stored: Version | None,
        next: dict[str, Any] | None,
        reader: Reader,
        depth: int,
        root: str = "",
        prepared: bool = False,
    ) -> None:
        self.principal = principal
        self.interaction = interaction
        self.type = type
        self.id = id
        self.stored = stored
        self.next = next
        self.reader = reader
        self.depth = depth
        self.root = root or type
        """The path of the resource in what the client sent (``Task``, or
        ``Bundle.entry[2].resource``): the start of every expression a rule's issues name."""
        self.prepared = prepared
        """Whether the rules' ``prepare`` made ``next`` from the version stored now."""

    @property
    def previous(self) -> dict[str, Any] | None:
        if self.stored is None or self.stored.body is None:
            return None
        body: dict[str, Any] = orjson.loads(self.stored.body)
        return body


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer: ``refusal`` (the error to answer with) or allowed, with ``next`` (the
    amended resource to store instead of the proposed one, None: unchanged), ``warnings`` for
    the client and the writes it derives."""

    refusal: FhirError | None = None
    derived: tuple[Write, ...] = ()
    next: dict[str, Any] | None = None
    warnings: tuple[Issue, ...] = ()


ALLOW = Verdict()


def refuse(error: FhirError) -> Verdict:
    return Verdict(refusal=error)


def derive(*writes: Write) -> Verdict:
    return Verdict(derived=writes)


def amend(next: dict[str, Any]) -> Verdict:
    """Allow the write with ``next`` stored instead of what was proposed (not on a delete)."""
    return Verdict(next=next)


class Rule:
    """A program rule; override ``check`` (and ``admit`` for refusals that need no data).
    ``types``: the resource types it applies to (None: every type)."""

    name = "rule"
    types: frozenset[str] | None = None

    def admit(self, write: Write) -> None:
        """Raise a ``FhirError`` to refuse ``write`` before anything is read or written."""

    def prepare(
        self, write: Write, resource: dict[str, Any], stored: Version | None
    ) -> dict[str, Any] | None:
        """The resource to validate and store instead of ``resource`` (None: unchanged),
        decided outside the unit from ``stored`` (the version stored then, None: absent)."""
        return None

    def condition(self, write: Write, resource: dict[str, Any]) -> str | None:
        """An ``If-None-Exist`` search for a create sent without one (None: none): the create
        then matches as a conditional create does, under the unit's locked criteria — a rule's
        way to make a resubmitted record answer with the one already stored."""
        return None

    def check(self, change: Change) -> Verdict:
        return ALLOW


class RuleSet:
    """The rules of one server, by the resource type they apply to."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self._any = tuple(r for r in self.rules if r.types is None)
        self._by_type: dict[str, tuple[Rule, ...]] = {}
        self._prepares: dict[str, bool] = {}

    def of(self, type: str) -> tuple[Rule, ...]:
        """The rules that apply to writes of ``type``, in registration order."""
        found = self._by_type.get(type)
        if found is None:
            found = self._by_type[type] = tuple(
                r for r in self.rules if r.types is None or type in r.types
            )
        return found

    def admit(self, write: Write) -> None:
        for rule in self.of(write.type):
            rule.admit(write)

    def prepares(self, kind: str) -> bool:
        """Whether a rule for resources of type ``kind`` amends writes in prepare."""
        found = self._prepares.get(kind)
        if found is None:
            found = self._prepares[kind] = any(
                type(r).prepare is not Rule.prepare for r in self.of(kind)
            )
        return found

    def condition(self, write: Write, resource: dict[str, Any]) -> str | None:
        """The first rule's implicit ``If-None-Exist`` for a create sent without one."""
        for rule in self.of(write.type):
            found = rule.condition(write, resource)
            if found is not None:
                return found
        return None

    def prepare(
        self, write: Write, resource: dict[str, Any], stored: Version | None
    ) -> dict[str, Any]:
        for rule in self.of(write.type):
            amended = rule.prepare(write, resource, stored)
            if amended is not None:
                resource = amended
        return resource


class ReadOnlyDefinitions(Rule):
    """The server's definitions (StructureDefinition, ValueSet, ... from ``profiles/``) are
    read-only: every write of those types is refused with 405."""

    name = "definitions-read-only"
    types = CONFORMANCE_TYPES

    @staticmethod
    def _error(type: str) -> MethodNotAllowed:
        return MethodNotAllowed(
            f"{type} resources are the server's definitions (profiles/): read-only",
            headers={"Allow": "GET, HEAD"},
        )

    def admit(self, write: Write) -> None:
        raise self._error(write.type)

    def check(self, change: Change) -> Verdict:
        return refuse(self._error(change.type))


def default_rules() -> list[Rule]:
    """The rules every server runs (the composition root adds the program's and any given)."""
    return [ReadOnlyDefinitions()]
