"""The storage port: what every store offers, whatever its database.

Writes run as ``Unit``s: every write interaction is one unit (a conditional interaction's
criteria lookup and its write included, so both are atomic); a transaction Bundle is one unit
for all its entries. Units that arrive together share one database transaction, each in its
own savepoint (group commit). Reads run outside units. Stores know nothing of HTTP or of the
program; they raise ``server.errors`` types. What a write means (conditional interactions,
patches, validation, program rules) is decided above the store, by the write pipeline
(``server/writes/``); a unit only stores versions.

Every version a unit stores also gets one row in the **outbox** (``Outbox``), in the same
transaction: an event with the version, the version it replaced, the interaction and the
``Origin`` of the write. Outbox sequence numbers increase in commit order (the writers' lock of
decision 0003), so a consumer that reads by sequence never sees an event appear behind its
cursor.

Every written version's search index rows come from a ``RowSource`` (``server/search/index.py``)
and are stored in the same transaction; searches answer from them (``SearchQuery`` ->
``SearchPage``, one statement per page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from server.auth.interactions import Interaction
from server.search.query import Clause, Criteria, Cursor, Include, SearchQuery
from server.search.rows import IndexRows

Method = Literal["POST", "PUT", "PATCH", "DELETE"]
JobState = Literal["running", "completed", "failed", "cancelled"]
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
class Origin:
    """Who caused a write and through which request: recorded with each of its outbox events.
    ``client`` is the calling system (a SMART client id; ``local`` for the loopback operator),
    ``organization`` and ``user`` who it acts for, ``request_id`` the request's log id."""

    client: str | None = None
    organization: str | None = None
    user: str | None = None
    request_id: str | None = None


SYSTEM = Origin(client="system")
"""The origin of writes the server makes on its own (start-up, maintenance)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox row: a committed version. ``seq`` increases in commit order; ``previous`` is
    the version it replaced (None for a first version); ``interaction`` is create, update,
    patch or delete; ``committed`` the version's ``lastUpdated`` stamp (microseconds, UTC,
    increasing in commit order); ``transaction`` names the unit (every event of one
    transaction Bundle, or of one write and the writes its rules derived, shares it)."""

    seq: int
    type: str
    id: str
    version: int
    previous: int | None
    interaction: str
    committed: int
    origin: Origin
    transaction: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``created`` (201), ``changed`` (a new version exists) and the version."""

    version: Version | None
    created: bool = False
    changed: bool = True


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


class RowSource(Protocol):
    """Where a store gets the search index rows of a resource it writes."""

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows: ...


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
        self,
        type: str,
        id: str,
        resource: dict[str, Any],
        *,
        method: Method = "PUT",
        assigned: bool = False,
    ) -> WriteResult:
        """A new version of ``type/id`` (the first one when it was never stored or deleted:
        ``created``). ``assigned``: the server chose ``id`` just now (a conditional update that
        matched nothing), so it names no resource the caller could not see."""

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


class Outbox(Protocol):
    """The outbox of committed versions, read by consumers in any process by sequence.

    A consumer registers a name and keeps its cursor (the last sequence it handled) in the
    database. A row may be pruned once every registered consumer's cursor has passed it and it
    is older than the retention's minimum age. Each method commits on its own."""

    def read(self, after: int, limit: int) -> list[Event]:
        """Events with ``seq > after`` in sequence order, at most ``limit``."""

    def last(self) -> int:
        """The highest sequence handed out so far (0 when none)."""

    def of(self, type: str, id: str) -> list[Event]:
        """The events of one resource still kept, in sequence order (an audit trail's who)."""

    def register(self, consumer: str, start: int | None = None) -> int:
        """Register ``consumer`` (idempotent); its cursor starts at ``start`` (None: the
        current end, so it sees only what comes next). Returns its cursor."""

    def cursor(self, consumer: str) -> int | None: ...

    def advance(self, consumer: str, seq: int) -> None:
        """Move ``consumer``'s cursor forward to ``seq`` (never backward)."""

    def unregister(self, consumer: str) -> bool: ...

    def prune(self, older_than: int) -> int:
        """Delete the events every registered consumer has passed and committed before
        ``older_than``; how many."""


@dataclass(frozen=True, slots=True)
class Job:
    """One asynchronous request (``server/jobs.py``): what was asked, how far it got, and its
    answer once it ends. Times are microseconds since the epoch, UTC."""

    id: str
    kind: str  # what runs (an operation name)
    state: JobState
    request: dict[str, Any]  # what was asked: {"method": ..., "url": ...}
    principal: str  # who asked, the whole principal (``Principal.key``): only they see it
    unit: str  # what ``done`` and ``total`` count ("members")
    done: int
    total: int | None
    created: int
    updated: int  # the last heartbeat of the worker running it
    expires: int  # when the row may be purged (not while running)
    owner: str  # the worker (process) running it
    result: bytes | None = None  # JSON: the result resource, or the OperationOutcome of a failure
    status: int | None = None  # the HTTP status of the result


class JobStore(Protocol):
    """The state of asynchronous jobs, shared by every worker process. Every method is one
    short statement that commits on its own (outside the group writer)."""

    def create(self, job: Job) -> None: ...

    def get(self, id: str) -> Job | None: ...

    def state(self, id: str) -> JobState | None: ...

    def progress(self, id: str, done: int, total: int | None, now: int) -> bool:
        """Record progress (and a heartbeat) of a running job; False if it no longer runs."""

    def touch(self, ids: Sequence[str], now: int) -> None:
        """A heartbeat for the running jobs among ``ids``."""

    def finish(
        self,
        id: str,
        state: Literal["completed", "failed"],
        result: bytes,
        status: int,
        now: int,
        expires: int,
        *,
        stale_before: int | None = None,
    ) -> bool:
        """End a running job (with ``stale_before``: only if its last heartbeat is older);
        False if it was not running (cancelled, deleted, already ended)."""

    def claim(self, id: str, owner: str, now: int, stale_before: int) -> bool:
        """Take over a running job whose last heartbeat is older than ``stale_before`` (its
        worker died): ``owner`` runs it from now; False if it is not (or no longer) stale."""

    def running(self, kind: str, principal: str, heard_since: int) -> int:
        """How many jobs of ``kind`` that ``principal`` submitted are running, their worker
        heard from at or after ``heard_since``."""

    def cancel(self, id: str, now: int) -> bool:
        """Mark a running job cancelled (its row expires at once); False if it was not
        running."""

    def delete(self, id: str) -> bool:
        """Remove an ended (completed or failed) job; False if there was none."""

    def purge(self, now: int) -> int:
        """Remove the jobs that ended and expired before ``now``; how many."""


class Repository(Protocol):
    dialect: str  # "sqlite" | "postgresql"
    jobs: JobStore
    outbox: Outbox

    def migrate(self) -> None: ...

    def reader(self) -> AbstractContextManager[Reader]: ...

    def run_jobs(
        self, conn: Any, jobs: Sequence[tuple[Callable[[Unit], Any], Origin]]
    ) -> list[tuple[bool, Any]]:
        """Write jobs inside an open write transaction, each atomic on its own (savepoints);
        the group writer opens and commits the transaction (``sql/group_commit.py``)."""

    def close(self) -> None: ...
