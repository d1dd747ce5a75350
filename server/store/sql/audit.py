"""The audit trail (migration 12): ``audit_event`` and its search references ``audit_ref``.

``audit_event`` is append-only: the server inserts rows and never updates or deletes one.
A row is one audited interaction: when (``recorded``, microseconds UTC), which interaction
(``interaction``: a FHIR restful-interaction code, ``operation``, ``transaction``…) and its
``action`` (C R U D E), the HTTP ``status`` answered, the principal (``client``,
``organization``, ``user_id``, ``purposes`` space-separated), the network ``address``, the
request (``method``, ``path``, ``query``, ``request_id``) and ``entities``: a JSON list of
``[type, id, version]`` the interaction returned or wrote. ``audit_ref`` holds what a row is
searched by: ``entity`` (Type/id), ``patient`` (Patient/id) and ``agent`` (the client id,
the organisation and user references).

``store`` inserts a batch of read records (``audit/trail.py``). ``write_records`` inserts the
records of a unit's writes from its outbox rows, in the write's own transaction
(``adapter.SqlUnit.finish``), with the origin the outbox row carries. Their ids are
time-ordered (``fhir.ids``, without the hyphens), so a unit's records land next to each
other in ``audit_event``'s id index and among each agent's ``audit_ref`` rows instead of on
a random page each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from server.fhir.ids import new_id
from server.store.base import AuditQuery, AuditRecord
from server.store.sql.dialect import Connection, Dialect

WRITE_ACTIONS = {"create": "C", "update": "U", "patch": "U", "delete": "D"}
_COLUMNS = (
    "id, recorded, interaction, action, status, client, organization, user_id, purposes,"
    " address, method, path, query, request_id, entities"
)


def _record(row: Any, patients: Sequence[str] = ()) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        recorded=int(row[1]),
        interaction=row[2],
        action=row[3],
        status=int(row[4]),
        client=row[5],
        organization=row[6],
        user=row[7],
        purposes=tuple((row[8] or "").split()),
        address=row[9],
        method=row[10],
        path=row[11],
        query=row[12],
        request_id=row[13],
        entities=tuple((e[0], e[1], e[2]) for e in orjson.loads(row[14])),
        patients=tuple(patients),
    )


class SqlAudit:
    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect

    def store(self, records: Sequence[AuditRecord]) -> None:
        """Insert ``records`` in one transaction."""
        if records:
            with self._dialect.writing() as conn:
                _insert(conn, records)

    def read(self, id: str) -> AuditRecord | None:
        with self._dialect.autocommit() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM audit_event WHERE id = ?", (id,)).fetchone()
            if row is None:
                return None
            return _with_patients(conn, [(0, row)])[0][1]

    def search(self, q: AuditQuery) -> list[tuple[int, AuditRecord]]:
        """The matching records, newest first (``q.count`` of them), each with its ``seq``."""
        where: list[str] = []
        args: list[Any] = []
        for kind, refs in q.refs:
            marks = ", ".join("?" for _ in refs)
            where.append(
                "e.id IN (SELECT event FROM audit_ref WHERE kind = ? AND ref IN (" + marks + "))"
            )
            args.extend([kind, *refs])
        for column, values in (("e.interaction", q.interactions),):
            if values:
                where.append(f"{column} IN ({', '.join('?' for _ in values)})")
                args.extend(values)
        if q.outcomes:
            ranges = {
                "0": "e.status < 400",
                "4": "(e.status >= 400 AND e.status < 500)",
                "8": "e.status >= 500",
            }
            where.append("(" + " OR ".join(ranges[o] for o in q.outcomes) + ")")
        for group in q.purposes:
            # purposes are stored space-separated: match whole codes
            where.append(
                "(" + " OR ".join("(' ' || e.purposes || ' ') LIKE ?" for _ in group) + ")"
            )
            args.extend(f"% {p} %" for p in group)
        if q.since is not None:
            where.append("e.recorded >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("e.recorded < ?")
            args.append(q.until)
        if q.before is not None:
            where.append("e.seq < ?")
            args.append(q.before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        cols = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
        with self._dialect.autocommit() as conn:
            rows = conn.execute(
                f"SELECT e.seq, {cols} FROM audit_event e{clause}"
                f" ORDER BY e.seq DESC LIMIT {int(q.count)}",
                args,
            ).fetchall()
            return _with_patients(conn, [(int(r[0]), r[1:]) for r in rows])


def _with_patients(conn: Connection, rows: list[tuple[int, Any]]) -> list[tuple[int, AuditRecord]]:
    if not rows:
        return []
    ids = [r[1][0] for r in rows]
    found: dict[str, list[str]] = {}
    for event, ref in conn.execute(
        "SELECT event, ref FROM audit_ref WHERE kind = 'patient' AND event IN ("
        + ", ".join("?" for _ in ids)
        + ") ORDER BY ref",
        ids,
    ).fetchall():
        found.setdefault(event, []).append(ref.split("/", 1)[1])
    return [(seq, _record(row, found.get(row[0], ()))) for seq, row in rows]


def _insert(conn: Connection, records: Sequence[AuditRecord]) -> None:
    if not records:
        return
    conn.executemany(
        f"INSERT INTO audit_event ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",
        [
            (
                r.id,
                r.recorded,
                r.interaction,
                r.action,
                r.status,
                r.client,
                r.organization,
                r.user,
                " ".join(r.purposes) or None,
                r.address,
                r.method,
                r.path,
                r.query,
                r.request_id,
                orjson.dumps([list(e) for e in r.entities]).decode(),
            )
            for r in records
        ],
    )
    refs = [ref for r in records for ref in r.refs()]
    if refs:
        conn.executemany("INSERT INTO audit_ref (event, kind, ref) VALUES (?, ?, ?)", refs)


def write_records(conn: Connection, events: Sequence[tuple[Any, ...]]) -> None:
    """The records of a unit's outbox rows (``outbox`` columns from ``rtype`` to
    ``request_id``), inserted in the unit's own transaction: a committed write always has its
    record, a rolled-back one none. Patients: the written Patient itself (the body is not
    read here)."""
    _insert(
        conn,
        [
            AuditRecord(
                id=new_id().replace("-", ""),
                recorded=int(e[5]),
                interaction=e[4],
                # an update that made the resource (no previous version) created it
                action="C" if e[3] is None and e[4] != "delete" else WRITE_ACTIONS.get(e[4], "U"),
                status=200,
                client=e[6],
                organization=e[7],
                user=e[8],
                request_id=e[9],
                entities=((e[0], e[1], int(e[2])),),
                patients=(e[1],) if e[0] == "Patient" else (),
            )
            for e in events
        ],
    )
