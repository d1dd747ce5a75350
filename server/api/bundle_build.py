"""Building searchset and history Bundles from stored versions, embedding the stored bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from server.fhir.instant import format_instant
from server.search.query import Criteria
from server.settings import Settings
from server.store.base import Page, Version

if TYPE_CHECKING:
    from server.api.interactions import FhirRequest

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def resource_fragment(version: Version) -> orjson.Fragment:
    assert version.body is not None
    return orjson.Fragment(version.body)


def full_url(settings: Settings, version: Version) -> str:
    return f"{settings.fhir_base}/{version.type}/{version.id}"


def _link(relation: str, url: str) -> dict[str, str]:
    return {"relation": relation, "url": url}


def _path(request: FhirRequest) -> str:
    parts = [p for p in (request.type, request.id) if p]
    if request.history:
        parts.append("_history")
    return "/".join(parts)


def search_bundle(
    request: FhirRequest, criteria: Criteria, count: int, page: Page | None, settings: Settings
) -> bytes:
    base = f"{settings.fhir_base}/{criteria.type}"
    applied = [*criteria.params, ("_count", str(count))]
    links = [_link("self", f"{base}?{urlencode(applied)}")]
    cursor = request.values("_cursor")
    if cursor:
        links[0]["url"] += "&" + urlencode({"_cursor": cursor[-1]})
        links.append(_link("first", f"{base}?{urlencode(applied)}"))
    entries: list[dict[str, Any]] = []
    if page is not None:
        for version in page.items:
            entries.append(
                {
                    "fullUrl": full_url(settings, version),
                    "resource": resource_fragment(version),
                    "search": {"mode": "match"},
                }
            )
        if page.has_more and page.items:
            after = urlencode([*applied, ("_cursor", str(page.items[-1].position))])
            links.append(_link("next", f"{base}?{after}"))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)


def history_entry(settings: Settings, version: Version) -> dict[str, Any]:
    url = version.type if version.method == "POST" else f"{version.type}/{version.id}"
    status = _STATUS[version.method]
    if version.method == "PUT" and version.version == 1:
        status = "201 Created"
    entry: dict[str, Any] = {"fullUrl": full_url(settings, version)}
    if not version.deleted:
        entry["resource"] = resource_fragment(version)
    entry["request"] = {"method": version.method, "url": url}
    entry["response"] = {
        "status": status,
        "etag": f'W/"{version.version}"',
        "lastModified": format_instant(version.last_updated),
    }
    return entry


def history_bundle(request: FhirRequest, page: Page, settings: Settings) -> bytes:
    path = _path(request)
    base = f"{settings.fhir_base}/{path}" if path else f"{settings.fhir_base}/_history"
    applied = [(k, v) for k, v in request.query if k in ("_since", "_at", "_count")]
    query = f"?{urlencode(applied)}" if applied else ""
    links = [_link("self", base + query)]
    if request.values("_cursor"):
        links[0]["url"] = (
            f"{base}?{urlencode([*applied, ('_cursor', request.values('_cursor')[-1])])}"
        )
        links.append(_link("first", base + query))
    if page.has_more and page.items:
        after = urlencode([*applied, ("_cursor", str(page.items[-1].position))])
        links.append(_link("next", f"{base}?{after}"))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    entries = [history_entry(settings, v) for v in page.items]
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)
