"""The ``access_grant`` rows of one source resource (``server/auth/grants.py``), replaced with
every version written: by the write unit (``adapter.py``), in the version's transaction, and
by ``calaim-fhir reindex`` (``reindex.py``)."""

from __future__ import annotations

from typing import Any

from server.auth.grants import SOURCE_TYPES, Read, grants
from server.store.sql.dialect import Connection

_CLEAR = "DELETE FROM access_grant WHERE source_type = ? AND source_id = ?"
_INSERT = (
    "INSERT INTO access_grant (source_type, source_id, member, organization, kind,"
    " period_start, period_end, scope_type, scope_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_grants(
    conn: Connection,
    type: str,
    id: str,
    resource: dict[str, Any] | None,
    stamp: int,
    read: Read,
    *,
    fresh: bool = False,
) -> None:
    """Replace the grant rows of ``type/id`` by those of ``resource`` (None: deleted);
    ``fresh``: it has none yet (a first version), nothing to delete."""
    if type not in SOURCE_TYPES:
        return
    if not fresh:
        conn.execute(_CLEAR, (type, id))
    if resource is None:
        return
    rows = grants(type, id, resource, stamp, read)
    if rows:
        conn.executemany(_INSERT, [(type, id, *row) for row in rows])
