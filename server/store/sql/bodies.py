"""Bounded reads: resource bodies fetched only for the rows a response keeps.

A read bounded by bytes (a search page, a history page, included resources) selects its rows
with ``query.lean_columns``: a body longer than the row's share of the bound (``inline``)
comes back as NULL, and every row ends with its body's length. The reader decides by those
lengths which rows fit (``base.fitting``); ``fill`` then reads the bodies left out of the
rows it keeps, by version from ``resource_history`` (a stored version never changes, so the
body is the one the row named even if the resource was written since). So a page of twenty
9 MB resources holds one of them, not twenty, whatever the database's client buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from server.ports import Version
from server.store.sql.dialect import Connection

_KEYS_PER_STATEMENT = 200


def inline(max_bytes: int | None, rows: int) -> int | None:
    """The largest body a statement of at most ``rows`` rows returns with its row, so that all
    of them together stay within ``max_bytes``; None: unbounded (every body inline)."""
    if max_bytes is None:
        return None
    return max(max_bytes, 0) // max(rows, 1)


def size(row: Sequence[Any]) -> int:
    """The body length ending a ``lean_columns`` row (0 for a deleted version)."""
    return int(row[-1] or 0)


def fill(conn: Connection, versions: list[Version], inline: int | None) -> list[Version]:
    """``versions`` with the bodies a lean statement (``inline`` given) left out read back
    (deleted versions have none)."""
    if inline is None:
        return versions
    missing = [(v.type, v.id, v.version) for v in versions if v.body is None and not v.deleted]
    if not missing:
        return versions
    found: dict[tuple[str, str, int], bytes] = {}
    for start in range(0, len(missing), _KEYS_PER_STATEMENT):
        chunk = missing[start : start + _KEYS_PER_STATEMENT]
        where = " OR ".join("(rtype = ? AND id = ? AND version = ?)" for _ in chunk)
        args = [value for key in chunk for value in key]
        for row in conn.execute(
            f"SELECT rtype, id, version, body FROM resource_history WHERE {where}", args
        ).fetchall():
            found[(row[0], row[1], int(row[2]))] = bytes(row[3])
    return [
        v
        if v.body is not None or v.deleted
        else replace(v, body=found.get((v.type, v.id, v.version)))
        for v in versions
    ]
