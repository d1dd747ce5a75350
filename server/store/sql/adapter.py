"""The SQL repository shared by SQLite and PostgreSQL (dialect differences live in dialect.py).

Every write runs in one database transaction (a ``SqlUnit``):

1. locks: every write transaction first takes the writers' lock (SQLite: ``BEGIN IMMEDIATE``;
   PostgreSQL: a transaction-scoped advisory lock), so no two write transactions interleave,
   in one process or several — which also makes group commit (several writes in one
   transaction, ``group_commit.py``) deadlock-free. Conditional interactions also lock their
   normalised criteria (``Criteria.key``), so their search-then-write stays atomic on its own
   terms should writers ever be split over several locks;
2. reads and checks (version, ``If-Match``, conditional matches);
3. the stamp: the ``clock`` row hands out ``lastUpdated`` values that increase strictly in
   commit order (its row lock is held until commit; see ``Clock``), so a poller of
   ``_lastUpdated=gt...`` never misses a version;
4. history row, current row, search index rows (the ``RowSource``'s rows of the new
   version, after deleting the previous version's). The index rows of the unit's versions are
   gathered and inserted together — one statement per index table for the whole unit (SQLite:
   one ``executemany``; PostgreSQL: one statement for all tables, pipelined) — before the unit
   reads anything that may look at them (a search, a conditional match, a narrowed read) and
   at its end; at the end of the unit also the outbox events of its versions, in one statement
   (``outbox.py``); then COMMIT (fsync'd before the answer).

A unit stores versions; what a write means (conditional interactions, patches, validation,
program rules) is decided above it by the write pipeline (``server/writes/``).

Searches (``SqlReader.search``) run one statement per page, compiled by ``query.py``; the bulk
reads of members' resources and of a whole type (``patient_resources``, ``scan``) one statement
per call, from ``scans.py``.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson

from server.auth.grants import stored_reader
from server.auth.interactions import Interaction
from server.errors import InvalidResource, TransactionConflict
from server.fhir.ids import new_id
from server.fhir.instant import format_instant, now_us
from server.ports import (
    ENTRY_BYTES,
    INCLUDE_HOPS,
    PUT,
    HistoryQuery,
    Included,
    Method,
    Page,
    SearchPage,
    Unit,
    UpdateMode,
    Version,
    WriteResult,
    fitting,
)
from server.search.access_facts import access_facts, index_member
from server.search.query import Clause, Criteria, Cursor, Include, SearchQuery
from server.search.rows import IndexRows
from server.store import faults
from server.store.base import Origin, RowSource
from server.store.sql import bodies, scans, store_file
from server.store.sql import query as compiler
from server.store.sql.audit import SqlAudit, write_records
from server.store.sql.auth import SqlAuth
from server.store.sql.dialect import (
    CONFLICT_RETRIES,
    INSERT_INDEX,
    Connection,
    Dialect,
    keyed,
    one_snapshot,
)
from server.store.sql.grants import write_grants
from server.store.sql.group_commit import GroupWriter
from server.store.sql.jobs import SqlJobs
from server.store.sql.outbox import SqlOutbox
from server.store.sql.schema import MIGRATIONS, POSTGRESQL_ONLY
from server.store.sql.subscriptions import SqlSubscriptions

_CURRENT = f"SELECT {compiler.COLUMNS} FROM resource r"
_PLAIN_PARAMETER = re.compile(r"\?(?![0-9])")


@lru_cache(maxsize=256)
def _numbered(text: str, args: tuple[Any, ...]) -> compiler.Frag:
    """SQLite: ``text``'s parameters numbered from ``?3`` (after a read's type and id), each
    distinct value of ``args`` bound once. An access narrowing repeats its values (the caller's
    organisation, the time, the consent kinds) in every branch: a read by id binds ~120 of
    them, ~30 distinct, and binding is most of what the statement costs beyond the lookup.
    Numbered from the text's plain ``?`` outside string literals; anything else unchanged."""
    pieces = text.split("'")  # even pieces lie outside string literals ('' escapes included)
    if sum(piece.count("?") for piece in pieces[::2]) != len(args):
        return text, args
    numbers: dict[tuple[type, Any], int] = {}
    values: list[Any] = []
    order = iter(args)

    def number(_: re.Match[str]) -> str:
        value = next(order)
        key = (type(value), value)
        if key not in numbers:
            numbers[key] = len(values) + 3
            values.append(value)
        return f"?{numbers[key]}"

    for i in range(0, len(pieces), 2):
        pieces[i] = _PLAIN_PARAMETER.sub(number, pieces[i])
    return "'".join(pieces), tuple(values)


_FETCH = 256  # rows fetched at a time by streaming reads
_KEYS_PER_STATEMENT = 200  # resource keys looked up by one statement
P = ParamSpec("P")
R = TypeVar("R")


def write_index(conn: Connection, type: str, id: str, rows: IndexRows) -> None:
    """Insert the index rows of one resource on any connection: one ``executemany`` per table
    that has rows (batch jobs such as reindexing; a unit gathers its rows for
    ``Dialect.store_index``), each with the member its access facts name."""
    member = index_member(*access_facts(type, id, rows))
    for table, table_rows in rows.tables().items():
        conn.executemany(
            INSERT_INDEX[table], keyed([(type, id, *row, member) for row in table_rows])
        )


class NoRows:
    """A row source that indexes nothing (a store that is never searched by value)."""

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        return IndexRows()


def _current(row: Any) -> Version:
    return Version(
        row[0],
        row[1],
        row[2],
        row[3],
        bool(row[4]),
        None if row[5] is None else bytes(row[5]),
        "PUT",
        row[6],
        row[7],
        row[8],
    )


def render(type: str, id: str, version: int, stamp: int, resource: dict[str, Any]) -> bytes:
    """The stored JSON: the resource with its id and ``meta.versionId``/``lastUpdated`` set."""
    meta = resource.get("meta")
    new_meta: dict[str, Any] = {"versionId": str(version), "lastUpdated": format_instant(stamp)}
    if isinstance(meta, dict):
        new_meta.update((k, v) for k, v in meta.items() if k not in new_meta)
    out: dict[str, Any] = {"resourceType": type, "id": id, "meta": new_meta}
    out.update((k, v) for k, v in resource.items() if k not in out)
    try:
        return orjson.dumps(out)
    except orjson.JSONEncodeError as exc:  # nesting beyond the serialiser's limit
        raise InvalidResource(
            f"The resource is nested too deeply to be stored ({exc})", expression=type
        ) from exc


Estimate = Callable[[Connection, str, Sequence[Any]], "int | None"]
Budget = Callable[[Connection], AbstractContextManager[None]]


class SqlReader:
    """Reads on one connection (a write transaction's, or a read connection). ``estimate``
    gives the database's estimate of a count (``_total=estimate``), or None where it has
    none."""

    def __init__(
        self,
        conn: Connection,
        collate: str = "",
        estimate: Estimate | None = None,
        budget: Budget | None = None,
    ):
        self._conn = conn
        self._collate = collate
        self._estimate = estimate
        self._budget = budget

    def _budgeted(self) -> AbstractContextManager[None]:
        """The query time budget of a search's statements (none inside a write unit)."""
        return nullcontext() if self._budget is None else self._budget(self._conn)

    def read(self, type: str, id: str, within: Sequence[Clause] = ()) -> Version | None:
        if within:
            return self._read_within(type, id, within)
        row = self._conn.execute(_CURRENT + " WHERE rtype = ? AND id = ?", (type, id)).fetchone()
        return None if row is None else _current(row)

    def _read_within(self, type: str, id: str, within: Sequence[Clause]) -> Version | None:
        """The live current version if it satisfies ``within``; its deletion version if it is
        deleted and they hold on the deleted row (clauses on index rows never do)."""
        condition = compiler.within(within, collate=self._collate, types=(type,))
        numbered = None
        if isinstance(self._conn, sqlite3.Connection):
            try:
                numbered = _numbered(condition[0], tuple(condition[1]))
            except TypeError:  # a value that cannot be a cache key: bound as compiled
                pass
        if numbered is not None:
            text, args = numbered
            sql = f"{_CURRENT} WHERE r.rtype = ?1 AND r.id = ?2 AND {text}"
        else:
            sql, args = (
                f"{_CURRENT} WHERE r.rtype = ? AND r.id = ? AND {condition[0]}",
                condition[1],
            )
        row = self._conn.execute(sql, (type, id, *args)).fetchone()
        return None if row is None else _current(row)

    def visible(self, type: str, id: str) -> bool:
        return True

    def _narrowing(
        self, within: Sequence[Clause], types: compiler.Types = None, alias: str = "r"
    ) -> compiler.Frag:
        return compiler.within(within, alias, collate=self._collate, types=types)

    def versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for start in range(0, len(keys), _KEYS_PER_STATEMENT):
            chunk = keys[start : start + _KEYS_PER_STATEMENT]
            where = " OR ".join("(rtype = ? AND id = ?)" for _ in chunk)
            args = [value for key in chunk for value in key]
            for row in self._conn.execute(
                f"SELECT rtype, id, version FROM resource WHERE {where}", args
            ).fetchall():
                out[(row[0], row[1])] = int(row[2])
        return out

    def vread(
        self, type: str, id: str, version: int, within: Sequence[Clause] = ()
    ) -> Version | None:
        if within and self._read_within(type, id, within) is None:
            return None
        own = self._narrowing(within, (type,), "h")
        row = self._conn.execute(
            "SELECT h.rtype, h.id, h.version, h.last_updated, h.deleted, h.body, h.seq,"
            " h.method, h.labels, h.owners FROM resource_history h"
            f" WHERE h.rtype = ? AND h.id = ? AND h.version = ? AND {own[0]}",
            (type, id, version, *own[1]),
        ).fetchone()
        return None if row is None else _history(row)

    def history(self, q: HistoryQuery) -> Page:
        clauses: list[str] = []
        args: list[Any] = []
        join = ""
        if q.type is not None:
            clauses.append("h.rtype = ?")
            args.append(q.type)
        if q.id is not None:
            clauses.append("h.id = ?")
            args.append(q.id)
        if q.since is not None:
            clauses.append("h.last_updated >= ?")
            args.append(q.since)
        if q.before_seq is not None:
            clauses.append("h.seq < ?")
            args.append(q.before_seq)
        if q.at is not None:
            join = (
                " LEFT JOIN resource_history n ON n.rtype = h.rtype AND n.id = h.id"
                " AND n.version = h.version + 1"
            )
            clauses.append("h.last_updated < ? AND (n.seq IS NULL OR n.last_updated > ?)")
            args.extend((q.at[1], q.at[0]))
        if q.within:
            # each version by its own facts and the resource by its current ones (a deletion
            # keeps the facts of what it deleted), both in the statement: pages stay full
            types = None if q.type is None else (q.type,)
            own = self._narrowing(q.within, types, "h")
            condition = self._narrowing(q.within, types)
            clauses.append(
                f"{own[0]} AND EXISTS (SELECT 1 FROM resource r WHERE r.rtype = h.rtype"
                f" AND r.id = h.id AND {condition[0]})"
            )
            args.extend((*own[1], *condition[1]))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        inline = bodies.inline(q.max_bytes, q.count + 1)
        body = (
            "h.body"
            if inline is None
            else (f"CASE WHEN length(h.body) <= {inline} THEN h.body END")
        )
        sql = (
            f"SELECT h.rtype, h.id, h.version, h.last_updated, h.deleted, {body}, h.seq,"
            f" h.method, h.labels, h.owners{compiler.size_column('h', inline)}"
            f" FROM resource_history h{join}{where} ORDER BY h.seq DESC LIMIT {int(q.count) + 1}"
        )
        rows = self._conn.execute(sql, args).fetchall()
        more = len(rows) > q.count
        rows = rows[: q.count]
        kept = len(rows) if inline is None else fitting([bodies.size(r) for r in rows], q.max_bytes)
        cut = kept < len(rows)
        items = bodies.fill(self._conn, [_history(row) for row in rows[:kept]], inline)
        return Page(items, more or cut, cut)

    def search(self, query: SearchQuery) -> SearchPage:
        with self._budgeted():
            return self._search(query)

    def _search(self, query: SearchQuery) -> SearchPage:
        probe = _remembered(self._count)  # the count and the page ask the same probes
        inline = bodies.inline(query.max_bytes, query.count + 1)
        counted = self._counted(query, probe, inline)
        if counted is not None:
            return self._page(query, *counted, 0, inline)
        total = self._total(query, probe)
        if query.count <= 0:
            return SearchPage([], None, None, total)
        sql, args, keys = compiler.page_statement(
            query, collate=self._collate, probe=probe, inline=inline
        )
        rows = self._conn.execute(sql, args).fetchall()
        more = len(rows) > query.count
        return self._page(query, rows, more, total, keys, inline)

    def _counted(
        self, query: SearchQuery, probe: compiler.Probe, inline: int | None
    ) -> tuple[list[Any], bool, int] | None:
        """The page's rows, whether more follow, and the exact total from one evaluation of
        the criteria, where counting would test every match on its resource row anyway and
        the page is in insertion order (``compiler.matches_statement``): the matches' keys
        read in order, counted, and the page's rows read by key, both in one snapshot (so
        the rows read are the versions that matched, and the criteria are not tested twice).
        None: the count and the page as two statements."""
        if query.total in ("none", "estimate") or query.count <= 0:
            return None
        cursor = query.cursor
        if query.sort or (cursor is not None and (cursor.backward or cursor.values)):
            return None
        matches = compiler.matches_statement(query.criteria, collate=self._collate, probe=probe)
        if matches is None:
            return None
        with one_snapshot(self._conn):  # SQLite only, as matches_statement
            keys = self._conn.execute(*matches).fetchall()
            total = len(keys)
            if cursor is not None:
                keys = [k for k in keys if k[2] > cursor.seq]
            more = len(keys) > query.count
            wanted = [(k[0], k[1]) for k in keys[: query.count + 1]]
            if not wanted:
                return [], False, total
            sql, args = compiler.keyed_rows_statement(wanted, inline=inline)
            rows = self._conn.execute(sql, args).fetchall()
        return rows, more, total

    def _page(
        self,
        query: SearchQuery,
        rows: list[Any],
        more: bool,
        total: int | None,
        keys: int,
        inline: int | None,
    ) -> SearchPage:
        """The page of ``rows`` (at most ``count + 1``, in the page's order; ``keys`` sort
        values after the columns) with its cursors."""
        rows = rows[: query.count]
        cut = False
        if inline is not None:  # the rows nearest the cursor that fit the bound
            kept = fitting([bodies.size(row) for row in rows], query.max_bytes)
            cut, more = kept < len(rows), more or kept < len(rows)
            rows = rows[:kept]
        cursor = query.cursor
        if cursor is not None and cursor.backward:
            rows.reverse()
        items = bodies.fill(self._conn, [_current(row) for row in rows], inline)

        def at(row: Any, backward: bool) -> Cursor:
            start = compiler.SORT_VALUES
            return Cursor(tuple(row[start : start + keys]), int(row[6]), backward)

        if cursor is not None and cursor.backward:
            # the page before a row: that row (and whatever follows it) comes next
            after_page = at(rows[-1], False) if rows else Cursor(cursor.values, cursor.seq - 1)
            before = at(rows[0], True) if more else None
            return SearchPage(items, after_page, before, total, cut)
        next_cursor = at(rows[-1], False) if more and rows else None
        previous = None
        if cursor is not None:  # the rows before this page end where this page begins
            previous = at(rows[0], True) if rows else Cursor(cursor.values, cursor.seq + 1, True)
        return SearchPage(items, next_cursor, previous, total, cut)

    def count_by(
        self, criteria: Criteria, param: str, target_type: str | None = None
    ) -> dict[str, int]:
        with self._budgeted():
            sql, args = compiler.grouped_count_statement(
                criteria,
                param,
                target_type,
                collate=self._collate,
                probe=_remembered(self._count),
            )
            rows = self._conn.execute(sql, args).fetchall()
        return {f"{type}/{id}": int(n) for type, id, n in rows if type and id}

    def stamp(self, type: str) -> tuple[Any, ...] | None:
        """The store's identity, how many ``type`` rows it holds (a deleted resource keeps its
        row) and their latest ``last_updated``, read off ``resource_type_updated``: every write
        of a ``type`` resource commits a later ``last_updated`` than any committed before it
        (``Clock``, under the writers' lock, whichever process writes), so a write changes the
        latest, and a row removed (an emptied store) the count."""
        row = self._conn.execute(
            "SELECT (SELECT id FROM store_identity), COUNT(*), MAX(last_updated) FROM resource"
            " WHERE rtype = ?",
            (type,),
        ).fetchone()
        return (str(row[0]), int(row[1]), int(row[2] or 0))

    def _total(self, query: SearchQuery, probe: compiler.Probe) -> int | None:
        """``Bundle.total`` as ``query.total`` asks (see ``Total``)."""
        if query.total == "none":
            return None
        if query.total in ("auto", "bounded"):
            cheap = compiler.cheap_count_statement(
                query.criteria, collate=self._collate, probe=probe
            )
            if cheap is not None:
                return self._count(*cheap)
            if query.total == "bounded" or self._estimate is None:
                return None  # counting would read every match: no total rather than a slow page
        sql, args = compiler.count_statement(query.criteria, collate=self._collate, probe=probe)
        if query.total in ("estimate", "auto") and self._estimate is not None:
            estimated = self._estimate(self._conn, sql, args)
            if query.total == "estimate" and estimated is None:
                return self._count(sql, args)
            if query.total == "auto" and _contradicted(query, estimated):
                return None
            return estimated
        return self._count(sql, args)

    def _count(self, sql: str, args: Sequence[Any]) -> int:
        """The number a ``SELECT COUNT(*)`` statement gives (the search plan's probes)."""
        return int(self._conn.execute(sql, args).fetchone()[0])

    def include(
        self,
        versions: list[Version],
        includes: tuple[Include, ...],
        limit: int,
        within: Sequence[Clause] = (),
        max_bytes: int | None = None,
    ) -> Included:
        with self._budgeted():
            return self._include(versions, includes, limit, tuple(within), max_bytes)

    def _include(
        self,
        versions: list[Version],
        includes: tuple[Include, ...],
        limit: int,
        within: tuple[Clause, ...],
        max_bytes: int | None,
    ) -> Included:
        """``include`` with each branch narrowed by ``within`` (the caller's view) before its
        row limit; ``:iterate`` goes on from what passed."""
        seen = {(v.type, v.id) for v in versions}
        added: list[Version] = []
        used = 0  # bytes of ``added``, as ``fitting`` counts them
        sources = versions
        for depth in range(INCLUDE_HOPS + 1):
            active = [i for i in includes if depth == 0 or i.iterate]
            if not sources or not active:
                break
            keys: dict[str, list[str]] = {}
            for version in sources:
                keys.setdefault(version.type, []).append(version.id)
            # every row may be one seen already: fetch enough to fill the cap and see past it
            room = limit - len(added) + len(seen) + 1
            if depth == INCLUDE_HOPS:  # one hop more would add resources: say so
                probe = self._included(keys, active, room, 0, seen, within)
                return Included(added, hop_limit=bool(probe[0]))
            budget = None if max_bytes is None else max_bytes - used
            inline = bodies.inline(budget, room)
            fresh, sizes = self._included(keys, active, room, inline, seen, within)
            by_count = limit - len(added)
            by_bytes = fitting(sizes, budget, at_least=0)
            kept = min(by_count, by_bytes)
            added.extend(bodies.fill(self._conn, fresh[:kept], inline))
            if kept < len(fresh):
                return Included(added, "bytes" if by_bytes < by_count else "count")
            used += sum(sizes) + ENTRY_BYTES * kept
            sources = fresh
        return Included(added)

    def _included(
        self,
        keys: dict[str, list[str]],
        active: list[Include],
        room: int,
        inline: int | None,
        seen: set[tuple[str, str]],
        within: tuple[Clause, ...],
    ) -> tuple[list[Version], list[int]]:
        """One hop of includes from ``keys``: the resources not ``seen`` yet (added to it) that
        satisfy ``within`` (before each statement's limit), and their sizes (with ``inline``;
        0 without). Each statement is narrowed by the caller's view of the types it can
        return only (``within_types``): the revincluded sources' types, and the targets' types
        the includes name or, when one does not, that the references point at (one lookup
        of the reference rows), none of which means no statement."""
        fresh: list[Version] = []
        sizes: list[int] = []
        forward = [i for i in active if not i.reverse]
        backward = [i for i in active if i.reverse]
        statements: list[tuple[str, list[Any]] | None] = []
        if forward:
            targets = self._target_types(keys, forward) if within else ()
            if targets or not within:
                view = compiler.within_types(within, targets, collate=self._collate)
                statements.append(compiler.include_statement(keys, forward, room, view, inline))
        if backward:
            sources = tuple(sorted({i.source_type for i in backward}))
            view = compiler.within_types(within, sources, collate=self._collate)
            statements.append(compiler.revinclude_statement(keys, backward, room, view, inline))
        for statement in statements:
            if statement is None:
                continue
            for row in self._conn.execute(*statement).fetchall():
                key = (row[0], row[1])
                if key not in seen:
                    seen.add(key)
                    fresh.append(_current(row))
                    sizes.append(bodies.size(row) if inline is not None else 0)
        return fresh, sizes

    def _target_types(
        self, keys: dict[str, list[str]], forward: list[Include]
    ) -> tuple[str, ...]:
        """The types the ``forward`` includes' references from ``keys`` can reach, sorted."""
        if all(i.target_type is not None for i in forward):
            return tuple(sorted({i.target_type for i in forward if i.target_type is not None}))
        statement = compiler.include_types_statement(keys, forward)
        if statement is None:
            return ()
        rows = self._conn.execute(*statement).fetchall()
        return tuple(sorted({row[0] for row in rows if row[0]}))

    def patient_resources(
        self,
        patient_ids: Sequence[str],
        params: Mapping[str, Sequence[str]],
        within: Sequence[Clause] = (),
    ) -> Iterator[tuple[str, Version]]:
        statement = scans.patient_resources_statement(
            patient_ids, params, collate=self._collate, narrowing=self._narrowing(within)
        )
        if statement is None:
            return
        cursor = self._conn.execute(*statement)
        while rows := cursor.fetchmany(_FETCH):
            for row in rows:
                yield row[0], _current(row[1:])

    def scan(
        self, type: str, after: int | None, limit: int, within: Sequence[Clause] = ()
    ) -> list[Version]:
        narrowing = self._narrowing(within, (type,))
        rows = self._conn.execute(*scans.scan_statement(type, after, limit, narrowing)).fetchall()
        return [_current(row) for row in rows]


class Clock:
    """Hands out ``lastUpdated`` stamps inside one write transaction.

    The first stamp locks the ``clock`` row (``UPDATE ... RETURNING``: a row lock on
    PostgreSQL, SQLite's write lock is already held) and reads the last stamp ever handed out;
    later stamps are computed here; ``flush`` stores the last one before the commit. Every stamp
    is later than every stamp of every transaction committed before this one.
    """

    __slots__ = ("_conn", "_last", "_dirty")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._last: int | None = None
        self._dirty = False

    def next(self) -> int:
        if self._last is None:
            row = self._conn.execute("UPDATE clock SET ts = ts WHERE id = 1 RETURNING ts")
            self._last = int(row.fetchone()[0])
        self._last = max(self._last + 1, now_us())
        self._dirty = True
        return self._last

    def flush(self) -> None:
        if self._dirty:
            self._conn.execute("UPDATE clock SET ts = ? WHERE id = 1", (self._last,))
            self._dirty = False


def _index_stored(read: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[SqlUnit, P], R]:
    """``read`` on a unit, after the unit's gathered index rows are inserted."""

    def after(unit: SqlUnit, /, *args: P.args, **kwargs: P.kwargs) -> R:
        unit._store_index()
        return read(unit, *args, **kwargs)

    after.__name__, after.__doc__ = read.__name__, read.__doc__
    return after


_INTERACTIONS: dict[str, str] = {
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


class SqlUnit(SqlReader):
    """One write transaction; see the module docstring for the order of its steps.

    Current versions it has read or written are kept for the rest of the unit: nothing else
    writes while the unit holds the writers' lock, so a second read of the same resource (the
    pipeline's, then the store's own) costs no statement."""

    def __init__(
        self, conn: Connection, dialect: Dialect, clock: Clock, rows: RowSource, origin: Origin
    ) -> None:
        super().__init__(conn, dialect.collate)
        self._dialect = dialect
        self._clock = clock
        self._rows = rows
        self._origin = origin
        self._locks: set[str] = set()
        self._seen: dict[tuple[str, str], Version | None] = {}
        self._transaction: str | None = None
        self._events: list[tuple[Any, ...]] = []
        self._index: dict[str, list[tuple[Any, ...]]] = {}  # rows not inserted yet, by table
        self._indexed: set[tuple[str, str]] = set()  # the resources they belong to

    def _store_index(self) -> None:
        """Insert the gathered index rows (one statement per table)."""
        if self._index:
            self._dialect.store_index(self._conn, self._index)
            self._index = {}
            self._indexed.clear()

    # -- building blocks -------------------------------------------------------------------

    def read(self, type: str, id: str, within: Sequence[Clause] = ()) -> Version | None:
        if within:
            self._store_index()
            return self._read_within(type, id, within)
        key = (type, id)
        if key in self._seen:
            return self._seen[key]
        found = self._seen[key] = super().read(type, id)
        return found

    def versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        seen = self._seen
        out = {k: v.version for k in keys if (v := seen.get(k)) is not None}
        unread = [k for k in keys if k not in seen]
        if unread:
            out.update(super().versions(unread))
        return out

    def target(
        self, type: str, id: str, interaction: Interaction, within: Sequence[Clause] = ()
    ) -> Version | None:
        return self.read(type, id, within)

    # reads that may look at index rows see the unit's own: the gathered rows go first
    vread = _index_stored(SqlReader.vread)
    history = _index_stored(SqlReader.history)
    search = _index_stored(SqlReader.search)
    count_by = _index_stored(SqlReader.count_by)
    include = _index_stored(SqlReader.include)
    patient_resources = _index_stored(SqlReader.patient_resources)
    scan = _index_stored(SqlReader.scan)

    def stamp(self, type: str) -> tuple[Any, ...] | None:
        """None: the unit's own writes (and a stamp read here) may still be rolled back."""
        return None

    def system(self) -> SqlUnit:
        return self

    def on_behalf(self, interaction: Interaction, type: str) -> SqlUnit:
        return self

    def finish(self) -> None:
        """Store the outbox events of the unit's versions, in the order they were written
        (one statement for them all), and their audit records, after the index rows not
        inserted yet; the unit's last step before its savepoint or commit."""
        self._store_index()
        if self._events:
            self._dialect.store_events(self._conn, self._events)
            write_records(self._conn, self._events)  # the audit trail's write records
            self._events = []

    def _lock(self, name: str) -> None:
        if name not in self._locks:
            self._dialect.lock(self._conn, name)
            self._locks.add(name)

    def _write(
        self,
        type: str,
        id: str,
        resource: dict[str, Any] | None,
        prev: Version | None,
        method: Method,
    ) -> Version:
        stamp = self._clock.next()
        number = prev.version + 1 if prev else 1
        body = None if resource is None else render(type, id, number, stamp, resource)
        deleted = 1 if resource is None else 0
        index = None if resource is None else self._rows.rows(type, resource)
        labels: str | None
        owners: str | None
        if index is None and prev is not None:
            # a deletion keeps the facts of what it deletes: whoever could see the resource
            # is told it is gone (410), anyone else that it is not there (404)
            labels, owners = prev.labels, prev.owners
        else:
            labels, owners = access_facts(type, id, index)
        # no result is read back: on PostgreSQL (pipeline mode) a write waits for no round trip
        self._dialect.store_version(
            self._conn, (type, id, number, stamp, deleted, method, body, labels, owners)
        )
        key = (type, id)
        if prev is not None:
            if key in self._indexed:  # written before in this unit: its rows go, then are cleared
                self._store_index()
            self._dialect.clear_index(self._conn, type, id)
        if index is not None:
            rows = index.tables()
            if rows:
                member = index_member(labels, owners)
                gathered = self._index
                for table, table_rows in rows.items():
                    bucket = gathered.get(table)
                    if bucket is None:
                        bucket = gathered[table] = []
                    bucket += [(type, id, *row, member) for row in table_rows]
                self._indexed.add(key)
        write_grants(
            self._conn, type, id, resource, stamp, stored_reader(self.read), fresh=prev is None
        )
        origin = self._origin
        if self._transaction is None:
            self._transaction = os.urandom(12).hex()
        self._events.append(
            (
                type,
                id,
                number,
                None if prev is None else prev.version,
                _INTERACTIONS[method],
                stamp,
                origin.client,
                origin.organization,
                origin.user,
                origin.request_id,
                self._transaction,
            )
        )
        version = Version(type, id, number, stamp, bool(deleted), body, method, 0, labels, owners)
        self._seen[key] = version
        return version

    def match(self, criteria: Criteria, limit: int | None = 2) -> list[Version]:
        self._lock(criteria.key)
        self._store_index()
        clause, args = compiler.where(criteria, collate=self._collate)
        sql = f"{_CURRENT} WHERE {clause} ORDER BY r.created_seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        matches = [_current(row) for row in self._conn.execute(sql, args).fetchall()]
        faults.hit("after-match")
        return matches

    # -- writes -----------------------------------------------------------------------------

    def create(self, type: str, resource: dict[str, Any], *, id: str | None = None) -> WriteResult:
        """A new resource with a new id: a fresh one (``fhir.ids``), or ``id`` when the caller
        chose it in advance (a transaction assigns ids before it rewrites references)."""
        return WriteResult(self._write(type, id or new_id(), resource, None, "POST"), created=True)

    def update(
        self, type: str, id: str, resource: dict[str, Any], mode: UpdateMode = PUT
    ) -> WriteResult:
        prev = self.read(type, id)
        created = prev is None or prev.deleted
        return WriteResult(self._write(type, id, resource, prev, mode.method), created=created)

    def delete(self, type: str, id: str) -> WriteResult:
        prev = self.read(type, id)
        if prev is None or prev.deleted:
            return WriteResult(prev, changed=False)
        return WriteResult(self._write(type, id, None, prev, "DELETE"))


class SqlRepository:
    """The store on one database. ``rows`` gives the search index rows of every version it
    writes (``server.search.index.Indexer``); without it nothing is indexed."""

    def __init__(self, dialect: Dialect, rows: RowSource | None = None) -> None:
        self.sql_dialect = dialect
        self.dialect = dialect.name
        self.rows: RowSource = rows if rows is not None else NoRows()
        self.jobs = SqlJobs(dialect)  # asynchronous jobs' state (``server/jobs.py``)
        self.outbox = SqlOutbox(dialect)  # the events of committed versions
        self.auth = SqlAuth(dialect)  # SMART clients, signing keys, assertion jtis
        self.subscriptions = SqlSubscriptions(dialect)  # delivery state, numbered events
        self.audit = SqlAudit(dialect)  # the audit trail

    def migrate(self, then: Callable[[Connection], None] | None = None) -> None:
        """Check durability (before anything is written), then apply pending migrations; ``then``
        runs in the same transaction (start-up bookkeeping that must not commit on its own)."""
        self.sql_dialect.check_durability()
        types = self.sql_dialect.types
        with self.sql_dialect.writing() as conn:
            self.sql_dialect.lock(conn, "calaim-fhir:migrations")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0] or 0)
            for number, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    if statement.startswith(POSTGRESQL_ONLY) and self.dialect != "postgresql":
                        continue
                    conn.execute(statement.format(**types))
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (number, now_us()),
                )
            store_id = store_file.identity(conn)
            if then is not None:
                then(conn)
        self.sql_dialect.bind_identity(store_id)

    def health(self) -> list[str]:
        """The problems the store's cheap checks find (``Dialect.health``); none: healthy."""
        return self.sql_dialect.health()

    def run_jobs(
        self, conn: Connection, jobs: Sequence[tuple[Callable[[Unit], Any], Origin]]
    ) -> list[tuple[bool, Any]]:
        """Several independent write jobs inside the open transaction of ``conn``, so they can
        share one commit; each writes the outbox events of its versions with its ``Origin``.
        Each runs in its own savepoint: a failing job is rolled back to it and its exception
        returned; the others stay. (ok, result or exception) per job. A lone job needs no
        savepoint: its exception propagates and the caller rolls back.
        """
        clock = Clock(conn)
        dialect, rows = self.sql_dialect, self.rows
        outcomes: list[tuple[bool, Any]] = []
        with dialect.errors():
            if len(jobs) == 1:
                job, origin = jobs[0]
                unit = SqlUnit(conn, dialect, clock, rows, origin)
                outcomes.append((True, job(unit)))
                unit.finish()
            else:
                for job, origin in jobs:
                    for attempt in range(1, CONFLICT_RETRIES + 2):
                        conn.execute("SAVEPOINT job")
                        try:
                            with dialect.errors():
                                unit = SqlUnit(conn, dialect, clock, rows, origin)
                                value = job(unit)
                                unit.finish()
                        except Exception as exc:  # noqa: BLE001 - handed back to its caller
                            conn.execute("ROLLBACK TO SAVEPOINT job")
                            conn.execute("RELEASE SAVEPOINT job")
                            if isinstance(exc, TransactionConflict) and attempt <= CONFLICT_RETRIES:
                                continue  # aborted for a concurrent transaction: run it again
                            outcomes.append((False, exc))
                        else:
                            conn.execute("RELEASE SAVEPOINT job")
                            outcomes.append((True, value))
                        break
            clock.flush()
        return outcomes

    @contextmanager
    def reader(self) -> Iterator[SqlReader]:
        d = self.sql_dialect
        with d.reading() as conn:
            yield SqlReader(conn, d.collate, d.estimate, d.budget)

    @contextmanager
    def snapshot(self) -> Iterator[SqlReader]:
        """A reader whose reads see one snapshot where the database allows it cheaply
        (SQLite: one read transaction): for the reads that prepare a write."""
        d = self.sql_dialect
        with d.snapshot() as conn:
            yield SqlReader(conn, d.collate, d.estimate, d.budget)

    @property
    def inline_reads(self) -> bool:
        """SQLite: a WAL read takes microseconds and never waits for the writer."""
        return self.dialect == "sqlite"

    def group_writer(self, pool: ThreadPoolExecutor) -> GroupWriter:
        return GroupWriter(self.sql_dialect, self.run_jobs, pool)

    def close(self) -> None:
        self.auth.close()
        self.sql_dialect.close()


def _history(row: Any) -> Version:
    return Version(
        row[0],
        row[1],
        row[2],
        row[3],
        bool(row[4]),
        None if row[5] is None else bytes(row[5]),
        row[7],
        row[6],
        row[8],
        row[9],
    )


def _remembered(probe: compiler.Probe) -> compiler.Probe:
    """``probe`` answering each statement once: a page and its total plan the same clauses."""
    seen: dict[tuple[str, tuple[Any, ...]], int] = {}

    def remembered(sql: str, args: Sequence[Any]) -> int:
        key = (sql, tuple(args))
        if key not in seen:
            seen[key] = probe(sql, args)
        return seen[key]

    return remembered


def _contradicted(query: SearchQuery, estimated: int | None) -> bool:
    """Whether the probes that found a search broad contradict the planner's estimate of its
    count: with at most one clause, a clause (or the type) found to hold ``PROBE_LIMIT`` entries
    or more has about as many matches; an estimate far below that (a value the statistics
    miss) is left out rather than given. Several clauses may intersect to anything."""
    if estimated is None:
        return True
    return len(query.criteria.clauses) <= 1 and estimated < compiler.PROBE_LIMIT
