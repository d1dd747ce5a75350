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

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from server.ports import Reader, Unit
from server.search.rows import IndexRows

JobState = Literal["running", "completed", "failed", "cancelled"]


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
