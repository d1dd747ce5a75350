"""The storage port: what every store offers, whatever its database.

A store serves the read and write ports of ``server/ports.py`` (``Reader``, ``Unit``) and, for
the composition root and the runner (``runner.py``), the ``Repository`` below: its readers,
write units run in one transaction, the outbox and the job table. Units that arrive together
share one database transaction, each in its own savepoint (group commit). Reads run outside
units. Stores know nothing of HTTP or of the program; they raise ``server.errors`` types.
This package never imports its adapter (``sql/``): an import-linter contract in
``pyproject.toml``.

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

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from server.ports import Reader, Unit
from server.search.rows import IndexRows

JobState = Literal["running", "completed", "failed", "cancelled"]
T = TypeVar("T")


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


class RowSource(Protocol):
    """Where a store gets the search index rows of a resource it writes."""

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows: ...


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


class LockStats:
    """How long this process's write groups held the writers' lock (from the start of their
    transaction to the end of their commit), for benchmarks and diagnostics."""

    __slots__ = ("groups", "writes", "held_ns", "max_ns")

    def __init__(self) -> None:
        self.groups = 0
        self.writes = 0
        self.held_ns = 0
        self.max_ns = 0

    def add(self, writes: int, held_ns: int) -> None:
        self.groups += 1
        self.writes += writes
        self.held_ns += held_ns
        self.max_ns = max(self.max_ns, held_ns)


class GroupWrites(Protocol):
    """The writer of one process: runs write units on the event loop, many to a transaction
    (group commit), each answered once its group is durable."""

    stats: LockStats

    async def write(self, fn: Callable[[Unit], T], origin: Origin) -> T: ...

    def committed(self) -> asyncio.Event:
        """Set after each commit of this writer's groups (an in-process wake-up)."""


class Repository(Protocol):
    """One store: what the composition root (``server/app.py``) opens and closes and the
    runner (``runner.py``) reads and writes through.

    ``auth``, ``audit`` and ``subscriptions`` are the side stores of SMART clients and keys,
    the audit trail and subscription delivery state; they have no port of their own yet (their
    consumers use the SQL adapter's classes, the exceptions named in the import contracts)."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""

    @property
    def jobs(self) -> JobStore: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def auth(self) -> Any: ...

    @property
    def audit(self) -> Any: ...

    @property
    def subscriptions(self) -> Any: ...

    @property
    def inline_reads(self) -> bool:
        """Whether reads are cheap enough to run on the calling thread, event loop included
        (an embedded database whose reads never wait for the writer)."""

    def migrate(self) -> None: ...

    def reader(self) -> AbstractContextManager[Reader]: ...

    def snapshot(self) -> AbstractContextManager[Reader]:
        """A reader whose reads see one snapshot where the database allows it cheaply: for
        the reads that prepare a write."""

    def group_writer(self, pool: ThreadPoolExecutor) -> GroupWrites:
        """This store's writer for one process; ``pool`` (one thread) is where it waits for
        the writers' lock and commits, off the event loop."""

    def health(self) -> list[str]:
        """What is wrong with the database right now (nothing: an empty list)."""

    def close(self) -> None: ...
