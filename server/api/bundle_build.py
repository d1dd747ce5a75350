"""Building searchset and history Bundles from stored versions, embedding the stored bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from server.fhir.instant import format_instant
from server.fhir.outcome import Issue, operation_outcome
from server.fhir.summary import shape
from server.search.parse import SearchRequest, encode_cursor
from server.search.query import Cursor
from server.settings import Settings
from server.store.base import Page, SearchPage, Version

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


def _outcome_entry(parsed: SearchRequest, truncated: bool, limit: int) -> dict[str, Any] | None:
    issues = [
        Issue("warning", "not-supported", f"Search parameter '{name}' was ignored", name)
        for name in parsed.ignored
    ]
    if truncated:
        issues.append(
            Issue(
                "warning",
                "too-costly",
                f"Included resources were cut at {limit}; ask for a smaller _count",
                "_include",
            )
        )
    if not issues:
        return None
    return {"resource": operation_outcome(issues), "search": {"mode": "outcome"}}


def search_bundle(
    path: str,
    parsed: SearchRequest,
    page: SearchPage,
    included: list[Version],
    truncated: bool,
    settings: Settings,
) -> bytes:
    """A searchset Bundle: matches, included resources, an outcome entry for what was ignored
    or cut, and links (``self`` with the parameters applied, ``first``, ``previous``, ``next``)."""
    base = f"{settings.fhir_base}/{path}" if path else settings.fhir_base
    applied = list(parsed.applied)

    def url(cursor: Cursor | None) -> str:
        query = [*applied, ("_cursor", encode_cursor(cursor))] if cursor else applied
        return f"{base}?{urlencode(query)}" if query else base

    cursor = parsed.query.cursor
    links = [_link("self", url(cursor))]
    if cursor is not None:
        links.append(_link("first", url(None)))
    if page.previous is not None:
        links.append(_link("previous", url(page.previous)))
    if page.next is not None:
        links.append(_link("next", url(page.next)))
    summary, elements = parsed.summary, parsed.elements
    shaping = (summary is not None and summary != "false") or elements is not None
    entries: list[dict[str, Any]] = []
    for mode, versions in (("match", page.items), ("include", included)):
        for version in versions:
            assert version.body is not None
            body = shape(version.body, summary, elements) if shaping else version.body
            entries.append(
                {
                    "fullUrl": full_url(settings, version),
                    "resource": orjson.Fragment(body),
                    "search": {"mode": mode},
                }
            )
    outcome = _outcome_entry(parsed, truncated, settings.max_include)
    if outcome is not None:
        entries.append(outcome)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
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
