"""Building searchset and history Bundles from stored versions, embedding the stored bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from server.fhir.instant import format_instant
from server.fhir.outcome import Issue, operation_outcome
from server.fhir.summary import shape
from server.ports import INCLUDE_HOPS, Included, Page, SearchPage, Version
from server.search.parse import SearchRequest, encode_cursor
from server.search.query import Cursor
from server.settings import Settings

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def resource_fragment(version: Version) -> orjson.Fragment:
    assert version.body is not None
    return orjson.Fragment(version.body)


def full_url(settings: Settings, version: Version) -> str:
    return f"{settings.fhir_base}/{version.type}/{version.id}"


def _link(relation: str, url: str) -> dict[str, str]:
    return {"relation": relation, "url": url}


ENVELOPE_BYTES = 4096
"""What a bounded response may add besides its entries (``base.ENTRY_BYTES`` each): the
Bundle's own members, its links and an outcome entry. A response bounded by
``max_response_bytes`` gives its resources that bound less this."""


def cut_page(bound: int) -> Issue:
    """The informational issue of a page that ended early at the response bound."""
    return Issue(
        "information",
        "informational",
        f"This page ends early: its resources reached the response bound of {bound} bytes. "
        "Follow the next link for the rest",
    )


def _outcome_entry(
    parsed: SearchRequest, page: SearchPage, included: Included, settings: Settings
) -> dict[str, Any] | None:
    issues = [
        Issue("warning", "not-supported", f"Search parameter '{name}' was ignored", name)
        for name in parsed.ignored
    ]
    if page.cut:
        issues.append(cut_page(settings.max_response_bytes))
    if included.cut == "count":
        issues.append(
            Issue(
                "warning",
                "too-costly",
                f"Included resources were cut at {settings.max_include}; ask for a smaller "
                "_count",
                "_include",
            )
        )
    elif included.cut == "bytes":
        issues.append(
            Issue(
                "warning",
                "too-costly",
                "Included resources were cut at the response bound of "
                f"{settings.max_response_bytes} bytes; read them on their own",
                "_include",
            )
        )
    if included.hop_limit:
        issues.append(
            Issue(
                "information",
                "informational",
                f":iterate follows references {INCLUDE_HOPS} hops deep; resources further "
                "along were not included",
                next(
                    "_revinclude:iterate" if i.reverse else "_include:iterate"
                    for i in parsed.includes
                    if i.iterate
                ),
            )
        )
    if not issues:
        return None
    return {"resource": operation_outcome(issues), "search": {"mode": "outcome"}}


def search_bundle(
    path: str,
    parsed: SearchRequest,
    page: SearchPage,
    included: Included,
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
    for mode, versions in (("match", page.items), ("include", included.versions)):
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
    outcome = _outcome_entry(parsed, page, included, settings)
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


def history_bundle(
    path: str, params: Sequence[tuple[str, str]], page: Page, settings: Settings
) -> bytes:
    """A page of history at ``path`` (``_history``, ``Patient/_history``, ...) asked with the
    query ``params``."""
    base = f"{settings.fhir_base}/{path}"
    applied = [(k, v) for k, v in params if k in ("_since", "_at", "_count")]
    query = f"?{urlencode(applied)}" if applied else ""
    links = [_link("self", base + query)]
    cursors = [v for k, v in params if k == "_cursor"]
    if cursors:
        links[0]["url"] = f"{base}?{urlencode([*applied, ('_cursor', cursors[-1])])}"
        links.append(_link("first", base + query))
    if page.has_more and page.items:
        after = urlencode([*applied, ("_cursor", str(page.items[-1].position))])
        links.append(_link("next", f"{base}?{after}"))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    entries = [history_entry(settings, v) for v in page.items]
    if entries:
        bundle["entry"] = entries
    return orjson.dumps(bundle)
