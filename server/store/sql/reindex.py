"""Which search parameter definitions the index rows were built with, and reindexing.

The ``search_param_state`` table holds, per parameter URL, the digest of the definition the
stored rows follow and a state: ``indexed`` (every stored resource has its rows) or ``pending``
(rows exist only for resources written since the definition appeared or changed), with the
``created_seq`` cursor a running reindex has reached.

``sync`` runs at start-up, in the migration transaction: a new or changed definition becomes
``pending`` when resources of its types are stored (``indexed`` at once otherwise), and the
registry hides pending parameters from searches and the CapabilityStatement. ``reindex``
rebuilds the rows of every stored resource of the pending parameters' types, in batches of one
transaction each, recording its cursor after each batch, so an interrupted run resumes where
it stopped; when it completes the parameters become ``indexed``. ``fill_facts`` computes the
access facts of the versions stored before they existed (migration 7); ``rebuild_grants``
the care relationships' access-grant rows (migration 10); ``relabel`` the security labels
of sensitive data (``search/sensitivity.py``) after the value sets change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from server.auth.grants import SOURCE_TYPES, stored_reader
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.access_facts import access_facts
from server.search.registry import COLUMN_PARAMS, Registry, SearchParam
from server.store.sql.adapter import SqlReader, SqlRepository, write_index
from server.store.sql.dialect import Connection
from server.store.sql.grants import write_grants

INDEXED = "indexed"
PENDING = "pending"

_UPSERT = (
    "INSERT INTO search_param_state (url, digest, state, cursor) VALUES (?, ?, ?, NULL)"
    " ON CONFLICT (url) DO UPDATE SET digest = excluded.digest, state = excluded.state,"
    " cursor = NULL"
)


def _types(param: SearchParam) -> frozenset[str]:
    if {"Resource", "DomainResource"} & set(param.base):
        return RESOURCE_TYPES
    return frozenset(param.base) & RESOURCE_TYPES


def _states(conn: Connection) -> dict[str, tuple[str, str, int | None]]:
    rows = conn.execute("SELECT url, digest, state, cursor FROM search_param_state").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _stored_types(conn: Connection) -> frozenset[str]:
    return frozenset(row[0] for row in conn.execute("SELECT DISTINCT rtype FROM resource"))


def sync(conn: Connection, registry: Registry) -> frozenset[str]:
    """Record the registry's definitions inside the open write transaction of ``conn``; return
    the parameters that wait for a reindex (the caller marks them pending once committed)."""
    digests = registry.digests()
    states = _states(conn)
    changed = [url for url, digest in digests.items() if states.get(url, ("", "", 0))[0] != digest]
    columns = {p.url for p in registry.all() if p.code in COLUMN_PARAMS}
    pending = {
        url
        for url, state in states.items()
        if state[1] == PENDING and url in digests and url not in columns
    }
    if changed:
        stored = _stored_types(conn)
        for url in changed:
            param = registry.by_url(url)
            assert param is not None
            # _id and _lastUpdated are resource columns: nothing to rebuild
            state = PENDING if _types(param) & stored and url not in columns else INDEXED
            conn.execute(_UPSERT, (url, digests[url], state))
            if state == PENDING:
                pending.add(url)
            else:
                pending.discard(url)
    for url in set(states) - set(digests):
        conn.execute("DELETE FROM search_param_state WHERE url = ?", (url,))
    return frozenset(pending)


Progress = Callable[[int, int], None]  # (resources done, resources in all)


def reindex(
    repo: SqlRepository, registry: Registry, *, batch: int = 500, progress: Progress | None = None
) -> int:
    """Rebuild the index rows of every stored resource the pending parameters apply to; return
    how many resources were reindexed. Resumes from the cursor a previous run recorded."""
    dialect = repo.sql_dialect
    with dialect.reading() as conn:
        states = _states(conn)
    pending = [url for url, state in states.items() if state[1] == PENDING]
    params = [p for p in (registry.by_url(url) for url in pending) if p is not None]
    if not params:
        registry.set_pending(())
        return 0
    types = sorted(frozenset().union(*(_types(p) for p in params)))
    cursor = min((states[p.url][2] or 0) for p in params)
    marks = ", ".join("?" for _ in types)
    where = f"deleted = 0 AND rtype IN ({marks})"
    with dialect.reading() as conn:
        total = int(
            conn.execute(f"SELECT COUNT(*) FROM resource WHERE {where}", types).fetchone()[0]
        )
        done = int(
            conn.execute(
                f"SELECT COUNT(*) FROM resource WHERE {where} AND created_seq <= ?",
                [*types, cursor],
            ).fetchone()[0]
        )
    count = 0
    while True:
        with dialect.writing() as conn:
            rows: list[Any] = conn.execute(
                f"SELECT rtype, id, body, created_seq FROM resource WHERE {where}"
                f" AND created_seq > ? ORDER BY created_seq LIMIT {int(batch)}",
                [*types, cursor],
            ).fetchall()
            for type, id, body, seq in rows:
                dialect.clear_index(conn, type, id)
                write_index(conn, type, id, repo.rows.rows(type, orjson.loads(bytes(body))))
                cursor = int(seq)
            if rows:
                conn.executemany(
                    "UPDATE search_param_state SET cursor = ? WHERE url = ?",
                    [(cursor, p.url) for p in params],
                )
            else:
                conn.executemany(
                    "UPDATE search_param_state SET state = ?, cursor = NULL WHERE url = ?",
                    [(INDEXED, p.url) for p in params],
                )
        count += len(rows)
        done += len(rows)
        if progress is not None:
            progress(min(done, total), total)
        if not rows:
            break
    registry.set_pending(frozenset(registry.pending) - set(pending))
    return count


def fill_facts(repo: SqlRepository, *, batch: int = 500, progress: Progress | None = None) -> int:
    """Compute the access facts (``labels``, ``owners``) of every stored version that has none
    (versions stored before migration 7), from the index rows of its body, in batches of one
    transaction each (an interrupted run resumes: what it filled is no longer NULL); how many
    versions it filled."""
    dialect = repo.sql_dialect
    count = 0
    for table, key in (("resource", "created_seq"), ("resource_history", "seq")):
        with dialect.reading() as conn:
            total = int(
                conn.execute(f"SELECT COUNT(*) FROM {table} WHERE labels IS NULL").fetchone()[0]
            )
        done = 0
        while True:
            with dialect.writing() as conn:
                rows: list[Any] = conn.execute(
                    f"SELECT rtype, id, body, {key}, version FROM {table} WHERE labels IS NULL"
                    f" ORDER BY {key} LIMIT {int(batch)}"
                ).fetchall()
                for type, id, body, seq, version in rows:
                    if body is None:  # a deletion: the facts of the version it deleted
                        body = _deleted(conn, type, id, version)
                    index = (
                        None if body is None else repo.rows.rows(type, orjson.loads(bytes(body)))
                    )
                    labels, owners = access_facts(type, id, index)
                    conn.execute(
                        f"UPDATE {table} SET labels = ?, owners = ? WHERE {key} = ?",
                        (labels, owners, seq),
                    )
            done += len(rows)
            count += len(rows)
            if progress is not None and total:
                progress(min(done, total), total)
            if not rows:
                break
    return count


def rebuild_grants(
    repo: SqlRepository, *, batch: int = 500, progress: Progress | None = None
) -> int:
    """Rebuild the ``access_grant`` rows of every live relationship resource from its current
    version (``server/auth/grants.py``; a rule or a matrix that changed takes effect on the
    stored data), in batches of one transaction each, and drop the rows of resources no longer
    live; how many resources it rebuilt."""
    dialect = repo.sql_dialect
    types = sorted(SOURCE_TYPES)
    marks = ", ".join("?" for _ in types)
    where = f"deleted = 0 AND rtype IN ({marks})"
    with dialect.writing() as conn:
        conn.execute(
            "DELETE FROM access_grant WHERE NOT EXISTS (SELECT 1 FROM resource r"
            " WHERE r.rtype = access_grant.source_type AND r.id = access_grant.source_id"
            " AND r.deleted = 0)"
        )
    with dialect.reading() as conn:
        total = int(
            conn.execute(f"SELECT COUNT(*) FROM resource WHERE {where}", types).fetchone()[0]
        )
    cursor, count = 0, 0
    while True:
        with dialect.writing() as conn:
            rows: list[Any] = conn.execute(
                f"SELECT rtype, id, body, last_updated, created_seq FROM resource WHERE {where}"
                f" AND created_seq > ? ORDER BY created_seq LIMIT {int(batch)}",
                [*types, cursor],
            ).fetchall()
            read = stored_reader(SqlReader(conn, dialect.collate).read)
            for type, id, body, stamp, seq in rows:
                write_grants(conn, type, id, orjson.loads(bytes(body)), int(stamp), read)
                cursor = int(seq)
        count += len(rows)
        if progress is not None and total:
            progress(min(count, total), total)
        if not rows:
            break
    return count


def relabel(repo: SqlRepository, *, batch: int = 500, progress: Progress | None = None) -> int:
    """Label the current version of every stored resource anew (``search/sensitivity.py``:
    the plan's value sets may have changed): where its security labels differ from the stored
    access facts, its index rows and labels are rewritten (earlier versions keep theirs), in
    batches of one transaction each; how many resources changed."""
    dialect = repo.sql_dialect
    with dialect.reading() as conn:
        total = int(conn.execute("SELECT COUNT(*) FROM resource WHERE deleted = 0").fetchone()[0])
    cursor, done, changed = 0, 0, 0
    while True:
        with dialect.writing() as conn:
            rows: list[Any] = conn.execute(
                "SELECT rtype, id, body, labels, created_seq FROM resource WHERE deleted = 0"
                f" AND created_seq > ? ORDER BY created_seq LIMIT {int(batch)}",
                [cursor],
            ).fetchall()
            for type, id, body, stored, seq in rows:
                cursor = int(seq)
                index = repo.rows.rows(type, orjson.loads(bytes(body)))
                labels, owners = access_facts(type, id, index)
                if labels == (stored or ""):
                    continue
                dialect.clear_index(conn, type, id)
                write_index(conn, type, id, index)
                conn.execute(
                    "UPDATE resource SET labels = ?, owners = ? WHERE rtype = ? AND id = ?",
                    (labels, owners, type, id),
                )
                changed += 1
        done += len(rows)
        if progress is not None and total:
            progress(min(done, total), total)
        if not rows:
            break
    return changed


def _deleted(conn: Any, type: str, id: str, version: int) -> Any:
    """The body of the last version before deletion ``version`` of ``type/id`` (None: none)."""
    row = conn.execute(
        "SELECT body FROM resource_history WHERE rtype = ? AND id = ? AND version < ?"
        " AND body IS NOT NULL ORDER BY version DESC LIMIT 1",
        (type, id, version),
    ).fetchone()
    return None if row is None else row[0]
