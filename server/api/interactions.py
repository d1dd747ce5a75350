"""The FHIR REST interactions, independent of how the request arrived.

A ``FhirRequest`` comes from an HTTP request (``routes.py``) or from a Bundle entry
(``bundles.py``); both run the same code here, so every rule of R4 http.html lives in one
place. Each interaction is split in two:

- writes: ``to_write`` checks the request's URL, headers and method and turns it into the
  ``Write`` the pipeline (``server/writes/``) runs; ``to_response`` answers with its result;
- reads: ``run_read``, synchronous code against an authorized ``Reader`` that returns a
  ``FhirResponse``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from server.api import json_patch, patches
from server.api.bundle_build import ENVELOPE_BYTES, history_bundle, search_bundle
from server.api.patches import PatchFormat
from server.errors import (
    BadRequest,
    Gone,
    InvalidSearch,
    MethodNotAllowed,
    NotFound,
    UnknownType,
    UnknownVersion,
)
from server.fhir.instant import date_range, parse_http_date
from server.fhir.outcome import Issue, information
from server.fhir.resource_types import is_supported
from server.fhir.summary import SUMMARY_MODES, shape
from server.ports import HistoryQuery, Included, Reader, Version, entry_size
from server.search.parse import SearchContext, SearchRequest, parse_number, parse_search
from server.search.query import CompartmentClause, Criteria
from server.search.registry import patient_compartment
from server.settings import Settings
from server.writes.write import METHODS, Patch, Write, Written

# matched whole (fullmatch): ``$`` would also match before a final newline
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ETAG = re.compile(r'(?:W/)?"(\d+)"')


@dataclass(slots=True)
class FhirRequest:
    """One interaction: method, target (type/id/version or a compartment-less path), query."""

    method: str
    type: str | None = None
    id: str | None = None
    vid: str | None = None
    history: bool = False  # .../_history (without a version)
    search_post: bool = False  # [type]/_search
    compartment: tuple[str, str] | None = None  # Patient/123/[type]: (Patient, 123)
    operation: str | None = None  # an operation entry of a batch ($op, Type/$op, Type/id/$op)
    lenient: bool = False  # Prefer: handling=lenient
    query: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # parsed JSON, or None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_none_exist: str | None = None
    expression: str = ""  # where in the request errors point (a Bundle entry: its path)
    patch_format: PatchFormat = "json-patch"  # what a PATCH body is (``patches.py``)

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]


@dataclass(slots=True)
class FhirResponse:
    status: int
    version: Version | None = None  # the resource representation, when there is one
    payload: bytes | None = None  # any other body (Bundle, OperationOutcome)
    location: bool = False  # a Location header pointing at ``version``
    outcome: dict[str, Any] | None = None  # informational OperationOutcome (Prefer, deletes)
    warnings: list[Issue] = field(default_factory=list)  # what validation warned about


# -- request checks ---------------------------------------------------------------------------


_ENDPOINTS = frozenset({"metadata", "_history", "_search"})


def check_type(type: str) -> None:
    if type in _ENDPOINTS:
        raise MethodNotAllowed(f"This method is not allowed on /{type}")
    if not is_supported(type):
        raise UnknownType(f"Resource type '{type[:64]}' is not supported")


def check_id(id: str) -> None:
    if not _ID.fullmatch(id):
        raise BadRequest(f"'{id[:70]}' is not a valid resource id", expression="id")


def parse_etag(value: str, header: str) -> int:
    match = _ETAG.fullmatch(value.strip())
    if not match:
        raise BadRequest(f'{header} must be a version ETag such as W/"3"', expression=header)
    return int(match.group(1))


def parse_url(method: str, url: str) -> FhirRequest:
    """A request from a relative URL (``Patient/1/_history/2``, ``Patient?identifier=x``)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise BadRequest(
            f"Entry URLs must be relative or under this server's base, got '{url[:80]}'"
        )
    try:
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:  # pragma: no cover - parse_qsl is lenient without strict mode
        raise BadRequest(f"Malformed query: {exc}") from exc
    segments = [s for s in parts.path.strip("/").split("/") if s]
    request = FhirRequest(method, query=query)
    if not segments:
        return request
    if segments[-1].startswith("$") and len(segments) <= 3:
        return _operation_entry(request, segments, url)
    request.type = segments[0]
    rest = segments[1:]
    if rest == ["_history"]:
        request.history = True
    elif rest == ["_search"]:
        request.search_post = True
    elif len(rest) == 1:
        request.id = rest[0]
    elif len(rest) == 2 and rest[1] == "_history":
        request.id, request.history = rest[0], True
    elif len(rest) == 3 and rest[1] == "_history":
        request.id, request.vid = rest[0], rest[2]
    elif len(rest) == 2 and method == "GET":  # a compartment search: Patient/1/Task
        check_type(rest[1])
        request.compartment = (request.type, rest[0])
        request.type = rest[1]
    elif rest:
        raise BadRequest(f"Unsupported entry URL '{url[:80]}'")
    return request


def _operation_entry(request: FhirRequest, segments: list[str], url: str) -> FhirRequest:
    """An entry URL naming an operation (``api/operations.entry``): called by GET or POST."""
    if request.method not in ("GET", "POST"):
        raise MethodNotAllowed(
            f"An operation in a batch or transaction is called by GET or POST, got "
            f"{request.method} '{url[:80]}'"
        )
    *target, request.operation = segments
    if target:
        request.type = target[0]
    if len(target) == 2:
        request.id = target[1]
    return request


def to_write(request: FhirRequest) -> Write:
    """The write a request asks for: its URL, headers and method checked, nothing else (the
    pipeline checks the body: ``server/writes/``)."""
    method, type, expr = request.method, request.type, request.expression
    if type is None:
        raise MethodNotAllowed(f"{method} is not allowed on the base URL")
    check_type(type)
    if request.id is not None:
        check_id(request.id)
    if request.history or request.vid is not None or request.search_post:
        raise MethodNotAllowed(f"{method} is not allowed on this URL")
    if_match = None if request.if_match is None else parse_etag(request.if_match, "If-Match")
    interaction = METHODS.get(method)
    if interaction is None:
        raise MethodNotAllowed(f"Method {method} is not supported")
    write = Write(interaction, type, id=request.id, if_match=if_match, expression=expr)
    criteria = [(k, v) for k, v in request.query if k not in _NOT_CRITERIA]
    if criteria and request.id is None:
        write.condition = urlencode(criteria)
    if method == "POST":
        if request.id is not None:
            raise MethodNotAllowed("POST to a resource id is not allowed; use PUT")
        write.resource = request.body
        write.condition = _create_condition(write.condition, request.if_none_exist)
    elif write.id is None and write.condition is None:
        raise MethodNotAllowed(f"{method} needs a resource id or search criteria")
    elif method == "PUT":
        write.resource = request.body
    elif method == "PATCH":
        write.patch = _patch(request.patch_format, request.body, expr)
    return write


_NOT_CRITERIA = frozenset({"_format", "_pretty"})


def _patch(format: PatchFormat, body: Any, expression: str) -> Patch:
    if format == "fhirpath":
        return patches.fhirpath(body, expression)
    if format == "merge-patch":
        return patches.merge(body, expression)
    return json_patch.parse(body, f"{expression}.data" if expression else "")


def _create_condition(url: str | None, header: str | None) -> str | None:
    """The criteria of a conditional create: ``If-None-Exist``, or (an extension for clients
    such as fhirpy) the search parameters of the create URL, ``POST Patient?identifier=x``;
    both must then say the same."""
    if url is None or header is None:
        return header if url is None else url
    if sorted(parse_qsl(url, keep_blank_values=True)) != sorted(
        parse_qsl(header.lstrip("?"), keep_blank_values=True)
    ):
        raise BadRequest(
            "If-None-Exist and the search parameters of the URL ask for different criteria",
            expression="If-None-Exist",
        )
    return header


def to_response(written: Written) -> FhirResponse:
    """The answer to a write the pipeline ran."""
    write, result = written.write, written.result
    type = write.type
    if write.interaction == "delete":
        if written.criteria is not None:
            text = f"Deleted {written.deleted} {type} resource(s) matching '{written.criteria.key}'"
            return FhirResponse(200, outcome=information(text))
        if result is not None and result.changed:
            return FhirResponse(200, outcome=information(f"Deleted {type}/{write.id}"))
        return FhirResponse(
            200, outcome=information(f"{type}/{write.id} was not present; nothing deleted")
        )
    assert result is not None
    return FhirResponse(
        201 if result.created else 200, result.version, location=True, warnings=written.warnings
    )


# -- reads ------------------------------------------------------------------------------------


def run_read(
    reader: Reader,
    request: FhirRequest,
    settings: Settings,
    context: SearchContext,
    bound: int | None = None,
) -> FhirResponse:
    """read, vread, history and search (parsed with ``context``, the server's);
    conditional read headers on read and vread. A page
    (search, history) holds at most ``bound`` bytes (default: the
    ``max_response_bytes`` setting), or one resource."""
    type = request.type
    bound = settings.max_response_bytes if bound is None else bound
    if type is None:
        if request.history:
            return FhirResponse(200, payload=history(reader, request, settings, context, bound))
        return FhirResponse(200, payload=search(reader, request, settings, context, bound))
    check_type(type)
    if request.id is not None:
        check_id(request.id)
    if request.history:
        return FhirResponse(200, payload=history(reader, request, settings, context, bound))
    if request.id is None or request.compartment is not None:
        return FhirResponse(200, payload=search(reader, request, settings, context, bound))
    if request.vid is not None:
        vid = parse_number(request.vid)
        if vid is None:
            raise UnknownVersion(
                f"Version '{request.vid[:20]}' of {type}/{request.id} is not known"
            )
        found = reader.vread(type, request.id, vid)
        if found is None:
            raise UnknownVersion(f"Version {request.vid} of {type}/{request.id} is not known")
    else:
        current = reader.read(type, request.id)
        if current is None:
            raise NotFound(f"{type}/{request.id} is not known")
        found = current
    if found.deleted:
        raise Gone(
            f"{type}/{request.id} was deleted (version {found.version})",
            headers={"ETag": f'W/"{found.version}"'},
        )
    if _not_modified(found, request):
        return FhirResponse(304, found)
    summary, elements = read_shape(request.query)
    if summary is None and elements is None:
        return FhirResponse(200, found)
    assert found.body is not None
    return FhirResponse(200, found, payload=shape(found.body, summary, elements))


_READ_PARAMS = frozenset({"_format", "_pretty", "_summary", "_elements"})


def read_shape(query: list[tuple[str, str]]) -> tuple[str | None, tuple[str, ...] | None]:
    """``_summary``/``_elements`` of a read of one resource (``count`` makes no sense there);
    any other parameter but ``_format`` and ``_pretty`` is 400."""
    summary = elements = None
    for name, value in query:
        if name not in _READ_PARAMS:
            raise InvalidSearch(
                "Read takes no parameters besides _summary, _elements, _format and _pretty",
                expression=name[:60],
            )
        if name == "_summary":
            if value not in SUMMARY_MODES:
                raise InvalidSearch(
                    f"_summary must be one of true, text, data, false on a read, got "
                    f"'{value[:20]}'",
                    expression="_summary",
                )
            summary = value
        elif name == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
    return summary, elements


def _not_modified(found: Version, request: FhirRequest) -> bool:
    if request.if_none_match is not None:
        tags = [t.strip() for t in request.if_none_match.split(",")]
        if "*" in tags:
            return True
        for tag in tags:
            match = _ETAG.fullmatch(tag)
            if match and int(match.group(1)) == found.version:
                return True
        return False
    if request.if_modified_since is not None:
        since = parse_http_date(request.if_modified_since)
        if since is not None:
            # HTTP dates have whole seconds: compare the version's stamp truncated to seconds
            return found.last_updated // 1_000_000 * 1_000_000 <= since
    return False


def _history_page(request: FhirRequest, settings: Settings) -> tuple[int, int | None]:
    counts = request.values("_count")
    count = settings.default_page_size
    if counts:
        parsed = parse_number(counts[-1])
        if parsed is None:
            raise InvalidSearch(
                f"_count must be a non-negative integer, got '{counts[-1][:20]}'",
                expression="_count",
            )
        count = min(parsed, settings.max_page_size)
    cursors = request.values("_cursor")
    cursor = None
    if cursors:
        cursor = parse_number(cursors[-1])
        if cursor is None:
            raise InvalidSearch(
                "_cursor is not valid; follow the Bundle's links", expression="_cursor"
            )
    return count, cursor


def history(
    reader: Reader, request: FhirRequest, settings: Settings, context: SearchContext, bound: int
) -> bytes:
    count, cursor = _history_page(request, settings)
    since = at = None
    zone = context.zone  # a zoneless value: as in every search
    for name, value in request.query:
        if name == "_since":
            span = date_range(value, zone)
            if span is None or "T" not in value:
                raise InvalidSearch(
                    f"_since must be an instant, got '{value[:40]}'", expression="_since"
                )
            since = span[0]
        elif name == "_at":
            at = date_range(value, zone)
            if at is None:
                raise InvalidSearch(f"_at must be a date, got '{value[:40]}'", expression="_at")
        elif name not in ("_count", "_cursor", "_format", "_pretty"):
            raise InvalidSearch(f"Unknown history parameter '{name[:60]}'", expression=name[:60])
    if request.type is not None and request.id is not None:
        if reader.read(request.type, request.id) is None:
            raise NotFound(f"{request.type}/{request.id} is not known")
    room = bound - ENVELOPE_BYTES
    page = reader.history(
        HistoryQuery(request.type, request.id, since, at, count, cursor, max_bytes=room)
    )
    path = "/".join([p for p in (request.type, request.id) if p] + ["_history"])
    return history_bundle(path, request.query, page, settings)


def _compartment(request: FhirRequest, criteria: Criteria) -> Criteria:
    """``Patient/123/Task?...``: the criteria limited to the compartment's members."""
    assert request.compartment is not None and criteria.type is not None
    ctype, cid = request.compartment
    check_type(ctype)
    check_id(cid)
    params = patient_compartment().get(criteria.type)
    if ctype != "Patient" or not params:
        raise InvalidSearch(
            f"{criteria.type} is not part of the {ctype} compartment", expression=criteria.type
        )
    clause = CompartmentClause(ctype, cid, ((criteria.type, params),))
    return Criteria(criteria.type, criteria.params, (clause, *criteria.clauses), criteria.types)


def run_search(
    reader: Reader, parsed: SearchRequest, settings: Settings, path: str, bound: int
) -> bytes:
    """One page of a parsed search and its included resources as a searchset Bundle, of at
    most ``bound`` bytes (or one match): a page whose included resources do not fit is
    shortened, as long as it has more than one match."""
    query = parsed.query
    if parsed.summary == "count":
        query = replace(query, count=0, total="accurate")
    elif query.count == 0 and query.total in ("none", "auto"):  # a page of nothing asks how many
        query = replace(query, total="accurate")
    room = bound - ENVELOPE_BYTES
    query = replace(query, max_bytes=room)
    page = reader.search(query)
    included = Included([])
    if parsed.includes and page.items and parsed.summary != "count":
        while True:
            used = sum(entry_size(v) for v in page.items)
            included = reader.include(
                page.items, parsed.includes, settings.max_include, max_bytes=room - used
            )
            if included.cut != "bytes" or len(page.items) == 1:
                break
            shorter = replace(query, count=len(page.items) // 2, total="none")
            page = replace(reader.search(shorter), total=page.total, cut=True)
    return search_bundle(path, parsed, page, included, settings)


def search(
    reader: Reader, request: FhirRequest, settings: Settings, context: SearchContext, bound: int
) -> bytes:
    parsed = parse_search(request.type, request.query, context, lenient=request.lenient)
    path = request.type or ""
    if request.compartment is not None:
        parsed = replace(
            parsed,
            query=replace(parsed.query, criteria=_compartment(request, parsed.query.criteria)),
        )
        path = f"{request.compartment[0]}/{request.compartment[1]}/{request.type}"
    return run_search(reader, parsed, settings, path, bound)
