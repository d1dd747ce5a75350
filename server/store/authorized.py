"""The one door to the data: a repository bound to the principal of one request.

Every read, write and search of a request goes through an ``AuthorizedRepository``; the
checks happen here and nowhere else (routes never check permissions). Interaction code is
plain synchronous code that receives an authorized ``Reader`` or ``Unit``; this class decides
where it runs (see ``runner.py``) and wraps the store so each access is checked.

Decisions come from the application's access policies bound to the principal
(``server/auth/policy.py``, ``Access``): per interaction and type, refused (403) or a
narrowing, clauses the door adds *inside* what it runs — a search's criteria (and the inner
clauses of its chains and ``_has``), a read (a hidden resource reads as a missing one), every
``_include`` branch before its limit, history, the bulk reads, a conditional interaction's
match — so pages, ``_count`` and totals count only what the caller may see. A write must
leave a version the caller may see, of a resource it could see (or that did not exist).

``system()`` of a unit and ``checking`` give the unnarrowed store to validation, program rules
and conformance lookups; what they read never reaches the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from typing import Any, TypeVar

from server.auth.interactions import Interaction
from server.auth.policy import Access, Facts, Narrowing, Policy
from server.auth.principal import Principal
from server.errors import FhirError, Forbidden, MethodNotAllowed, NotFound, OutsideView
from server.fhir.conformance import CONFORMANCE_TYPES
from server.ports import (
    PUT,
    HistoryQuery,
    Included,
    Page,
    Reader,
    SearchPage,
    Unit,
    UpdateMode,
    Version,
    WriteResult,
)
from server.search.access_facts import split
from server.search.query import (
    AllClause,
    AnyClause,
    ChainClause,
    Clause,
    CompartmentClause,
    Criteria,
    HasClause,
    Include,
    OwnerClause,
    PerTypeClause,
    ReferenceClause,
    ReferenceValue,
    SearchQuery,
)
from server.search.registry import patient_compartment
from server.store.base import Origin
from server.store.runner import Runner

T = TypeVar("T")
logger = logging.getLogger("calaim_fhir.access")

_NONE: Clause = AnyClause(())  # holds for no resource


class _Checked:
    """``inner`` through the door; ``definitions``: where the conformance types are read (the
    in-memory definitions), through the same checks."""

    def __init__(
        self,
        inner: Reader,
        access: Access,
        definitions: Reader | None = None,
        strict: bool = False,
    ) -> None:
        self._inner = inner
        self._access = access
        self._definitions = definitions
        self._strict = strict

    def _admitted(self, interaction: Interaction, version: Version) -> bool:
        """The per-resource decision on a version the narrowing let through, from its indexed
        facts (never its body): a safety net behind the narrowing. A deletion has no content
        to give away and passes; a version without facts (stored before they existed) fails."""
        if version.body is None:
            return True
        facts = Facts(version.type, version.id, *_columns(version.labels, version.owners))
        if version.labels is not None and self._access.admits(interaction, facts):
            return True
        if self._strict:
            raise FhirError(
                f"The access decision refused {version.type}/{version.id}, which the narrowing"
                " let through"
            )
        logger.warning(
            "access: %s/%s left out by the per-resource decision", version.type, version.id
        )
        return False

    def _net(self, interaction: Interaction, versions: list[Version]) -> list[Version]:
        if self._access.unrestricted:
            return versions
        return [v for v in versions if self._admitted(interaction, v)]

    def _one(self, interaction: Interaction, version: Version | None) -> Version | None:
        if version is None or self._access.unrestricted:
            return version
        return version if self._admitted(interaction, version) else None

    def _store(self, type: str | None) -> Reader:
        if self._definitions is not None and type in CONFORMANCE_TYPES:
            return self._definitions
        return self._inner

    def _narrow(self, interaction: Interaction, type: str | None) -> Narrowing:
        narrowing = self._access.narrowing(interaction, type)
        if not narrowing.permitted:
            raise Forbidden(f"Not permitted: {interaction} on {type or 'the system'}")
        return narrowing

    def _criteria(self, criteria: Criteria, interaction: Interaction) -> Criteria:
        """``criteria`` with the caller's narrowing added, inside chains and ``_has`` too."""
        type = criteria.type
        if type is None:
            narrowing = self._narrow(Interaction.SEARCH_SYSTEM, None)
            for each in criteria.types:
                self._narrow(Interaction.SEARCH_TYPE, each)
        else:
            narrowing = self._narrow(interaction, type)
        if self._access.unrestricted:
            return criteria
        clauses = tuple(self._inside(c) for c in criteria.clauses)
        added = tuple(n for n in narrowing.clauses if not _implied(n, clauses, type))
        return replace(criteria, clauses=clauses + added)

    def _inside(self, clause: Clause) -> Clause:
        """A clause whose inner queries (chains, ``_has``) see only what the caller may see:
        filtering on a hidden resource must not tell that it exists."""
        if isinstance(clause, ChainClause):
            inner = self._inside(clause.clause)
            types = clause.target_types
            narrowing = self._access.narrowing(
                Interaction.SEARCH_TYPE, types[0] if len(types) == 1 else None
            )
            narrowed = _narrowed(inner, narrowing)
            return replace(clause, clause=narrowed)
        if isinstance(clause, HasClause):
            inner = self._inside(clause.clause)
            narrowing = self._access.narrowing(Interaction.SEARCH_TYPE, clause.source_type)
            return replace(clause, clause=_narrowed(inner, narrowing))
        if isinstance(clause, PerTypeClause):
            return replace(clause, clause=self._inside(clause.clause))
        return clause

    def read(self, type: str, id: str, within: Sequence[Clause] = ()) -> Version | None:
        narrowing = self._narrow(Interaction.READ, type)
        found = self._store(type).read(type, id, (*within, *narrowing.clauses))
        return self._one(Interaction.READ, found)

    def visible(self, type: str, id: str) -> bool:
        if self._access.unrestricted:
            return True
        narrowing = self._access.narrowing(Interaction.READ, type)
        if not narrowing.permitted:
            return False
        return self._store(type).read(type, id, narrowing.clauses) is not None

    def versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        narrowed = False
        for type in sorted({type for type, _ in keys}):
            narrowed = self._narrow(Interaction.READ, type).narrowed or narrowed
        if not narrowed and self._definitions is None:
            return self._inner.versions(keys)
        out: dict[tuple[str, str], int] = {}
        for type, id in keys:
            found = self.read(type, id)
            if found is not None:
                out[(type, id)] = found.version
        return out

    def vread(
        self, type: str, id: str, version: int, within: Sequence[Clause] = ()
    ) -> Version | None:
        narrowing = self._narrow(Interaction.VREAD, type)
        found = self._store(type).vread(type, id, version, (*within, *narrowing.clauses))
        return self._one(Interaction.VREAD, found)

    def history(self, query: HistoryQuery) -> Page:
        if query.id is not None:
            interaction = Interaction.HISTORY_INSTANCE
        elif query.type is not None:
            interaction = Interaction.HISTORY_TYPE
        else:
            interaction = Interaction.HISTORY_SYSTEM
        narrowing = self._narrow(interaction, query.type)
        if narrowing.clauses:
            query = replace(query, within=query.within + narrowing.clauses)
        page = self._store(query.type).history(query)
        if self._access.unrestricted:
            return page
        return replace(page, items=self._net(interaction, page.items))

    def search(self, query: SearchQuery) -> SearchPage:
        criteria = self._criteria(query.criteria, Interaction.SEARCH_TYPE)
        if criteria is not query.criteria:
            query = replace(query, criteria=criteria)
        if query.total in ("estimate", "auto") and not self._access.unrestricted:
            # an estimate comes from statistics of every row; a restricted caller's total
            # counts only what it may see
            query = replace(query, total="accurate" if query.total == "estimate" else "bounded")
        page = self._store(query.criteria.type).search(query)
        if self._access.unrestricted:
            return page
        return replace(page, items=self._net(Interaction.SEARCH_TYPE, page.items))

    def count_by(
        self, criteria: Criteria, param: str, target_type: str | None = None
    ) -> dict[str, int]:
        """A search's grouped count: only what the caller may see is counted."""
        criteria = self._criteria(criteria, Interaction.SEARCH_TYPE)
        return self._store(criteria.type).count_by(criteria, param, target_type)

    def stamp(self, type: str) -> tuple[Any, ...] | None:
        """The store's stamp of ``type`` for a caller who may search all of it (its narrowing
        adds no clause), with whether the caller is unrestricted (what the per-resource
        decision lets through, a restricted caller's search is checked for): what is kept
        under it is what this caller's search of ``type`` finds. None for a caller narrowed
        per resource; refused, like the search, for one who may not search ``type``."""
        narrowing = self._narrow(Interaction.SEARCH_TYPE, type)
        if narrowing.clauses:
            return None
        found = self._store(type).stamp(type)
        return None if found is None else (*found, self._access.unrestricted)

    def include(
        self,
        versions: list[Version],
        includes: tuple[Include, ...],
        limit: int,
        within: Sequence[Clause] = (),
        max_bytes: int | None = None,
    ) -> Included:
        """Included resources are reads: of the types an include names up front, of whatever
        the caller may read of any type in each branch, before its limit."""
        for include in includes:
            if include.reverse:
                self._narrow(Interaction.READ, include.source_type)
            elif include.target_type is not None:
                self._narrow(Interaction.READ, include.target_type)
        narrowing = self._access.narrowing(Interaction.READ, None)
        if not narrowing.permitted:
            return Included([])
        store = self._store(versions[0].type if versions else None)
        found = store.include(
            versions, includes, limit, (*within, *narrowing.clauses), max_bytes
        )
        return replace(found, versions=self._net(Interaction.READ, found.versions))

    def patient_resources(
        self,
        patient_ids: Sequence[str],
        params: Mapping[str, Sequence[str]],
        within: Sequence[Clause] = (),
    ) -> Iterator[tuple[str, Version]]:
        """A search of each type named (by its reference parameters)."""
        for type in sorted(params):
            self._narrow(Interaction.SEARCH_TYPE, type)
        if self._access.unrestricted:
            return self._inner.patient_resources(patient_ids, params, within)
        clauses = self._narrow(Interaction.SEARCH_SYSTEM, None).clauses
        found = self._inner.patient_resources(patient_ids, params, (*within, *clauses))
        return ((patient, v) for patient, v in found if self._admitted(Interaction.SEARCH_TYPE, v))

    def scan(
        self, type: str, after: int | None, limit: int, within: Sequence[Clause] = ()
    ) -> list[Version]:
        narrowing = self._narrow(Interaction.SEARCH_TYPE, type)
        found = self._store(type).scan(type, after, limit, (*within, *narrowing.clauses))
        return self._net(Interaction.SEARCH_TYPE, found)


def _implied(narrowing: Clause, clauses: tuple[Clause, ...], type: str | None) -> bool:
    """Whether the search's own ``clauses`` already hold only for resources that satisfy the
    ``narrowing`` clause (then the statement need not test it again): the same clause, or,
    for a patient's compartment (``OwnerClause``, ``CompartmentClause``), a reference to the
    patient under one of the type's compartment parameters (``Observation?subject=Patient/p1``
    or the compartment search ``Patient/p1/Observation`` within Patient p1's compartment)."""
    if narrowing in clauses:
        return True
    if type is None or type == "Patient":
        return False
    if isinstance(narrowing, OwnerClause):
        codes = set(patient_compartment().get(type, ()))
        target = ReferenceValue("Patient", narrowing.patient)
    elif isinstance(narrowing, CompartmentClause):
        codes = {code for t, params in narrowing.params if t == type for code in params}
        target = ReferenceValue(narrowing.target_type, narrowing.target_id)
    else:
        return False
    for c in clauses:
        if isinstance(c, ReferenceClause) and c.param in codes and c.values == (target,):
            return True
        if (
            isinstance(c, CompartmentClause)
            and ReferenceValue(c.target_type, c.target_id) == target
            and {code for t, params in c.params if t == type for code in params} <= codes
        ):
            return True
    return False


@lru_cache(maxsize=4096)
def _columns(
    labels: str | None, owners: str | None
) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    """A version's stored facts columns as ``Facts``' labels and owners, parsed once per
    distinct pair of texts (the same few come back row after row, page after page)."""
    return (
        frozenset(
            (system, code) for system, _, code in (label.partition("|") for label in split(labels))
        ),
        split(owners),
    )


def _narrowed(inner: Clause, narrowing: Narrowing) -> Clause:
    if not narrowing.permitted:
        return _NONE
    if not narrowing.clauses:
        return inner
    return AllClause((inner, *narrowing.clauses))


class _CheckedUnit(_Checked):
    _inner: Unit

    def __init__(self, inner: Unit, access: Access) -> None:
        super().__init__(inner, access)
        self._unit = inner
        self._written: dict[tuple[str, str], tuple[Interaction, Version]] = {}

    def match(self, criteria: Criteria, limit: int | None = 2) -> list[Version]:
        """The matches the caller may see: a match outside its view is no match (and never
        counts towards several)."""
        return self._unit.match(self._criteria(criteria, Interaction.SEARCH_TYPE), limit)

    def _hidden(self, interaction: Interaction, type: str, id: str) -> bool:
        """Whether ``type/id`` is live but outside what the caller may change."""
        clauses = self._narrow(interaction, type).clauses
        if not clauses:
            return False
        current = self._unit.read(type, id)
        if current is None or current.deleted:
            return False
        return self._unit.read(type, id, clauses) is None

    def _kept(self, interaction: Interaction, result: WriteResult) -> WriteResult:
        """Remembers what the caller wrote, for ``settle`` at the unit's end."""
        version = result.version
        if version is not None:
            key = (version.type, version.id)
            if version.deleted:
                self._written.pop(key, None)
            else:
                first = self._written.get(key)
                self._written[key] = (interaction if first is None else first[0], version)
        return result

    def settle(self) -> None:
        """The caller may see what it wrote, as the unit leaves it: otherwise nothing is kept
        (the unit fails). Judged at the end, not after each write, so that the order of a
        transaction's entries does not matter (a plan's new Patient is visible through the
        Coverage naming the plan, whichever entry comes first)."""
        for (type, id), (interaction, version) in self._written.items():
            clauses = self._narrow(interaction, type).clauses
            facts = Facts(type, id, *_columns(version.labels, version.owners))
            if (
                clauses and self._unit.read(type, id, clauses) is None
            ) or not self._access.admits(interaction, facts):
                current = self._unit.read(type, id)
                if current is None or current.deleted:
                    continue  # the unit deleted it again: nothing of it is kept
                raise OutsideView(
                    f"Not permitted: {interaction} of a {type} outside what this client may see",
                    f"{type}/{id}",
                )

    def target(
        self, type: str, id: str, interaction: Interaction, within: Sequence[Clause] = ()
    ) -> Version | None:
        """The resource a write changes, read under that write's own permission (an update
        needs no read permission): hidden by its narrowing = missing."""
        clauses = (*within, *self._narrow(interaction, type).clauses)
        return self._one(interaction, self._unit.target(type, id, interaction, clauses))

    def create(self, type: str, resource: dict[str, Any], *, id: str | None = None) -> WriteResult:
        self._narrow(Interaction.CREATE, type)
        return self._kept(Interaction.CREATE, self._unit.create(type, resource, id=id))

    def update(
        self, type: str, id: str, resource: dict[str, Any], mode: UpdateMode = PUT
    ) -> WriteResult:
        """A narrowed caller changes only what it can see, and never creates a resource under
        an id of its own choosing (update-as-create): an id outside its view may be missing or
        hidden, and both answer alike (405 for PUT, 404 for PATCH), so the answer neither
        reveals nor overwrites another's resource. An id the server ``assigned`` is fresh."""
        method = mode.method
        interaction = Interaction.PATCH if method == "PATCH" else Interaction.UPDATE
        clauses = self._narrow(interaction, type).clauses
        if clauses and not mode.assigned:
            current = self._unit.read(type, id, clauses)
            if (current is None or current.deleted) and self._readable(type, id):
                # the caller sees it but may not change it: refusing says nothing new
                raise Forbidden(f"Not permitted: {interaction} of {type}/{id}")
            if current is None or current.deleted:
                if method == "PATCH":
                    raise NotFound(f"{type}/{id} is not known")
                raise MethodNotAllowed(
                    f"{type}/{id} is not one this client can see, and this client may not"
                    " create resources with ids of its own: create it with POST",
                    expression=f"{type}.id",
                )
        result = self._unit.update(type, id, resource, mode)
        return self._kept(interaction, result)

    def _readable(self, type: str, id: str) -> bool:
        """Whether the caller may read the live ``type/id``."""
        narrowing = self._access.narrowing(Interaction.READ, type)
        if not narrowing.permitted:
            return False
        current = self._unit.read(type, id, narrowing.clauses)
        return current is not None and not current.deleted

    def delete(self, type: str, id: str) -> WriteResult:
        if self._hidden(Interaction.DELETE, type, id):
            # what the caller cannot see answers as what is not there: nothing deleted
            return WriteResult(None, changed=False)
        return self._unit.delete(type, id)

    def on_behalf(self, interaction: Interaction, type: str) -> Unit:
        self._narrow(interaction, type)  # refused outright: 403
        return self._unit.system()

    def system(self) -> Unit:
        """The unit itself, unnarrowed: for validation, program rules and the writes rules
        derive (the server's own writes); what it reads never reaches the caller unchecked."""
        return self._unit.system()


def system_reader(reader: Reader) -> Reader:
    """The store behind the door's ``reader``, unnarrowed (``reader`` itself when it is not
    the door's): for an operation whose verdicts rest on the whole record. What it reads
    reaches the caller only through the operation's output policy."""
    return reader._inner if isinstance(reader, _Checked) else reader


class AuthorizedRepository:
    def __init__(
        self,
        runner: Runner,
        principal: Principal,
        request_id: str | None = None,
        policies: Sequence[Policy] = (),
        definitions: Reader | None = None,
        strict: bool = False,
    ) -> None:
        self.principal = principal
        self.definitions = definitions
        self.strict = strict
        self.policies = tuple(policies)
        self.access = Access(principal, self.policies)
        self.origin = Origin(principal.id, principal.organization, principal.user, request_id)
        self._runner = runner

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """An authorized reader on the calling thread, blocking (worker threads: long
        operations and asynchronous jobs; request handlers use ``reading``)."""
        with self._runner.reader() as reader:
            yield _Checked(reader, self.access, self.definitions, self.strict)

    async def checking(self, fn: Callable[[Reader, Reader], T]) -> T:
        """Run ``fn`` with the system reader (no principal narrows it) and the caller's view of
        the same reads, where the store's reads run, in one snapshot where that is cheap: for
        the validation that prepares a write. What the system reader reads never reaches the
        caller; conditional matches and reference targets go by the caller's view."""
        access, definitions, strict = self.access, self.definitions, self.strict
        return await self._runner.snapshot(
            lambda reader: fn(reader, _Checked(reader, access, definitions, strict))
        )

    async def reading(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` with an authorized reader, where the store's reads run."""
        access, definitions, strict = self.access, self.definitions, self.strict
        return await self._runner.read(
            lambda reader: fn(_Checked(reader, access, definitions, strict))
        )

    async def writing(self, fn: Callable[[Unit], T]) -> T:
        """Run ``fn`` inside one write transaction: all its writes commit together or none do;
        returns once they are durable."""
        access = self.access

        def checked(unit: Unit) -> T:
            door = _CheckedUnit(unit, access)
            value = fn(door)
            door.settle()
            return value

        return await self._runner.write(checked, self.origin)
