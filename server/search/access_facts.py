"""What the door knows of a stored version without reading its body: its access facts.

Written with every version, from the index rows the write computes anyway (never by parsing the
stored JSON again): ``labels``, the ``meta.security`` codings (``_security`` token rows) as
``system|code``, and ``owners``, the Patient compartments the version belongs to (a reference
row under one of its type's Patient compartment parameters, R4 CompartmentDefinition
``patient``; a Patient belongs to its own); a deletion carries the facts of the version it
deletes, so the door can still tell who could see what is gone. Each is stored as one text
column of the ``resource`` and ``resource_history`` rows, values sorted and separated by
newlines; the door turns them into ``server.auth.policy.Facts`` for its per-resource
decision.
"""

from __future__ import annotations

from functools import cache, lru_cache

from server.search.registry import patient_compartment
from server.search.rows import IndexRows

SECURITY = "_security"
SEPARATOR = "\n"


@cache
def _compartment_params(type: str) -> frozenset[str]:
    return frozenset(patient_compartment().get(type, ()))


def access_facts(type: str, id: str, rows: IndexRows | None) -> tuple[str, str]:
    """``(labels, owners)`` of a version of ``type/id`` with these index rows (None: deleted)."""
    if rows is None:
        return "", ""
    labels = sorted({f"{row[2]}|{row[3]}" for row in rows.token if row[0] == SECURITY})
    params = _compartment_params(type)
    owners = {
        f"Patient/{row[3]}" for row in rows.reference if row[2] == "Patient" and row[0] in params
    }
    if type == "Patient":
        owners.add(f"Patient/{id}")
    return SEPARATOR.join(labels), SEPARATOR.join(sorted(owners))


def index_member(labels: str | None, owners: str | None) -> str | None:
    """The member written into every search index row of a version (``store/sql``): the id
    of the one Patient compartment its facts name, when it carries no security label; None
    when it belongs to several members or none, carries a label, or its facts are unknown
    (a narrowed search then tests the resource row itself)."""
    if labels or not owners or not owners.startswith("Patient/") or SEPARATOR in owners:
        return None
    return owners[len("Patient/") :]


@lru_cache(maxsize=4096)
def split(text: str | None) -> frozenset[str]:
    """The values of a stored facts column (the same few texts come back row after row)."""
    return frozenset(text.split(SEPARATOR)) if text else frozenset()
