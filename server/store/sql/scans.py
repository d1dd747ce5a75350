"""Statements of the bulk reads that are not searches: a batch of members' resources, and every
resource of a type in pages.

``patient_resources``: the resources whose reference index rows (``search_reference``) point
to one of a batch of Patients, by the parameters the caller names per type. The lookup starts
from the ``search_reference_target`` index ``(target_type, target_id, param)``, keeps each
(patient, resource) pair once (a resource found through two parameters, ``subject`` and
``patient``, is one row), and joins the live current row of the ``resource`` table for the
body. Rows come grouped by patient: ordered by patient id, type and id, bytewise on both
databases (``collate``).

``scan``: the live resources of one type in creation order, keyset-paged on ``created_seq``
(the ``resource_type_order`` index), as search pages are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from server.store.sql.query import COLUMNS, Frag

_COLUMNS = ", ".join(f"r.{column.strip()}" for column in COLUMNS.split(","))


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def patient_resources_statement(
    patient_ids: Sequence[str],
    params: Mapping[str, Sequence[str]],
    *,
    collate: str = "",
    narrowing: Frag = ("1 = 1", ()),
) -> tuple[str, list[Any]] | None:
    """``(patient id, *COLUMNS)`` rows of the live resources pointing to the patients that
    satisfy ``narrowing`` (a condition on ``r``: the caller's view); None when nothing can
    match (no patients, no parameters)."""
    ids = sorted(set(patient_ids))
    wanted = {type: sorted(set(names)) for type, names in params.items() if names}
    if not ids or not wanted:
        return None
    alternatives: list[str] = []
    args: list[Any] = ["Patient", *ids]
    for type, names in sorted(wanted.items()):
        alternatives.append(f"(s.rtype = ? AND s.param IN ({_marks(len(names))}))")
        args.extend((type, *names))
    sql = (
        f"SELECT m.target_id, {_COLUMNS} FROM"
        " (SELECT DISTINCT s.target_id, s.rtype, s.id FROM search_reference s"
        f" WHERE s.target_type = ? AND s.target_id IN ({_marks(len(ids))})"
        f" AND ({' OR '.join(alternatives)})) m"
        " JOIN resource r ON r.rtype = m.rtype AND r.id = m.id"
        f" WHERE r.deleted = 0 AND {narrowing[0]}"
        f" ORDER BY m.target_id{collate}, r.rtype{collate}, r.id{collate}"
    )
    return sql, [*args, *narrowing[1]]


def scan_statement(
    type: str, after: int | None, limit: int, narrowing: Frag = ("1 = 1", ())
) -> tuple[str, list[Any]]:
    """``COLUMNS`` rows of at most ``limit`` live resources of ``type`` after ``after`` that
    satisfy ``narrowing`` (a condition on ``r``)."""
    args: list[Any] = [type]
    keyset = ""
    if after is not None:
        keyset = " AND r.created_seq > ?"
        args.append(after)
    sql = (
        f"SELECT {_COLUMNS} FROM resource r WHERE r.rtype = ? AND r.deleted = 0{keyset}"
        f" AND {narrowing[0]} ORDER BY r.created_seq LIMIT {max(int(limit), 0)}"
    )
    return sql, [*args, *narrowing[1]]
