"""Notification Bundles (backport ``subscription-notification-r4``): a ``history`` Bundle whose
first entry is the ``subscription-status`` Parameters, then, per event and by the payload
content, the focus version (``id-only``: its URL; ``full-resource``: the resource too).

An event whose focus the subscriber may not see (as of sending) keeps its number and timestamp
and loses its focus and entry: the numbering stays gap-free and nothing is disclosed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from server.errors import FhirError
from server.fhir.instant import format_instant
from server.ports import Reader, Version
from server.store.base import Numbered

STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-notification-r4"
)


@dataclass(frozen=True, slots=True)
class Seen:
    """One numbered event as the subscriber may see it: ``version`` None when hidden."""

    event: Numbered
    version: Version | None


def status_parameters(
    base: str,
    id: str,
    topic: str,
    status: str,
    type: str,
    events_since_start: int,
    events: list[Seen],
    content: str,
    error: str | None = None,
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{id}"}},
    ]
    if content != "empty":
        params.append({"name": "topic", "valueCanonical": topic})
    params += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for seen in events:
        e = seen.event
        focus = seen.version is not None and content != "empty"
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(e.number)},
            *_event_parts(base, e.type, e.id, e.version, e.committed, focus),
        ]
        params.append({"name": "notification-event", "part": parts})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": params,
    }


@lru_cache(maxsize=8192)
def _event_parts(
    base: str, type: str, id: str, version: int, committed: int, focus: bool
) -> tuple[dict[str, Any], ...]:
    """An event's ``timestamp`` and ``focus`` parts, built once however many subscriptions'
    notifications carry it (shared objects: serialized, never changed)."""
    parts: list[dict[str, Any]] = [{"name": "timestamp", "valueInstant": format_instant(committed)}]
    if focus:
        reference = f"{base}/{type}/{id}/_history/{version}"
        parts.append({"name": "focus", "valueReference": {"reference": reference}})
    return tuple(parts)


@lru_cache(maxsize=8192)
def _entry(base: str, type: str, id: str, version: int, deleted: bool) -> dict[str, Any]:
    """An event's Bundle entry without its resource, built once per event (shared: copied
    before a resource is added, otherwise serialized as is)."""
    return {
        "fullUrl": f"{base}/{type}/{id}/_history/{version}",
        "request": {
            "method": "DELETE" if deleted else ("POST" if version == 1 else "PUT"),
            "url": f"{type}/{id}" if version > 1 or deleted else type,
        },
        "response": {"status": "204" if deleted else ("201" if version == 1 else "200")},
    }


def notification_bundle(
    base: str, parameters: dict[str, Any], events: list[Seen], content: str, now: int
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{_subscription(parameters)}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        for seen in events:
            version = seen.version
            if version is None:
                continue
            e = seen.event
            deleted = version.body is None
            entry = _entry(base, e.type, e.id, e.version, deleted)
            if content == "full-resource" and not deleted:
                entry = {**entry, "resource": orjson.loads(version.body or b"{}")}
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": format_instant(now),
        "entry": entries,
    }


def _subscription(parameters: dict[str, Any]) -> str:
    ref = str(parameters["parameter"][0]["valueReference"]["reference"])
    return "Subscription/" + ref.rsplit("/", 1)[-1]


def seen_through(reader: Reader, numbered: list[Numbered]) -> list[Seen]:
    """Each event's version as ``reader`` (the door, bound to whom it is for) shows it now: a
    version it may not read is hidden; a deletion is visible when the version it deleted
    is."""
    out = []
    for e in numbered:
        try:
            version = reader.vread(e.type, e.id, e.version)
            if version is not None and version.body is None:
                before = reader.vread(e.type, e.id, e.version - 1) if e.version > 1 else None
                version = version if before is not None else None
        except FhirError:  # refused outright (403): hidden
            version = None
        out.append(Seen(e, version))
    return out
