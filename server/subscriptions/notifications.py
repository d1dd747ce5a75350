"""Notification Bundles (backport ``subscription-notification-r4``): a ``history`` Bundle whose
first entry is the ``subscription-status`` Parameters, then, per event and by the payload
content, the focus version (``id-only``: its URL; ``full-resource``: the resource too).

An event whose focus the subscriber may not see (as of sending) keeps its number and timestamp
and loses its focus and entry: the numbering stays gap-free and nothing is disclosed.

What an event contributes is the same in every subscription's notification that carries it
(only its number differs), so it is serialised once per event and spliced into each Bundle as
JSON text (``orjson.Fragment``), however many subscriptions carry it.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any, NamedTuple

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


class Seen(NamedTuple):
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
    params: list[Any] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{id}"}},
    ]
    if content != "empty":
        params.append({"name": "topic", "valueCanonical": topic})
    params += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    shown = content != "empty"
    for e, version in events:
        focus = shown and version is not None
        parts = _event_parts(base, e.type, e.id, e.version, e.committed, focus)
        params.append(orjson.Fragment(b"%b%d%b" % (_EVENT_HEAD, e.number, parts)))
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": params,
    }


_EVENT_HEAD = b'{"name":"notification-event","part":[{"name":"event-number","valueString":"'


@lru_cache(maxsize=8192)
def _event_parts(base: str, type: str, id: str, version: int, committed: int, focus: bool) -> bytes:
    """The end of an event's ``notification-event`` parameter after its number: the
    ``timestamp`` part and the ``focus`` part (``focus``), serialised once however many
    subscriptions' notifications carry the event."""
    parts: list[dict[str, Any]] = [{"name": "timestamp", "valueInstant": format_instant(committed)}]
    if focus:
        reference = f"{base}/{type}/{id}/_history/{version}"
        parts.append({"name": "focus", "valueReference": {"reference": reference}})
    return b'"},' + orjson.dumps(parts)[1:] + b"}"


@lru_cache(maxsize=8192)
def _entry(base: str, type: str, id: str, version: int, deleted: bool) -> bytes:
    """An event's Bundle entry without its resource, serialised once per event and without
    its closing brace (a ``full-resource`` entry adds the stored resource's JSON after it)."""
    entry = {
        "fullUrl": f"{base}/{type}/{id}/_history/{version}",
        "request": {
            "method": "DELETE" if deleted else ("POST" if version == 1 else "PUT"),
            "url": f"{type}/{id}" if version > 1 or deleted else type,
        },
        "response": {"status": "204" if deleted else ("201" if version == 1 else "200")},
    }
    return orjson.dumps(entry)[:-1]


def notification_bundle(
    base: str, parameters: dict[str, Any], events: list[Seen], content: str, now: int
) -> dict[str, Any]:
    entries: list[Any] = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{_subscription(parameters)}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        full = content == "full-resource"
        for e, version in events:
            if version is None:
                continue
            body = version.body
            entry = _entry(base, e.type, e.id, e.version, body is None)
            if full and body is not None:
                # the version's stored JSON as it is
                entries.append(orjson.Fragment(b'%b,"resource":%b}' % (entry, body)))
            else:
                entries.append(orjson.Fragment(entry + b"}"))
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
