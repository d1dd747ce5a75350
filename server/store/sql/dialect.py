"""What differs between SQLite and PostgreSQL, and nothing else.

Each dialect opens connections, runs a write transaction with its locking discipline, turns
driver errors into FHIR errors, and checks at start-up that acknowledged writes are durable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from server.errors import DatabaseDamaged, FhirError, ServiceUnavailable
from server.search.query import TABLES
from server.store import faults
from server.store.sql import store_file
from server.store.sql.driver_errors import (
    over_budget,
    postgres_error,
    postgres_fault,
    sqlite_busy,
    sqlite_error,
    sqlite_fault,
)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any: ...


def lock_key(text: str) -> int:
    """A signed 64-bit key for a lock name (PostgreSQL advisory locks)."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


class Damage:
    """Damage met while serving (a corrupt page, a damaged database file): the health check
    fails from then on, until the process restarts (an operator restores the store)."""

    def __init__(self) -> None:
        self._seen: str | None = None

    def seen(self, error: FhirError) -> FhirError:
        if isinstance(error, DatabaseDamaged):
            self._seen = error.issues[0].diagnostics if error.issues else "damaged"
        return error

    def problems(self) -> list[str]:
        return [] if self._seen is None else [f"damage was met while serving: {self._seen}"]


def _store_id(dialect: Dialect) -> str | FhirError:
    """The store's id as the database holds it, or the error reading it."""
    try:
        with dialect.reading() as conn:
            row = conn.execute("SELECT id FROM store_identity").fetchone()
    except FhirError as error:
        return error
    if row is None:
        return DatabaseDamaged("The store has no identity: its data was removed")
    return str(row[0])


logger = logging.getLogger("calaim_fhir.store")
CONFLICT_RETRIES = 3  # runs more of a job aborted by a serialization failure or deadlock
_PROGRESS_STEPS = 1000  # SQLite virtual machine steps between two looks at a query's budget


class Dialect(Protocol):
    name: str
    types: dict[str, str]
    # appended to a text expression to compare it bytewise (the index tables' value columns
    # already are); empty where text always compares bytewise
    collate: str

    def sql(self, statement: str) -> str: ...

    @contextmanager
    def reading(self) -> Iterator[Connection]: ...

    def estimate(self, conn: Connection, sql: str, args: Sequence[Any]) -> int | None:
        """The planner's estimate of what a ``SELECT COUNT(*)`` statement counts, from the
        database's statistics (``_total=estimate``); None where it keeps none."""

    def budget(self, conn: Connection) -> AbstractContextManager[None]:
        """The query time budget (``query_budget_ms``) over the statements run inside it on
        ``conn`` (a read connection): past it the database stops the statement and the
        search is answered ``too-costly`` (``driver_errors.over_budget``). SQLite: a
        progress handler with a deadline for all of them together; PostgreSQL:
        ``statement_timeout`` for each statement."""

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection for several reads that belong together (a write's preparation):
        SQLite reads them in one read transaction (one snapshot, one WAL read lock);
        PostgreSQL as ``reading``."""

    @contextmanager
    def writing(self, durable: bool = True) -> Iterator[Connection]:
        """A write transaction holding the writers' lock. ``durable=False`` is for state whose
        loss in a power failure or an operating-system crash only repeats work (the
        subscription deliverer's outcomes and leases, decision 0026): its commit does not
        wait for the disk (SQLite: ``synchronous=NORMAL`` for it, so the next durable commit
        of any connection makes it durable, the WAL being written in order; PostgreSQL:
        ``synchronous_commit = off`` for it). A killed process loses none of it either way."""

    @contextmanager
    def autocommit(self, durable: bool = True) -> Iterator[Connection]:
        """A connection on which every statement is its own transaction, committed durably
        (short writes outside the group writer: the async job table). Never one with a read
        in progress: a write there could not upgrade that read's snapshot. ``durable=False``
        as for ``writing`` (SQLite; PostgreSQL's pooled statements stay durable)."""

    def lock(self, conn: Connection, name: str) -> None: ...

    def store_version(self, conn: Connection, row: tuple[Any, ...]) -> None:
        """Insert a version into the history and make it the current row of its resource.

        ``row`` is (type, id, version, last_updated, deleted, method, body, labels, owners);
        the current row takes the history row's ``seq`` (and keeps its ``created_seq`` on
        update)."""

    def clear_index(self, conn: Connection, type: str, id: str) -> None:
        """Delete every search index row of one resource (no result is read back)."""

    def store_events(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert outbox rows (``outbox.EVENT_COLUMNS``), in order (no result is read back)."""

    def store_index(self, conn: Connection, rows: Mapping[str, Sequence[tuple[Any, ...]]]) -> None:
        """Insert index rows of any number of resources, one statement per table (SQLite:
        one ``executemany``; PostgreSQL: one statement for every table): ``{table: rows}``,
        each row ``(rtype, id, *IndexRows row, member)``; no result is read back."""

    def errors(self) -> AbstractContextManager[None]:
        """Turns driver errors into FHIR errors by their cause (``driver_errors.py``)."""

    # the group writer's transaction, in steps (see group_commit.py)
    def writer_connection(self) -> Any:
        """A connection of the group writer's own."""

    def try_begin(self, conn: Any) -> bool:
        """Start a write transaction if that needs no waiting for another writer."""

    def begin(self, conn: Any) -> None:
        """Start a write transaction, waiting for other writers (busy timeout)."""

    def commit(self, conn: Any) -> None:
        """Commit durably; on failure the transaction is rolled back and the error raised."""

    def rollback(self, conn: Any) -> None: ...

    def check_durability(self) -> None: ...

    def bind_identity(self, store_id: str) -> None:
        """Tie the store's id to where it lives (SQLite: the marker next to the file)."""

    def health(self) -> list[str]:
        """Cheap checks that the store is sound and reachable (the health endpoint): damage
        met while serving, the store reachable and its identity readable (SQLite: the file's
        header and the marker too); the problems found, none when healthy."""

    def integrity(self, quick: bool) -> tuple[list[str], list[str]]:
        """The full (or quick) check of the stored data: (problems found, notes on what could
        not be checked)."""

    def close(self) -> None: ...


_INSERT_HISTORY = (
    "INSERT INTO resource_history"
    " (rtype, id, version, last_updated, deleted, method, body, labels, owners)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_CURRENT = (
    "INSERT INTO resource"
    " (rtype, id, version, last_updated, deleted, seq, created_seq, body, labels, owners)"
    " VALUES (?, ?, ?, ?, ?, {seq}, {seq}, ?, ?, ?) ON CONFLICT (rtype, id) DO UPDATE SET"
    " version = excluded.version, last_updated = excluded.last_updated,"
    " deleted = excluded.deleted, seq = excluded.seq, body = excluded.body,"
    " labels = excluded.labels, owners = excluded.owners"
)
# the search index tables' value columns (after rtype, id, param, grp), in the row layouts of
# ``search/rows.py``, with their PostgreSQL array types
_INDEX_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    TABLES["token"]: (("system", "text"), ("code", "text")),
    TABLES["string"]: (("value", "text"), ("exact", "text")),
    TABLES["reference"]: (("target_type", "text"), ("target_id", "text"), ("url", "text")),
    TABLES["date"]: (("low", "int8"), ("high", "int8")),
    TABLES["number"]: (("low", "float8"), ("high", "float8")),
    TABLES["quantity"]: (
        ("system", "text"),
        ("code", "text"),
        ("unit", "text"),
        ("low", "float8"),
        ("high", "float8"),
    ),
    TABLES["uri"]: (("uri", "text"),),
}
_INDEX_TABLES = tuple(_INDEX_COLUMNS)


def keyed(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Index rows ``(rtype, id, *values, member)`` as ``INSERT_INDEX`` takes them."""
    return [(*row, row[0], row[1]) for row in rows]

_CLEAR_INDEX = tuple(f"DELETE FROM {table} WHERE rtype = ? AND id = ?" for table in _INDEX_TABLES)
# every index row also holds its resource's member (``access_facts.index_member``, the row's
# last value) and insertion order (``seq``, the resource row's ``created_seq``, read in the
# same transaction: the version is stored before its index rows; migration 14). SQLite's
# statement takes the resource's key once more at the end (``keyed``)
_OWNED = "member, seq"
INSERT_INDEX = {  # one row of each index table (SQLite, and any batch job)
    table: f"INSERT INTO {table} (rtype, id, param, grp, {', '.join(c for c, _ in columns)},"
    f" {_OWNED}) VALUES (?, ?, ?, ?, {', '.join('?' for _ in columns)}, ?,"
    " (SELECT s.created_seq FROM resource s WHERE s.rtype = ? AND s.id = ?))"
    for table, columns in _INDEX_COLUMNS.items()
}


# the outbox's columns as a unit writes them (migration 4, ``outbox.py``), with their
# PostgreSQL array types
EVENT_COLUMNS = (
    "rtype, id, version, previous, interaction, committed, client, organization, user_id,"
    " request_id, transaction_id"
)
EVENT_TYPES = (
    "text",
    "text",
    "int4",
    "int4",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
)
_INSERT_EVENT = (
    f"INSERT INTO outbox ({EVENT_COLUMNS}) VALUES ({', '.join('?' for _ in EVENT_TYPES)})"
)
_INSERT_EVENTS_PG = (
    f"INSERT INTO outbox ({EVENT_COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"?::{kind}[]" for kind in EVENT_TYPES)
    + ")"
)


@contextmanager
def one_snapshot(conn: Any) -> Iterator[None]:
    """The statements run inside see one snapshot of a SQLite store: one read transaction,
    or the transaction the connection is already in (another read of this thread, or a
    write's), shared."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def planned_rows(plan: Any) -> int | None:
    """The estimated rows a ``COUNT(*)`` aggregates, from PostgreSQL's JSON plan: below the
    aggregate and gather nodes, the first node's ``Plan Rows``; below a gather that figure is
    per process, so it is scaled by PostgreSQL's parallel divisor (the workers, plus the
    leader's share: 1 - 0.3 per worker)."""
    if isinstance(plan, str):
        plan = json.loads(plan)
    node = plan[0]["Plan"] if isinstance(plan, list) else plan.get("Plan", plan)
    divisor = 1.0
    while node.get("Node Type") in ("Aggregate", "Gather", "Gather Merge") and node.get("Plans"):
        workers = node.get("Workers Planned")
        if workers:
            divisor = workers + max(0.0, 1.0 - 0.3 * workers)
        node = node["Plans"][0]
    rows = node.get("Plan Rows")
    return None if rows is None else max(0, round(float(rows) * divisor))


def _with(statements: list[str]) -> str:
    """Several data-modifying statements as one (PostgreSQL runs every one of a WITH); the
    first statement comes last in the text."""
    heads = ", ".join(f"w{n} AS ({statement})" for n, statement in enumerate(statements[1:]))
    return f"WITH {heads} {statements[0]}"


_PG_ORDER = (*_INDEX_TABLES[1:], _INDEX_TABLES[0])
# PostgreSQL: every index table in one statement
_CLEAR_INDEX_PG = _with(list(_CLEAR_INDEX))
# PostgreSQL: the rows of every index table in one statement of fixed text, each column an array
_INSERT_INDEX_PG = _with(
    [
        f"INSERT INTO {table} (rtype, id, param, grp, {', '.join(c for c, _ in columns)},"
        f" {_OWNED}) SELECT u.*, (SELECT s.created_seq FROM resource s WHERE s.rtype = u.rtype"
        " AND s.id = u.id) FROM unnest(?::text[], ?::text[], ?::text[], ?::int4[],"
        f" {', '.join(f'?::{kind}[]' for _, kind in columns)}, ?::text[])"
        f" u (rtype, id, param, grp, {', '.join(c for c, _ in columns)}, member)"
        for table, columns in _INDEX_COLUMNS.items()
    ]
)
# PostgreSQL: both in one statement (one round trip and one execute less per write)
_STORE_VERSION_PG = (
    "WITH h AS ("
    + _INSERT_HISTORY
    + " RETURNING seq) "
    + _UPSERT_CURRENT.replace(
        " VALUES (?, ?, ?, ?, ?, {seq}, {seq}, ?, ?, ?)",
        " SELECT ?, ?, ?, ?, ?, h.seq, h.seq, ?, ?, ? FROM h",
    )
)


@contextmanager
def _synchronous(conn: sqlite3.Connection, durable: bool) -> Iterator[None]:
    """``synchronous=NORMAL`` on ``conn`` while inside, unless ``durable`` (then nothing to
    do: every connection is opened ``FULL``); ``FULL`` again after."""
    if durable:
        yield
        return
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        conn.execute("PRAGMA synchronous = FULL")


class SQLiteDialect:
    """Stdlib sqlite3, WAL, ``synchronous=FULL``; one connection per thread.

    Writers take ``BEGIN IMMEDIATE``: the database's own write lock serialises them across
    threads and processes, so a named lock inside a write transaction is already held.
    """

    name = "sqlite"
    types = {
        "blob": "BLOB",
        "bigint": "INTEGER",
        "serial": "INTEGER PRIMARY KEY",
        "text": "TEXT",  # TEXT compares bytewise (BINARY collation)
        "double": "REAL",
    }
    collate = ""

    def __init__(self, path: str, busy_timeout_ms: int = 10_000, query_budget_ms: int = 0) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        store_file.check_before_open(path)  # before SQLite could make an empty file a store
        self.busy_timeout_ms = busy_timeout_ms
        self.query_budget_ms = query_budget_ms
        self.damage = Damage()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()

    def sql(self, statement: str) -> str:
        return statement

    def _open(self) -> sqlite3.Connection:
        with self.errors():
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            # a larger page cache and memory-mapped reads: index pages of a large store stay hot
            conn.execute("PRAGMA cache_size = -65536")  # KiB, per connection
            conn.execute("PRAGMA mmap_size = 268435456")
            # savepoint journals and sort b-trees in memory, not in temporary files
            conn.execute("PRAGMA temp_store = MEMORY")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Put the store in WAL mode, or join it there. Switching the journal mode can report
        "locked" at once, without the busy handler, while another process opens or converts the
        same file (several servers, or workers, starting on one store); a connection that finds
        the file already in WAL mode needs no switch at all. Retried within the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.002
        while True:
            try:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # reads the header
                if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return
                if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if not sqlite_busy(exc) or time.monotonic() >= deadline:
                    raise
            else:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"{self.path}: the store cannot be put in WAL mode")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    def writer_connection(self) -> sqlite3.Connection:
        """A connection of its own for the group writer (used from one task at a time)."""
        return self._open()

    def begin(self, conn: sqlite3.Connection) -> None:
        """Start a write transaction, waiting (busy timeout) for other processes' writers."""
        with self.errors():
            if conn.in_transaction:  # left open by a failed rollback
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")

    def try_begin(self, conn: sqlite3.Connection) -> bool:
        """Start a write transaction only if no other process holds the write lock now. A held
        lock is an expected answer here (the caller then waits in ``begin``), not an error: it
        is neither logged nor counted."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            if conn.in_transaction:  # left open by a failed rollback
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if sqlite_busy(exc):
                return False
            raise self.damage.seen(sqlite_error(exc)) from exc
        except sqlite3.Error as exc:
            raise self.damage.seen(sqlite_error(exc)) from exc
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        return True

    def commit(self, conn: sqlite3.Connection) -> None:
        """Commit (fsync'd: ``synchronous=FULL``); on failure the transaction is rolled back."""
        with self.errors():
            try:
                faults.hit("before-commit")
                conn.execute("COMMIT")
            except BaseException:
                self.rollback(conn)
                raise
        faults.hit("after-commit")

    def rollback(self, conn: sqlite3.Connection) -> None:
        with self.errors():
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self.damage.seen(sqlite_error(exc)) from exc
        except faults.Fault as fault:
            raise self.damage.seen(sqlite_error(sqlite_fault(fault.cause))) from fault

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        conn = self._connection()
        with self.errors():
            faults.hit("read")
            yield conn

    def estimate(self, conn: Connection, sql: str, args: Sequence[Any]) -> int | None:
        """None: SQLite keeps no statistics unless ANALYZE runs (which the server never runs
        on a live store); the count is exact."""
        return None

    @contextmanager
    def budget(self, conn: Connection) -> Iterator[None]:
        if not self.query_budget_ms or not isinstance(conn, sqlite3.Connection):
            yield
            return
        deadline = time.monotonic() + self.query_budget_ms / 1000
        # called every _PROGRESS_STEPS virtual machine steps; a true answer interrupts
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
                raise over_budget(self.query_budget_ms, "sqlite") from exc
            raise
        finally:
            conn.set_progress_handler(None, 0)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        conn = self._connection()
        with self.errors():
            faults.hit("read")
            with one_snapshot(conn):
                yield conn

    @contextmanager
    def autocommit(self, durable: bool = True) -> Iterator[Connection]:
        """A second connection per thread: a statement here waits for the write lock (busy
        timeout) and commits on its own, even while the thread's reading connection is in
        the middle of a read."""
        conn: sqlite3.Connection | None = getattr(self._local, "side", None)
        if conn is None:
            conn = self._local.side = self._open()
        with self.errors(), _synchronous(conn, durable):
            yield conn

    @contextmanager
    def writing(self, durable: bool = True) -> Iterator[Connection]:
        conn = self._connection()
        with _synchronous(conn, durable):
            self.begin(conn)
            try:
                with self.errors():
                    yield conn
            except BaseException:
                self.rollback(conn)
                raise
            self.commit(conn)

    def lock(self, conn: Connection, name: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's write lock."""

    def store_version(self, conn: Connection, row: tuple[Any, ...]) -> None:
        type, id, version, stamp, deleted, _method, body, labels, owners = row
        conn.execute(_INSERT_HISTORY, row)
        conn.execute(
            _UPSERT_CURRENT.format(seq="last_insert_rowid()"),
            (type, id, version, stamp, deleted, body, labels, owners),
        )

    def clear_index(self, conn: Connection, type: str, id: str) -> None:
        for statement in _CLEAR_INDEX:
            conn.execute(statement, (type, id))

    def store_events(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        conn.executemany(_INSERT_EVENT, rows)

    def store_index(self, conn: Connection, rows: Mapping[str, Sequence[tuple[Any, ...]]]) -> None:
        for table, table_rows in rows.items():
            if table_rows:
                conn.executemany(INSERT_INDEX[table], keyed(table_rows))

    def check_durability(self) -> None:
        with self.reading() as conn:
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if sync != 2 or mode != "wal":
            raise RuntimeError(f"SQLite is not durable: synchronous={sync}, journal_mode={mode}")

    def bind_identity(self, store_id: str) -> None:
        store_file.bind_marker(self.path, store_id)

    def health(self) -> list[str]:
        problems = self.damage.problems()
        header = store_file.header_problem(self.path)
        if header is not None:
            problems.append(f"the database file is damaged: {header}")
        found = _store_id(self)
        if isinstance(found, FhirError):
            problems.append(f"the store cannot be read: {found.issues[0].diagnostics}")
        else:
            problem = store_file.marker_problem(self.path, found)
            if problem is not None:
                problems.append(problem)
        return problems

    def integrity(self, quick: bool) -> tuple[list[str], list[str]]:
        pragma = "quick_check" if quick else "integrity_check"
        with self.reading() as conn:
            rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        found = [str(row[0]) for row in rows]
        return ([] if found == ["ok"] else found), []

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing a broken handle
                    pass
            self._all.clear()
        self._local = threading.local()


# Every session without JIT compilation: a narrowed search's statement (grant, consent and
# label probes) can be estimated costly enough to cross ``jit_above_cost`` when the statistics
# of ``access_grant`` lag a rebuild, and compiling it took seconds where running it takes
# milliseconds (bench/RESULTS.md); the server's statements are short OLTP reads and writes.
_SESSION_OPTIONS = "-c jit=off"


class PostgresDialect:
    """psycopg 3 with a connection pool; named locks are transaction-scoped advisory locks."""

    name = "postgresql"
    types = {
        "blob": "BYTEA",
        "bigint": "BIGINT",
        "serial": "BIGSERIAL PRIMARY KEY",
        "text": 'TEXT COLLATE "C"',  # bytewise, as SQLite's TEXT
        "double": "DOUBLE PRECISION",
    }
    collate = ' COLLATE "C"'

    def __init__(self, url: str, pool_size: int = 8, query_budget_ms: int = 0) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self._url = url
        self.query_budget_ms = query_budget_ms
        self.damage = Damage()
        self._writers: list[Any] = []
        self._sql_cache: dict[str, str] = {}
        try:
            self.pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                open=True,
                timeout=10,
                kwargs={"autocommit": True, "options": _SESSION_OPTIONS},
                name="calaim-fhir",
            )
            self.pool.wait(timeout=10)
        except Exception as exc:  # pool timeout or driver error: the database is not there
            raise ServiceUnavailable("The database is unavailable") from exc
        try:
            self._check_identity()
        except BaseException:
            self.pool.close()
            raise

    def _marker(self, conn: Any) -> tuple[str, str | None]:
        """The database's name and the store id its comment names (None: no marker)."""
        name, comment = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone()
        found = store_file.PG_MARKER.fullmatch(comment or "")
        return str(name), None if found is None else found.group(1)

    def _check_identity(self) -> None:
        """Refuse, before anything is created, a database whose comment names a store that
        its tables no longer hold (the store's tables were dropped or emptied)."""
        with self.errors(), self.pool.connection() as conn:
            name, marked = self._marker(conn)
            if marked is None:
                return
            table = conn.execute("SELECT to_regclass('store_identity')").fetchone()
            has_table = table is not None and table[0] is not None
            row = conn.execute("SELECT id FROM store_identity").fetchone() if has_table else None
        if row is None:
            raise store_file.StoreRefused(
                f"The database {name} is marked as holding store {marked} (its comment), but "
                "that store's tables are gone or empty: refusing to start with an empty "
                f"store. Restore the database from a backup, or remove the mark "
                f"(COMMENT ON DATABASE \"{name}\" IS NULL) to start a new, empty store "
                "deliberately."
            )

    def sql(self, statement: str) -> str:
        cached = self._sql_cache.get(statement)
        if cached is None:
            cached = self._sql_cache[statement] = statement.replace("?", "%s")
        return cached

    @contextmanager
    def errors(self) -> Iterator[None]:
        from psycopg_pool import PoolTimeout

        try:
            yield
        except (self._psycopg.Error, PoolTimeout) as exc:
            raise self.damage.seen(postgres_error(exc)) from exc
        except faults.Fault as fault:
            raise self.damage.seen(
                postgres_error(postgres_fault(self._psycopg, fault.cause))
            ) from fault

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.errors(), self.pool.connection() as conn:
            faults.hit("read")
            yield _PgConnection(conn, self)

    snapshot = reading

    def estimate(self, conn: Connection, sql: str, args: Sequence[Any]) -> int | None:
        """The rows the planner expects the count to read (``EXPLAIN``: planning only, no
        execution), from the statistics autovacuum keeps."""
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, args).fetchone()[0]
        return planned_rows(plan)

    @contextmanager
    def budget(self, conn: Connection) -> Iterator[None]:
        if not self.query_budget_ms:
            yield
            return
        # a pool connection (autocommit): the setting holds until reset, also on failure
        conn.execute(f"SET statement_timeout = {int(self.query_budget_ms)}")
        try:
            yield
        except self._psycopg.errors.QueryCanceled as exc:
            if "statement timeout" not in str(exc):  # cancelled by an operator: 503
                raise
            raise over_budget(self.query_budget_ms, "postgresql") from exc
        finally:
            conn.execute("RESET statement_timeout")

    @contextmanager
    def autocommit(self, durable: bool = True) -> Iterator[Connection]:
        """A connection of the pool (they are in autocommit mode; always durable)."""
        with self.errors(), self.pool.connection() as conn:
            yield _PgConnection(conn, self)

    @contextmanager
    def writing(self, durable: bool = True) -> Iterator[Connection]:
        with self.errors(), self.pool.connection() as conn:
            # pipeline mode: statements whose results nobody reads are sent without waiting
            # for their answer; reading a result (fetchone) waits for everything before it
            with conn.pipeline(), conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITERS,))
                yield _PgConnection(conn, self)
                faults.hit("before-commit")
            faults.hit("after-commit")

    def lock(self, conn: Connection, name: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    def store_version(self, conn: Connection, row: tuple[Any, ...]) -> None:
        type, id, version, stamp, deleted, _method, body, labels, owners = row
        conn.execute(
            _STORE_VERSION_PG, (*row, type, id, version, stamp, deleted, body, labels, owners)
        )

    def clear_index(self, conn: Connection, type: str, id: str) -> None:
        conn.execute(_CLEAR_INDEX_PG, (type, id) * len(_INDEX_TABLES))

    def store_events(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """One statement whatever the rows (arrays, as ``store_index``)."""
        if len(rows) == 1:
            conn.execute(_INSERT_EVENT, rows[0])
            return
        conn.execute(_INSERT_EVENTS_PG, [list(column) for column in zip(*rows, strict=True)])

    def store_index(self, conn: Connection, rows: Mapping[str, Sequence[tuple[Any, ...]]]) -> None:
        """One statement whatever the rows (psycopg's ``executemany`` costs a Python-side
        round of the pipeline per row; arrays cost one execute per group of resources)."""
        if not any(rows.values()):
            return
        args: list[Any] = []
        for table in _PG_ORDER:  # the statements' order in the text
            table_rows = rows.get(table, ())
            if table_rows:
                kinds = (
                    "text", "text", "text", "int4", *(k for _, k in _INDEX_COLUMNS[table]), "text"
                )
                for kind, column in zip(kinds, zip(*table_rows, strict=True), strict=True):
                    # an array holds one Python type: a whole number among floats is a float
                    args.append([float(v) for v in column] if kind == "float8" else list(column))
            else:
                args.extend([] for _ in range(5 + len(_INDEX_COLUMNS[table])))
        conn.execute(_INSERT_INDEX_PG, args)

    # The group writer: one transaction per group, behind the writers' advisory lock (groups of
    # every process serialise on it, so the locks their writes take never deadlock), its
    # statements sent in pipeline mode (none waits for a round trip unless its result is read).

    def writer_connection(self) -> _PgWriter:
        return _PgWriter(self._connect(), self)

    def _connect(self) -> Any:
        with self.errors():
            raw = self._psycopg.connect(self._url, autocommit=True, options=_SESSION_OPTIONS)
        self._writers.append(raw)
        return raw

    def _reopen(self, conn: _PgWriter) -> None:
        """A writer whose connection broke (the server restarted, an administrator ended it)
        gets a new one before its next transaction."""
        if conn.raw.closed or conn.raw.broken:
            self._writers.remove(conn.raw)
            conn.raw = self._connect()

    @staticmethod
    def _reset(conn: _PgWriter) -> None:
        """Leave whatever a failed group left behind (pipeline mode, an open transaction)."""
        conn.end_pipeline(RuntimeError("reset"))
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def try_begin(self, conn: _PgWriter) -> bool:
        self._reopen(conn)
        with self.errors():
            self._reset(conn)
            conn.execute("BEGIN")
            got = conn.execute("SELECT pg_try_advisory_xact_lock(?)", (_WRITERS,)).fetchone()[0]
            if not got:
                conn.execute("ROLLBACK")
                return False
            conn.start_pipeline()
        return True

    def begin(self, conn: _PgWriter) -> None:
        self._reopen(conn)
        with self.errors():
            self._reset(conn)
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_WRITERS,)).fetchone()
            conn.start_pipeline()

    def commit(self, conn: _PgWriter) -> None:
        with self.errors():
            try:
                conn.end_pipeline()  # the deferred errors of pipelined statements surface here
                faults.hit("before-commit")
                conn.execute("COMMIT")
            except BaseException as exc:
                conn.end_pipeline(exc)
                if not conn.raw.broken and conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        faults.hit("after-commit")

    def rollback(self, conn: _PgWriter) -> None:
        with self.errors():
            conn.end_pipeline(RuntimeError("rolled back"))
            if not conn.raw.broken and conn.in_transaction:
                conn.execute("ROLLBACK")

    def check_durability(self) -> None:
        with self.reading() as conn:
            fsync = conn.execute("SHOW fsync").fetchone()[0]
            commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
        if fsync != "on" or commit != "on":
            raise RuntimeError(
                f"PostgreSQL is not durable: fsync={fsync}, synchronous_commit={commit}"
            )

    def bind_identity(self, store_id: str) -> None:
        """The database's comment names its store (``store_file.PG_MARKER``), set once: it
        outlives the store's tables, so a store whose tables were dropped or emptied is
        refused at the next start-up (``_check_identity``), and another store's tables
        restored into this database too. (A database dropped and created anew loses its
        comment with it: that case cannot be told from a new store.)"""
        from psycopg import sql

        with self.errors(), self.pool.connection() as conn:
            name, marked = self._marker(conn)
            if marked is None:
                try:
                    conn.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            sql.Identifier(name), sql.Literal(f"calaim-fhir store {store_id}")
                        )
                    )
                except self._psycopg.errors.InsufficientPrivilege:
                    logger.warning(
                        "the database %s cannot be marked with its store (not its owner): a "
                        "store whose tables are dropped will not be recognised",
                        name,
                    )
                return
        if marked != store_id:
            raise store_file.StoreRefused(
                f"The database {name} holds store {store_id}, but its comment names store "
                f"{marked}: these are not the tables that were here. Restore the right ones, "
                f"or remove the mark (COMMENT ON DATABASE \"{name}\" IS NULL) if this store is "
                "meant to replace it."
            )

    def health(self) -> list[str]:
        problems = self.damage.problems()
        found = _store_id(self)
        if isinstance(found, FhirError):
            problems.append(f"the store cannot be read: {found.issues[0].diagnostics}")
        return problems

    def integrity(self, quick: bool) -> tuple[list[str], list[str]]:
        """amcheck's ``bt_index_check`` on every B-tree index of the store's schema (with
        ``heapallindexed`` unless ``quick``), when the extension is installed or can be;
        without it, every table is read through once."""
        problems: list[str] = []
        with self.reading() as conn:
            tables = [
                str(row[0])
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                ).fetchall()
            ]
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                has_amcheck = True
            except self._psycopg.Error:
                has_amcheck = False
            if not has_amcheck:
                for table in tables:
                    conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                return [], ["amcheck is not available: tables were read, indexes not checked"]
            indexes = conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE am.amname = 'btree' AND n.nspname = current_schema()"
            ).fetchall()
            for (name,) in indexes:
                try:
                    conn.execute(
                        "SELECT bt_index_check(?::regclass, ?)", (f'"{name}"', not quick)
                    ).fetchone()
                except self._psycopg.Error as exc:
                    problems.append(f"index {name}: {str(exc).splitlines()[0][:200]}")
        return problems, []

    def close(self) -> None:
        for raw in self._writers:
            raw.close()
        self._writers.clear()
        self.pool.close()


class _PgConnection:
    """A psycopg connection that accepts the ``?`` placeholders the adapter writes."""

    __slots__ = ("_conn", "_dialect")

    def __init__(self, conn: Any, dialect: PostgresDialect) -> None:
        self._conn = conn
        self._dialect = dialect

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._conn.execute(self._dialect.sql(sql), params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any:
        """One statement for many rows; inside a pipeline the rows are sent without waiting."""
        cursor = self._conn.cursor()
        cursor.executemany(self._dialect.sql(sql), params)
        return cursor


_WRITERS = lock_key("calaim-fhir:writers")


class _PgWriter(_PgConnection):
    """The group writer's connection, with its pipeline mode switched on and off per group."""

    __slots__ = ("_pipeline",)

    def __init__(self, conn: Any, dialect: PostgresDialect) -> None:
        super().__init__(conn, dialect)
        self._pipeline: AbstractContextManager[Any] | None = None

    @property
    def raw(self) -> Any:
        return self._conn

    @raw.setter
    def raw(self, conn: Any) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        status = self._conn.info.transaction_status
        return bool(status != status.IDLE)

    def start_pipeline(self) -> None:
        self._pipeline = self._conn.pipeline()
        self._pipeline.__enter__()

    def end_pipeline(self, error: BaseException | None = None) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        if error is None:
            pipeline.__exit__(None, None, None)
        else:  # leave pipeline mode without raising its own deferred errors
            pipeline.__exit__(type(error), error, error.__traceback__)


def open_dialect(
    url: str, *, pool_size: int = 8, busy_timeout_ms: int = 10_000, query_budget_ms: int = 0
) -> Dialect:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path.db and sqlite:////absolute/path.db
        raw = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
        if not raw:
            raise ValueError("sqlite URL needs a path: sqlite:///data/calaim-fhir.db")
        return SQLiteDialect(os.path.abspath(raw), busy_timeout_ms, query_budget_ms)
    if parsed.scheme in ("postgresql", "postgres"):
        return PostgresDialect(url, pool_size, query_budget_ms)
    raise ValueError(f"unsupported database URL scheme {parsed.scheme!r}")
