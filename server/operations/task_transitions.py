"""``Task/[id]/$transitions``: the audit trail of a Task's status, from its history.

Each version whose ``status`` or ``businessStatus`` differs from the version before it (and the
first version) is one ``transition``: the statuses before and after, the version, when it was
committed, the server's ``lastModified`` stamp, the ``statusReason`` and ``businessStatus`` it
carried, and who made it — the client, organisation and user recorded with the version's outbox
event (``server/store/sql/outbox.py``). Outbox events are pruned after
``outbox_retention_days``; a transition whose event is gone says so (``recorded`` false) and
keeps everything the history holds. A deleted Task answers 410 (its history stays in
``_history``).
"""

from __future__ import annotations

from typing import Any

import orjson

from server.fhir.instant import format_instant
from server.operations.call import Call, Implementation
from server.ports import HistoryQuery, Version
from server.store.base import Event

_PAGE = 500


def _versions(call: Call) -> list[Version]:
    """Every version of the instance, oldest first."""
    assert call.id is not None
    versions: list[Version] = []
    before: int | None = None
    while True:
        page = call.reader.history(
            HistoryQuery(type=call.type, id=call.id, count=_PAGE, before_seq=before)
        )
        versions.extend(page.items)
        if not page.has_more or not page.items:
            break
        before = page.items[-1].position
    versions.sort(key=lambda v: v.version)
    return versions


def _part(name: str, kind: str, value: Any) -> dict[str, Any]:
    return {"name": name, f"value{kind}": value}


def _transition(
    before: dict[str, Any] | None,
    after: dict[str, Any],
    version: Version,
    event: Event | None,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if before is not None and before.get("status"):
        parts.append(_part("from", "Code", before["status"]))
    parts.append(_part("to", "Code", after.get("status")))
    parts.append(_part("version", "Id", str(version.version)))
    parts.append(_part("when", "Instant", format_instant(version.last_updated)))
    if after.get("lastModified"):
        parts.append(_part("lastModified", "DateTime", after["lastModified"]))
    for element in ("businessStatus", "statusReason"):
        if isinstance(after.get(element), dict):
            parts.append(_part(element, "CodeableConcept", after[element]))
    parts.append(_part("recorded", "Boolean", event is not None))
    if event is not None:
        origin = event.origin
        if origin.client:
            parts.append(_part("client", "String", origin.client))
        if origin.organization:
            parts.append(_part("organization", "Reference", {"reference": origin.organization}))
        if origin.user:
            parts.append(_part("user", "Reference", {"reference": origin.user}))
        if origin.request_id:
            parts.append(_part("request", "String", origin.request_id))
    return {"name": "transition", "part": parts}


def run(call: Call) -> dict[str, Any]:
    assert call.id is not None
    events = {e.version: e for e in call.events(call.type, call.id)} if call.events else {}
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for version in _versions(call):
        if version.body is None:  # deleted, then created again: a new start
            previous = None
            continue
        current = orjson.loads(version.body)
        moved = (
            previous is None
            or previous.get("status") != current.get("status")
            or previous.get("businessStatus") != current.get("businessStatus")
        )
        if moved:
            out.append(_transition(previous, current, version, events.get(version.version)))
        previous = current
    return {"resourceType": "Parameters", "parameter": out}


IMPLEMENTATION = Implementation(
    "Task-transitions",
    run,
)
