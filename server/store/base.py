"""The storage port: what every store offers, whatever its database.

A store serves the read and write ports of ``server/ports.py`` (``Reader``, ``Unit``) and, for
the composition root and the runner (``runner.py``), the ``Repository`` below: its readers,
write units run in one transaction, the outbox and the job table. Units that arrive together
share one database transaction, each in its own savepoint (group commit). Reads run outside
units. Stores know nothing of HTTP or of the program; they raise ``server.errors`` types.
This package never imports its adapter (``sql/``): an import-linter contract in
``pyproject.toml``.

The side stores a ``Repository`` exposes have their ports here too, with the records they
pass: ``Auth`` (the SMART tables: ``ClientRow``, ``UserRow``, ``RequestRow``, ``CodeRow``,
``GrantRow``), ``Subscriptions`` (delivery state: ``State``, ``Numbered``, the matcher's
``Matching``) and ``Audit`` (``AuditRecord``, ``AuditQuery``). Here rather than in
``server/ports.py``: only the composition root, ``auth/``, ``subscriptions/``, ``audit/`` and
their routes use them, never the FHIR layers (``ecm/``, ``writes/``, ``operations/``) that
``ports.py`` serves.

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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

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
    def auth(self) -> Auth: ...

    @property
    def audit(self) -> Audit: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

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


# -- the subscription store (``Repository.subscriptions``; ``store/sql/subscriptions.py``) --


@dataclass(frozen=True, slots=True)
class State:
    id: str
    owner: str | None
    organization: str | None
    user: str | None
    status: str
    events: int
    delivered: int
    handshake: bool
    attempts: int
    next_attempt: int
    failing_since: int | None
    last_error: str | None
    last_sent: int | None
    lease_owner: str | None
    lease_until: int
    endpoint: str | None
    created: int


def new_state(
    id: str,
    owner: str | None,
    organization: str | None,
    user: str | None,
    endpoint: str | None,
    now: int,
    status: str = "requested",
) -> State:
    """A subscription just seen: nothing numbered or sent yet, a handshake due."""
    return State(
        id,
        owner,
        organization,
        user,
        status,
        0,
        0,
        True,
        0,
        0,
        None,
        None,
        None,
        None,
        0,
        endpoint,
        now,
    )


class Numbered(NamedTuple):
    """One numbered event of a subscription (a named tuple: one is made per subscription
    and event delivered, so it is cheap to make)."""

    number: int
    seq: int
    type: str
    id: str
    version: int
    committed: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt of subscription ``id`` under ``owner``'s lease came to:
    acknowledged up to ``number`` (``error`` None) or failed with ``error``."""

    id: str
    owner: str
    now: int
    number: int = 0
    handshake: bool = False
    keep_until: int | None = None
    error: str | None = None
    next_attempt: int = 0
    give_up: bool = False


class Matching(Protocol):
    """The matcher's view inside its transaction: the states and the numbering."""

    def state(self, id: str) -> State | None: ...

    def live(self) -> list[State]: ...

    def upsert(self, state: State) -> None: ...

    def number(self, matches: Sequence[tuple[str, Event]]) -> None:
        """Hand each (subscription, event) match, in order, its subscription's next number:
        one read of the counters, each distinct list of matched events stored once, one run
        of numbers and one counter update per subscription."""
        ...


class Subscriptions(Protocol):
    """Subscription delivery state: the matcher's cursor and numbering, states, leases,
    delivery progress, secrets and signing keys (``store/sql/subscriptions.py``)."""

    def matcher_cursor(self) -> int | None:
        """Where the matcher stands in the outbox. It registers as an outbox consumer with
        the first Subscription ever written (from just before its event: nothing earlier can
        match); until then there is nothing to match (None) and the outbox is pruned by age
        alone."""
        ...

    def commit_batch(
        self, cursor: int, events: Sequence[Event], fn: Callable[[Matching], None]
    ) -> bool:
        """In one transaction: ``fn`` (the numbering of ``events``) and the matcher's cursor
        moved from ``cursor`` past them. False (nothing committed) when another process
        moved the cursor first."""
        ...

    def lag(self) -> int:
        """Outbox events the matcher has not read yet."""
        ...

    def state(self, id: str) -> State | None: ...

    def states(self) -> list[State]: ...

    def states_of(self, ids: Sequence[str]) -> dict[str, State]:
        """The states of ``ids`` (one query); ids without one are left out."""
        ...

    def due(self, now: int, limit: int, sent_before: int | None = None) -> list[State]:
        """Live subscriptions with something to send whose lease is free and retry due;
        with ``sent_before``, only those whose last notification went out before it (a
        handshake or a retry is due whenever)."""
        ...

    def live(self) -> list[State]: ...

    def lease(self, id: str, owner: str, now: int, until: int) -> bool:
        """Take (or renew) the delivery lease of ``id``: one deliverer per subscription."""
        ...

    def lease_many(self, ids: Sequence[str], owner: str, now: int, until: int) -> list[str]:
        """``lease`` for several subscriptions in one statement; the ids leased."""
        ...

    def release(self, id: str, owner: str) -> None: ...

    def events(self, id: str, after: int, until: int | None, limit: int) -> list[Numbered]: ...

    def record(self, outcomes: Sequence[Outcome]) -> list[str]:
        """Record the outcomes of several deliveries in one transaction; the ids whose lease
        was still the deliverer's (acknowledged: the cursor moves to ``number``, the lease is
        released or renewed until ``keep_until``; failed: the retry state grows, ``give_up``
        ends in ``error``)."""
        ...

    def set_status(self, id: str, status: str, reason: str | None) -> None: ...

    def prune_events(self, before: int) -> int:
        """Delete numbered events committed before ``before`` that were delivered (by runs:
        a run goes when all its events are older); the number of events deleted."""
        ...

    def put_secret(self, token: str, headers: Sequence[tuple[str, str]], now: int) -> None: ...

    def secret(self, token: str) -> list[tuple[str, str]] | None: ...

    def set_signing_key(self, id: str, key: str, now: int) -> None: ...

    def signing_key(self, id: str) -> str | None: ...

    def delivery_secrets(
        self, wanted: Mapping[str, str | None]
    ) -> dict[str, tuple[list[tuple[str, str]], str | None]]:
        """For each subscription id of ``wanted`` (mapped to its header values' token, if
        any), its header values and signing key, in one query."""
        ...


# -- the audit trail (``Repository.audit``; ``store/sql/audit.py`` describes its columns) --


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited interaction (see the module docstring for the fields)."""

    id: str
    recorded: int
    interaction: str
    action: str
    status: int
    client: str | None = None
    organization: str | None = None
    user: str | None = None
    purposes: tuple[str, ...] = ()
    address: str | None = None
    method: str | None = None
    path: str | None = None
    query: str | None = None
    request_id: str | None = None
    entities: tuple[tuple[str, str, int | None], ...] = ()
    patients: tuple[str, ...] = field(default=())

    def refs(self) -> list[tuple[str, str, str]]:
        """The ``audit_ref`` rows of the record."""
        rows = {("entity", f"{t}/{i}") for t, i, _ in self.entities}
        rows |= {("patient", f"Patient/{p}") for p in self.patients}
        rows |= {("agent", a) for a in (self.client, self.organization, self.user) if a}
        return [(self.id, kind, ref) for kind, ref in sorted(rows)]


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """An AuditEvent search: every given condition must hold. ``refs``: (kind, ref) pairs
    (each: one of its values; a list is OR); ``since``/``until``: recorded bounds
    (inclusive low, exclusive high); ``interactions``/``actions``/``outcomes``: allowed
    values (empty: any); ``purposes``: purposes of use asserted (each group: one of its codes).
    ``before``: the page cursor (rows with a lower ``seq``)."""

    refs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    since: int | None = None
    until: int | None = None
    interactions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    before: int | None = None
    count: int = 50
    purposes: tuple[tuple[str, ...], ...] = ()


class Audit(Protocol):
    """The audit trail: append-only; records of writes are stored with the write itself."""

    def store(self, records: Sequence[AuditRecord]) -> None:
        """Append a batch of records (reads and searches: ``audit/trail.py``)."""
        ...

    def read(self, id: str) -> AuditRecord | None: ...

    def search(self, q: AuditQuery) -> list[tuple[int, AuditRecord]]:
        """The records ``q`` matches, newest first, with their page cursors."""
        ...


# -- the SMART tables (``Repository.auth``; ``store/sql/auth.py``) -------------------------


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A registered client as stored (``server/auth/clients.py`` gives it meaning)."""

    client_id: str
    name: str
    organization: str | None
    scope: str
    jwks: str | None
    jwks_url: str | None
    role: str | None
    purposes: str
    algorithms: str
    status: str
    created: int
    revoked: int | None = None
    redirect_uris: str | None = None  # a launch app's, as a JSON array
    public: bool = False


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user who signs in to approve launches (``server/auth/users.py``)."""

    username: str
    password_hash: str
    practitioner_role: str
    organization: str
    practitioner: str | None
    status: str
    created: int
    changed: int


@dataclass(frozen=True, slots=True)
class RequestRow:
    """A pending authorization request (``server/auth/launch.py``)."""

    id: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str
    csrf: str
    username: str | None
    expires: int


@dataclass(frozen=True, slots=True)
class CodeRow:
    grant_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    expires: int
    username: str
    scope: str
    patient: str | None


@dataclass(frozen=True, slots=True)
class GrantRow:
    grant_id: str
    client_id: str
    username: str
    scope: str
    patient: str | None
    status: str
    expires: int | None


class Auth(Protocol):
    """The SMART tables: clients, users, authorization requests, codes, refresh grants,
    sign-in throttling, assertion ``jti``s and signing keys (``store/sql/auth.py``)."""

    def add_client(self, client: ClientRow) -> None: ...

    def client(self, client_id: str) -> ClientRow | None: ...

    def clients(self) -> list[ClientRow]: ...

    def active(self, client_id: str) -> bool:
        """Whether ``client_id`` is registered and not revoked (every request asks)."""
        ...

    def revoke(self, client_id: str) -> bool:
        """Revoke an active client; False if there is no such active client."""
        ...

    def add_user(self, user: UserRow) -> bool:
        """Store a new user; False if the username is taken."""
        ...

    def user(self, username: str) -> UserRow | None: ...

    def update_user(
        self, username: str, *, status: str | None = None, password_hash: str | None = None
    ) -> bool:
        """Set a user's status and/or password hash; False if there is no such user."""
        ...

    def add_request(self, r: RequestRow) -> None: ...

    def request(self, id: str) -> RequestRow | None: ...

    def signed_in(self, id: str, username: str, csrf: str) -> None:
        """The request's user has signed in: remember who, with a new CSRF token."""
        ...

    def end_request(self, id: str) -> bool:
        """Forget a pending request; False if it was already gone (a second approval)."""
        ...

    def add_code(
        self,
        grant: tuple[str, str, str, str, str | None],
        code_hash: str,
        redirect_uri: str,
        challenge: str,
        expires_us: int,
    ) -> None:
        """A grant (id, client, username, scope, patient), then its code (a grant without a
        code, should the second statement fail, is never reached)."""
        ...

    def use_code(self, code_hash: str) -> tuple[CodeRow | None, bool]:
        """Mark a code used: (its row, True) the first time; (its row, False) when it had
        been used before (a replay); (None, False) for an unknown code."""
        ...

    def add_refresh(self, token_hash: str, grant_id: str, expires_us: int | None = None) -> None:
        """A new refresh token of a grant (``expires_us``: set the grant's absolute lifetime,
        for its first token)."""
        ...

    def use_refresh(self, token_hash: str) -> tuple[GrantRow | None, bool]:
        """Rotate a refresh token: (its grant, True) the first time; (its grant, False) when
        it had been rotated before (a reuse); (None, False) for an unknown token."""
        ...

    def grant_of_refresh(self, token_hash: str) -> GrantRow | None: ...

    def grant(self, grant_id: str) -> GrantRow | None: ...

    def revoke_grant(self, grant_id: str) -> None: ...

    def grant_active(self, client_id: str, grant_id: str) -> bool:
        """Whether the grant, its client and its user are all still active (every request
        of a launch token asks; one indexed read)."""
        ...

    def blocked_until(self, keys: Sequence[str]) -> int:
        """The latest time (µs) any of ``keys`` is blocked until (0: none)."""
        ...

    def failed(self, keys: Sequence[str], now: int) -> None:
        """A failed sign-in for each of ``keys``: one more failure (forgotten after an hour
        without one), and the back-off it earns."""
        ...

    def clear_throttle(self, key: str) -> None: ...

    def use_assertion(self, client_id: str, jti: str, expires_us: int) -> bool:
        """Record ``jti`` for ``client_id`` if the client is active and the ``jti`` unused;
        False otherwise (a replay, or a client revoked meanwhile)."""
        ...

    def prune_assertions(self, before_us: int) -> int:
        """Forget the ``jti``s that expired before ``before_us`` (their assertions are refused
        for their ``exp`` alone)."""
        ...

    def add_key(self, kid: str, private_jwk: str, created_us: int) -> None: ...

    def add_first_key(self, kid: str, private_jwk: str, created_us: int) -> bool:
        """Add the key unless one that signs exists already, atomically across processes
        (workers starting together agree on one key). True when this key was added."""
        ...

    def has_key(self, kid: str) -> bool:
        """Whether the key ``kid`` is in the store (retired or not)."""
        ...

    def keys(self) -> list[tuple[str, str, int, int | None]]:
        """Every signing key, newest first: (kid, private JWK, created, retired)."""
        ...

    def retire_keys(self, keep: str, at_us: int) -> None:
        """Mark every key but ``keep`` retired at ``at_us`` (they still verify for a token's
        lifetime; ``drop_keys`` forgets them later)."""
        ...

    def drop_keys(self, retired_before_us: int) -> int: ...
