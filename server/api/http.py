"""HTTP details of the FHIR API: content negotiation, bodies, Prefer, and rendering responses."""

from __future__ import annotations

import zlib
from http import HTTPStatus
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from server.api import patches
from server.api.context import note
from server.api.interactions import FhirRequest, FhirResponse
from server.api.json_body import loads
from server.errors import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from server.fhir.instant import format_http_date
from server.fhir.outcome import Issue, operation_outcome
from server.settings import Settings

FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
PATCH_TYPES = patches.MEDIA_TYPES
FORM_TYPE = "application/x-www-form-urlencoded"
_ACCEPTABLE = JSON_TYPES | {"*/*", "application/*"}
_FORMATS = JSON_TYPES | {"json"}
PREFER_RETURN = frozenset({"minimal", "representation", "OperationOutcome"})

# what a browser app may send and read cross-origin, when CORS is configured (cors_origins)
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_REQUEST_HEADERS = (
    "Accept", "Authorization", "Content-Type", "If-Match", "If-Modified-Since",
    "If-None-Exist", "If-None-Match", "Prefer", "X-Purpose-Of-Use", "X-Request-Id",
)  # fmt: skip
CORS_RESPONSE_HEADERS = (
    "Content-Location", "ETag", "Last-Modified", "Location", "Retry-After", "X-Request-Id",
)  # fmt: skip


def _media(value: str) -> tuple[str, dict[str, str]]:
    main, *params = value.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"')
    return main.strip().lower(), parsed


def _fhir_version_ok(params: dict[str, str]) -> bool:
    version = params.get("fhirversion")
    return version is None or version in ("4.0", "4.0.1")


_NO_QUERY = QueryParams()


def query_params(request: Request) -> QueryParams:
    """The request's query parameters, parsed only when there is a query string (a read by
    id, a create and an update have none)."""
    return request.query_params if request.scope.get("query_string") else _NO_QUERY


def check_accept(request: Request) -> None:
    """406 unless the client accepts FHIR JSON (``_format`` overrides ``Accept``)."""
    fmt = query_params(request).get("_format")
    if fmt is not None:
        media, params = _media(fmt)
        if media in _FORMATS and _fhir_version_ok(params):
            return
        raise NotAcceptable(
            f"_format '{fmt[:40]}' is not supported; this server speaks JSON only",
            expression="_format",
        )
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media, params = _media(part)
        if params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        if media in _ACCEPTABLE and _fhir_version_ok(params):
            return
    raise NotAcceptable(
        f"None of the media types in Accept ('{accept[:80]}') can be produced; "
        "this server produces application/fhir+json"
    )


def pretty(request: Request) -> bool:
    return query_params(request).get("_pretty") == "true"


def _prefer(request: Request, key: str) -> str | None:
    """The value of preference ``key`` ("" for a bare token such as ``respond-async``); the
    header may repeat, and one header may list several preferences (RFC 7240: commas)."""
    for part in request.headers.getlist("prefer"):
        for item in part.replace(",", ";").split(";"):
            name, _, value = item.strip().partition("=")
            if name.strip().lower() == key:
                return value.strip().strip('"')
    return None


def prefer_lenient(request: Request) -> bool:
    """``Prefer: handling=lenient``: unknown search parameters are ignored (and reported)."""
    return _prefer(request, "handling") == "lenient"


def prefer_async(request: Request) -> bool:
    """``Prefer: respond-async``: answer 202 at once and the result at a status URL."""
    return _prefer(request, "respond-async") is not None


def status_line(code: int) -> str:
    """A Bundle entry's ``response.status``: the code and its reason phrase."""
    return f"{code} {HTTPStatus(code).phrase}"


def prefer_return(request: Request) -> str:
    value = _prefer(request, "return")
    return value if value in PREFER_RETURN else "representation"


async def read_body(request: Request, settings: Settings, allowed: frozenset[str]) -> bytes:
    """The request body, if its media type is one of ``allowed`` and it is under the limit."""
    limit = settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes")
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media, params = _media(content_type)
        if media not in allowed or not _fhir_version_ok(params):
            raise UnsupportedMediaType(
                f"Content-Type '{content_type[:80]}' is not supported here; use "
                + " or ".join(sorted(allowed))
            )
    elif allowed is PATCH_TYPES:
        raise UnsupportedMediaType(
            "PATCH needs a Content-Type: application/json-patch+json (JSON Patch), "
            "application/fhir+json (FHIRPath Patch) or application/merge-patch+json"
        )
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding '{coding[:40]}' is not supported; send gzip or none"
        )
    gunzip = _Gunzip() if coding != "identity" else None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if gunzip is not None:
                chunk = gunzip.feed(chunk, limit - size)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:  # the client left, or its body timed out (serving.py)
        raise RequestTimeout("The request body did not arrive whole") from exc
    if gunzip is not None and not gunzip.complete:
        raise BadRequest("The gzip-encoded body ends before its end")
    body = b"".join(chunks)
    if not body.strip():
        raise BadRequest("The request body is empty")
    return body


class _Gunzip:
    """A gzip request body decompressed as it arrives (members one after another), never more
    than one byte past what the limit leaves: a small bomb never expands in memory."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(wbits=31)

    @property
    def complete(self) -> bool:
        return self._member.eof

    def feed(self, chunk: bytes, room: int) -> bytes:
        out = b""
        try:
            while chunk:
                out += self._member.decompress(chunk, max(room - len(out), 0) + 1)
                if len(out) > room:
                    break
                if self._member.unconsumed_tail:
                    chunk = self._member.unconsumed_tail
                elif self._member.eof and self._member.unused_data:  # the next member
                    chunk = self._member.unused_data
                    self._member = zlib.decompressobj(wbits=31)
                else:
                    chunk = b""
        except zlib.error as exc:
            raise BadRequest("The body is not valid gzip") from exc
        return out


async def read_json(request: Request, settings: Settings, allowed: frozenset[str]) -> Any:
    return loads(await read_body(request, settings, allowed))


async def read_patch(request: Request, settings: Settings, freq: FhirRequest) -> None:
    """A PATCH body into ``freq``: the document and its format (``patches.format_of``)."""
    freq.body = await read_json(request, settings, PATCH_TYPES)
    media, _ = _media(request.headers.get("content-type", ""))
    freq.patch_format = patches.format_of(media, freq.body)


_CONDITIONAL_HEADERS = {
    b"if-match": "if_match",
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"if-none-exist": "if_none_exist",
}


def fhir_request(
    request: Request, method: str, interaction: str, *, history: bool = False
) -> FhirRequest:
    """The interaction an HTTP request asks for, its target from the route's path parameters
    (``type``, ``id``, ``vid``). Noted for the request log at once, so even a request that fails
    on its body is logged with what it was."""
    path = request.path_params
    type, id = path.get("type"), path.get("id")
    note(request, interaction, type, id)
    conditional: dict[str, str] = {}
    for name, value in request.scope["headers"]:  # one pass over the raw headers
        if name in _CONDITIONAL_HEADERS:
            conditional[_CONDITIONAL_HEADERS[name]] = value.decode("latin-1")
    return FhirRequest(
        method,
        query=query_params(request).multi_items(),
        if_match=conditional.get("if_match"),
        if_none_match=conditional.get("if_none_match"),
        if_modified_since=conditional.get("if_modified_since"),
        if_none_exist=conditional.get("if_none_exist"),
        type=type,
        id=id,
        vid=path.get("vid"),
        history=history,
    )


def dump(payload: Any, indent: bool) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_INDENT_2 if indent else 0)


def reformat(body: bytes, indent: bool) -> bytes:
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2) if indent else body


def write_outcome(response: FhirResponse) -> dict[str, Any]:
    """The OperationOutcome of a successful write: what was written, then any warnings."""
    version = response.version
    assert version is not None
    verb = "Created" if response.status == 201 else "Updated"
    done = Issue(
        "information",
        "informational",
        f"{verb} {version.type}/{version.id} version {version.version}",
    )
    return operation_outcome([done, *response.warnings])


def render(
    response: FhirResponse, settings: Settings, *, indent: bool, prefer: str = "representation"
) -> Response:
    """The HTTP response of an interaction (``prefer`` applies to writes only)."""
    headers: dict[str, str] = {}
    version = response.version
    if version is not None:
        headers["ETag"] = f'W/"{version.version}"'
        headers["Last-Modified"] = format_http_date(version.last_updated)
        if response.location:
            headers["Location"] = (
                f"{settings.fhir_base}/{version.type}/{version.id}/_history/{version.version}"
            )
    if response.status == 304:
        return Response(status_code=304, headers=headers)
    body: bytes | None
    if response.payload is not None:
        body = reformat(response.payload, indent)
    elif prefer == "minimal":
        body = None
    elif prefer == "OperationOutcome" and response.location:
        body = dump(write_outcome(response), indent)
    elif version is not None and version.body is not None:
        body = reformat(version.body, indent)
    elif response.outcome is not None:
        body = dump(response.outcome, indent)
    else:
        body = None
    if body is None:
        return Response(status_code=response.status, headers=headers)
    return Response(body, status_code=response.status, headers=headers, media_type=FHIR_JSON)
