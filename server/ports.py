"""The read and write ports the program works on: ``Reader``, ``Unit`` and the records they pass.

A ``Reader`` reads stored versions (read, vread, history, search, includes); a ``Unit`` is one
write transaction (a ``Reader`` that also stores versions). Program rules (``server/ecm/``),
the write pipeline (``server/writes/``), operations and the API are written against these
protocols only; the stores (``server/store/``: the access door ``authorized.py`` and the SQL
adapter ``sql/``) implement them. The store's own port (``Repository``, ``Outbox``,
``JobStore``: ``server/store/base.py``) is for the composition root and the store's runner.

Here, and not in ``server/store/``, so that ``server/ecm/`` reads and writes through them
without importing the storage package (an import-linter contract in ``pyproject.toml``).

Writes run as ``Unit``s: every write interaction is one unit (a conditional interaction's
criteria lookup and its write included, so both are atomic); a transaction Bundle is one unit
for all its entries. What a write means (conditional interactions, patches, validation,
program rules) is decided above the store, by the write pipeline; a unit only stores versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from server.auth.interactions import Interaction
from server.search.query import Clause, Criteria, Cursor, Include, SearchQuery

Method = Literal["POST", "PUT", "PATCH", "DELETE"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource. ``body`` is the exact stored JSON (None if deleted)."""

    type: str
    id: str
    version: int
    last_updated: int  # microseconds since the epoch, UTC; strictly increasing in commit order
    deleted: bool
    body: bytes | None
    method: Method = "PUT"
    position: int = 0  # keyset position in the listing it came from (history or search);
    # 0 for a version just written
    # its access facts (``server/search/access_facts.py``), written with it; None: not known
    # (a version stored before they existed, until ``calaim-fhir reindex`` fills them in)
    labels: str | None = None
    owners: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``created`` (201), ``changed`` (a new version exists) and the version."""

    version: Version | None
    created: bool = False
    changed: bool = True


@dataclass(frozen=True, slots=True)
class UpdateMode:
    """How a ``Unit.update`` came about: ``method``, the request's (PUT, or PATCH for a patch),
    recorded with the version; ``assigned``, the server chose the id just now (a conditional
    update that matched nothing), so it names no resource the caller could not see."""

    method: Method = "PUT"
    assigned: bool = False


PUT = UpdateMode()
"""A plain update: the client's PUT of a resource under an id it names."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    type: str | None = None
    id: str | None = None
    since: int | None = None  # versions last updated at or after
    at: tuple[int, int] | None = None  # versions current at some moment in [start, end)
    count: int = 20
    before_seq: int | None = None  # keyset cursor: versions older than this position
    within: tuple[Clause, ...] = ()  # only resources whose current version satisfies these
    max_bytes: int | None = None  # the page ends early past this many bytes (``fitting``)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``has_more`` says a next page exists after the last item;
    ``cut``: the page ended early, at its byte bound."""

    items: list[Version]
    has_more: bool
    cut: bool = False


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search matches. ``next``: where the page after this one starts (None: this
    is the last page); ``previous``: where the page before it ends (None: this is the first);
    ``total``: the number of matches, when the query asked for it; ``cut``: the page ended
    early, at the query's byte bound (``next`` then points past the last item)."""

    items: list[Version]
    next: Cursor | None
    previous: Cursor | None
    total: int | None = None
    cut: bool = False


@dataclass(frozen=True, slots=True)
class Included:
    """What ``_include``/``_revinclude`` add to a page: ``versions``; ``cut``, why more were
    left out (``count``: the include limit; ``bytes``: the byte bound), None if nothing was;
    ``hop_limit``: ``:iterate`` stopped at its hop limit while it was still adding resources."""

    versions: list[Version]
    cut: Literal["count", "bytes"] | None = None
    hop_limit: bool = False


INCLUDE_HOPS = 4
"""Hops of ``_include:iterate`` / ``_revinclude:iterate`` (each hop follows the references of
what the one before added)."""

ENTRY_BYTES = 512
"""What one Bundle entry adds around a resource's stored JSON at most (``fullUrl`` and the
``search``, ``request`` and ``response`` members), counted with each resource against a byte
bound."""


def entry_size(version: Version) -> int:
    """A version's bytes in a Bundle entry, as a byte bound counts them."""
    return ENTRY_BYTES + (len(version.body) if version.body is not None else 0)


def fitting(sizes: Sequence[int], max_bytes: int | None, at_least: int = 1) -> int:
    """How many of the leading items of stored ``sizes`` (bytes of JSON) a response bounded by
    ``max_bytes`` (None: unbounded) holds, each counted with ``ENTRY_BYTES``; ``at_least`` of
    them whatever their size (a page: one, so a resource larger than the bound is still
    returned, alone)."""
    if max_bytes is None:
        return len(sizes)
    used = 0
    for n, size in enumerate(sizes):
        used += size + ENTRY_BYTES
        if used > max_bytes:
            return min(max(n, at_least), len(sizes))
    return len(sizes)


class Reader(Protocol):
    """Reads, inside a write transaction or on their own.

    ``within`` (read, vread, include, the bulk reads; ``HistoryQuery.within``; search and
    ``match`` take them as criteria clauses): clauses of an access policy's narrowing
    (``server/auth/policy.py``) that what is read must satisfy, applied inside the statement
    so limits and counts see only what they let through. For ``vread`` and history they
    hold on the resource's current version (a deleted resource satisfies none but
    ``_id``-like ones)."""

    def read(self, type: str, id: str, within: Sequence[Clause] = ()) -> Version | None:
        """The current version (a deleted resource: its deletion version); None if never stored
        (or, with ``within``, when it does not satisfy them)."""

    def vread(
        self, type: str, id: str, version: int, within: Sequence[Clause] = ()
    ) -> Version | None: ...

    def versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The current version number of each stored resource among ``(type, id)`` ``keys``
        (a deleted one: its deletion version); keys never stored are left out."""

    def history(self, query: HistoryQuery) -> Page: ...

    def search(self, query: SearchQuery) -> SearchPage:
        """One page of live matches of a ``SearchQuery`` in its sort order (one statement, and
        one more for the total when asked)."""

    def count_by(
        self, criteria: Criteria, param: str, target_type: str | None = None
    ) -> dict[str, int]:
        """The live matches of ``criteria`` (one type) counted per target of their ``param``
        reference search parameter (of ``target_type`` only, when given), in one grouped,
        index-backed statement: ``{"Type/id": count}``, targets with no match left out."""

    def stamp(self, type: str) -> tuple[Any, ...] | None:
        """A value that changes whenever a resource of ``type`` is created, updated or deleted,
        by any process: equal stamps mean the same stored resources of ``type`` (read before
        what it vouches for, a stamp never vouches for an older state). Cheap (one index
        lookup): what is worked out from every resource of a type can be kept under it. None
        where no stamp holds: inside a write unit (its writes may still be rolled back), or
        for a caller whose view of ``type`` is narrowed per resource (the door)."""

    def include(
        self,
        versions: list[Version],
        includes: tuple[Include, ...],
        limit: int,
        within: Sequence[Clause] = (),
        max_bytes: int | None = None,
    ) -> Included:
        """The live resources that ``_include``/``_revinclude`` (``:iterate`` repeated on what
        they add, up to ``INCLUDE_HOPS`` hops) add to ``versions``, each once and none of
        ``versions`` itself, at most ``limit`` of them and of at most ``max_bytes`` (counted
        as ``fitting`` counts, possibly none). ``within`` narrows every branch before its limit
        (and ``:iterate`` goes on from what it let through)."""

    def patient_resources(
        self,
        patient_ids: Sequence[str],
        params: Mapping[str, Sequence[str]],
        within: Sequence[Clause] = (),
    ) -> Iterator[tuple[str, Version]]:
        """The live current versions of the resources of the types in ``params`` whose
        reference search parameters named there (``{"Encounter": ["subject"], ...}``) point to
        ``Patient/<id>`` for an id of ``patient_ids``, as ``(patient id, version)``: grouped by
        patient (ordered by patient id, then type, then id, bytewise), each resource once per
        patient. One statement per call (callers batch the patients, a few hundred at a time);
        the rows are read as they are consumed, so consume them before the reader closes."""

    def visible(self, type: str, id: str) -> bool:
        """Whether the caller this reader reads for may see ``type/id`` (a system reader: it
        may see everything; the door: what the caller's policies let through). Validation asks
        it of every reference target it read with a system reader, so a hidden target answers
        as a missing one."""

    def scan(
        self, type: str, after: int | None, limit: int, within: Sequence[Clause] = ()
    ) -> list[Version]:
        """At most ``limit`` live current versions of ``type`` in creation order, after the
        keyset position ``after`` (a version's ``position``; None: from the first)."""


class Writes(Protocol):
    """Runs a write unit from a worker thread (through group commit), returning its result
    once its changes are durable. Never call it on the event loop's thread."""

    def __call__(self, fn: Callable[[Unit], T], /) -> T: ...


class Unit(Reader, Protocol):
    """One write transaction. Every method sees the writes made earlier in the same unit.

    ``create``, ``update`` and ``delete`` store one version each (with its search index rows
    and its outbox event) and take no decision (``If-Match`` and the rest are the
    pipeline's). Reads of the current version inside a unit are served from the unit's own
    view once read (nothing else writes while it holds the writers' lock)."""

    def match(self, criteria: Criteria, limit: int | None = 2) -> list[Version]:
        """Live matches of ``criteria`` (at most ``limit``), with the criteria locked until the
        unit ends, so no concurrent unit can create a match in between."""

    def create(
        self, type: str, resource: dict[str, Any], *, id: str | None = None
    ) -> WriteResult: ...

    def update(
        self, type: str, id: str, resource: dict[str, Any], mode: UpdateMode = PUT
    ) -> WriteResult:
        """A new version of ``type/id`` (the first one when it was never stored or deleted:
        ``created``), stored as ``mode`` says it came about."""

    def delete(self, type: str, id: str) -> WriteResult:
        """A deleted version; nothing (``changed`` False) when absent or already deleted."""

    def target(
        self, type: str, id: str, interaction: Interaction, within: Sequence[Clause] = ()
    ) -> Version | None:
        """The current version of the resource a write changes (``interaction``: update, patch
        or delete) that satisfies ``within``, read for that write: the door checks and narrows
        by the write's interaction, not a read (a principal may update what it may not
        read)."""

    def on_behalf(self, interaction: Interaction, type: str) -> Unit:
        """This same transaction unnarrowed, for what the server writes on the principal's
        behalf (an operation's record of its own run): refused (403) when the principal may
        not ``interaction`` on ``type`` at all; the narrowing of its view does not apply."""

    def system(self) -> Unit:
        """This same transaction, not narrowed by any principal: for validation, program rules
        and the writes rules derive (the server's own). What it reads must never reach the
        caller unchecked."""


