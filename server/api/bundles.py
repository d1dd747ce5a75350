"""Batch and transaction Bundles (R4 http.html#transaction).

A transaction is prepared completely (every entry checked and validated) before anything is
written; then it runs in one ``Unit``: identities are resolved (new ids, ``ifNoneExist``
matches, conditional updates), references to ``fullUrl``s and conditional references are
rewritten, and the entries run in the spec's order (DELETE, POST, PUT/PATCH, GET). Any failure
rolls the whole unit back and answers one OperationOutcome. Batch entries run one by one, each
in its own unit, each with its own status.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from server.api.http import write_outcome
from server.api.interactions import (
    FhirRequest,
    FhirResponse,
    Prepared,
    parse_url,
    prepare,
    run_read,
    run_write,
)
from server.errors import (
    BadRequest,
    FhirError,
    InvalidResource,
    MultipleMatches,
    PreconditionFailed,
    Unprocessable,
)
from server.fhir.ids import new_id
from server.fhir.instant import format_instant
from server.fhir.outcome import Issue, operation_outcome
from server.fhir.validation import base_validator
from server.search.parse import SearchContext, parse_criteria_string
from server.search.service import search_service
from server.settings import Settings
from server.store.authorized import AuthorizedRepository
from server.store.base import Unit
from server.validating import chained, reader_lookup, validation_service

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_PATCH_TYPES = ("application/json-patch+json",)


@dataclass(slots=True)
class Entry:
    index: int
    full_url: str | None
    request: FhirRequest
    prepared: Prepared | None = None
    target: str | None = None  # "Type/id" this entry writes, once resolved
    existing: bool = False  # a POST whose ifNoneExist matched: no write


class EntryFailed(Exception):
    def __init__(self, index: int, error: FhirError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


def _status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _issues(error: FhirError, index: int) -> list[Issue]:
    """The issues of a failed entry, each located under ``Bundle.entry[index]``."""
    prefix = f"Bundle.entry[{index}]"
    out = []
    for issue in error.issues:
        expression = issue.expression
        if not expression:
            expression = prefix
        elif not expression.startswith("Bundle."):
            expression = f"{prefix}.{expression}"
        out.append(Issue(issue.severity, issue.code, issue.diagnostics, expression))
    return out


def _check_shell(body: Any) -> tuple[str, list[Any]]:
    """The Bundle's type and entries; the Bundle itself (without entry resources) validated."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest(
            "POST to the base URL needs a Bundle of type batch or transaction", expression="Bundle"
        )
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(
            f"Bundle.type must be batch or transaction, got '{str(kind)[:30]}'",
            expression="Bundle.type",
        )
    entries = body.get("entry", [])
    shell = dict(body)
    if "entry" in body and isinstance(entries, list):
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in entries
        ]
    issues = base_validator().validate(shell)
    if issues:
        raise InvalidResource(issues=issues)
    return kind, entries


def _patch_body(resource: Any, index: int) -> Any:
    """A JSON Patch carried in a Bundle entry: a Binary whose data is the patch document."""
    where = f"Bundle.entry[{index}].resource"
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise BadRequest(
            "A PATCH entry carries its JSON Patch as a Binary resource", expression=where
        )
    if resource.get("contentType") not in _PATCH_TYPES:
        raise BadRequest(
            "The PATCH Binary needs contentType application/json-patch+json",
            expression=f"{where}.contentType",
        )
    try:
        return orjson.loads(base64.b64decode(resource.get("data", ""), validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadRequest(
            "The PATCH Binary data is not a base64 JSON document", expression=f"{where}.data"
        ) from exc


def _entry(raw: Any, index: int, base: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        raise BadRequest("Every entry needs a request", expression=f"{where}.request")
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER or not isinstance(url, str):
        raise BadRequest(
            "Every entry needs request.method and request.url", expression=f"{where}.request"
        )
    if url.startswith(base + "/"):  # an absolute URL under this server's base
        url = url[len(base) + 1 :]
    freq = parse_url("GET" if method == "HEAD" else method, url)
    freq.if_match = request.get("ifMatch")
    freq.if_none_match = request.get("ifNoneMatch")
    freq.if_modified_since = request.get("ifModifiedSince")
    freq.if_none_exist = request.get("ifNoneExist")
    freq.expression = f"{where}.resource"
    if method == "PATCH":
        freq.body = _patch_body(raw.get("resource"), index)
    elif method in ("POST", "PUT"):
        freq.body = raw.get("resource")
    full_url = raw.get("fullUrl")
    return Entry(index, full_url if isinstance(full_url, str) else None, freq)


def _prepare(entry: Entry, settings: Settings) -> None:
    if entry.request.method != "GET":
        entry.prepared = prepare(entry.request, settings)


def _response_entry(response: FhirResponse, settings: Settings, prefer: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reply: dict[str, Any] = {"status": _status_line(response.status)}
    version = response.version
    if version is not None:
        if response.location:
            reply["location"] = f"{version.type}/{version.id}/_history/{version.version}"
        reply["etag"] = f'W/"{version.version}"'
        reply["lastModified"] = format_instant(version.last_updated)
        if version.body is not None and prefer != "minimal" and response.status != 304:
            out["fullUrl"] = f"{settings.fhir_base}/{version.type}/{version.id}"
            out["resource"] = orjson.Fragment(version.body)
    if response.payload is not None:
        out["resource"] = orjson.Fragment(response.payload)
    if response.outcome is not None:
        reply["outcome"] = response.outcome
    elif prefer == "OperationOutcome" and response.location and version is not None:
        reply["outcome"] = write_outcome(response)
    out["response"] = reply
    return out


async def _run_one(repo: AuthorizedRepository, entry: Entry, settings: Settings) -> FhirResponse:
    """One batch entry, in its own unit (writes) or on a reader (reads)."""
    prepared, request = entry.prepared, entry.request
    if prepared is None:
        return await repo.reading(lambda reader: run_read(reader, request, settings))
    return await repo.writing(lambda unit: run_write(unit, prepared, settings))


# -- batch -----------------------------------------------------------------------------------


async def _batch(
    raw_entries: list[Any], repo: AuthorizedRepository, settings: Settings, prefer: str
) -> bytes:
    results: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _entry(raw, index, settings.fhir_base)
            _prepare(entry, settings)
            response = await _run_one(repo, entry, settings)
            results.append(_response_entry(response, settings, prefer))
        except FhirError as error:
            results.append(
                {
                    "response": {
                        "status": _status_line(error.status),
                        "outcome": operation_outcome(_issues(error, index)),
                    }
                }
            )
    return orjson.dumps({"resourceType": "Bundle", "type": "batch-response", "entry": results})


# -- transaction -----------------------------------------------------------------------------


def _identity(entry: Entry) -> str | None:
    request = entry.request
    if request.method in ("PUT", "PATCH", "DELETE") and request.type and request.id:
        return f"{request.type}/{request.id}"
    return None


def _check_overlaps(entries: list[Entry]) -> None:
    seen: dict[str, int] = {}
    urls: dict[str, int] = {}
    for entry in entries:
        identity = entry.target or _identity(entry)
        if identity is not None:
            if identity in seen:
                raise EntryFailed(
                    entry.index,
                    BadRequest(
                        f"Entries {seen[identity]} and {entry.index} both change {identity}"
                    ),
                )
            seen[identity] = entry.index
        if entry.full_url and entry.request.method in ("POST", "PUT"):
            if entry.full_url in urls:
                raise EntryFailed(
                    entry.index,
                    BadRequest(
                        f"Entries {urls[entry.full_url]} and {entry.index} share fullUrl "
                        f"'{entry.full_url[:80]}'"
                    ),
                )
            urls[entry.full_url] = entry.index


def _resolve(unit: Unit, entries: list[Entry]) -> dict[str, str]:
    """Decide the id every POST/PUT entry will have; map each fullUrl to ``Type/id``."""
    mapping: dict[str, str] = {}
    for entry in entries:
        request, prepared = entry.request, entry.prepared
        if prepared is None or request.method not in ("POST", "PUT") or request.type is None:
            continue
        type = request.type
        try:
            if prepared.criteria is not None:
                matches = unit.match(prepared.criteria)
                if len(matches) > 1:
                    raise MultipleMatches(f"'{prepared.criteria.key}' matches several resources")
                if request.method == "POST":
                    entry.existing = bool(matches)
                    id = matches[0].id if matches else new_id()
                elif matches:
                    body_id = (prepared.resource or {}).get("id")
                    if body_id is not None and body_id != matches[0].id:
                        raise BadRequest(
                            f"The resource id '{body_id}' differs from the match",
                            expression=f"{type}.id",
                        )
                    id = matches[0].id
                else:
                    body_id = (prepared.resource or {}).get("id")
                    id = body_id if isinstance(body_id, str) else new_id()
            elif request.method == "POST":
                id = new_id()
            else:
                assert request.id is not None
                id = request.id
        except FhirError as error:
            raise EntryFailed(entry.index, error) from error
        entry.target = f"{type}/{id}"
        if entry.full_url:
            mapping[entry.full_url] = entry.target
    return mapping


def _rewrite(
    resource: dict[str, Any], mapping: dict[str, str], unit: Unit, index: int, ctx: SearchContext
) -> None:
    """Replace references to entries' fullUrls and conditional references, in place
    (iteratively: a resource may nest deeper than Python's recursion limit)."""
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, str):
                if key == "reference":
                    node[key] = _target(value, mapping, unit, index, ctx)
            elif isinstance(value, dict | list):
                stack.append(value)


def _target(
    reference: str, mapping: dict[str, str], unit: Unit, index: int, ctx: SearchContext
) -> str:
    if reference in mapping:
        return mapping[reference]
    if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
        raise EntryFailed(
            index, BadRequest(f"Reference '{reference[:80]}' names no entry of this transaction")
        )
    type, sep, query = reference.partition("?")
    if sep and "/" not in type and type:
        try:
            criteria = parse_criteria_string(type, query, ctx)
        except FhirError as error:
            raise EntryFailed(index, error) from error
        matches = unit.match(criteria)
        if not matches:
            raise EntryFailed(
                index, BadRequest(f"Conditional reference '{reference[:80]}' matches no resource")
            )
        if len(matches) > 1:
            raise EntryFailed(
                index,
                PreconditionFailed(
                    f"Conditional reference '{reference[:80]}' matches several resources"
                ),
            )
        return f"{type}/{matches[0].id}"
    return reference


def _run_entry(unit: Unit, entry: Entry, settings: Settings) -> FhirResponse:
    request, prepared = entry.request, entry.prepared
    if prepared is None:
        return run_read(unit, request, settings)
    if request.method in ("POST", "PUT") and entry.target is not None:
        assert prepared.resource is not None and request.type is not None
        id = entry.target.partition("/")[2]
        if entry.existing:
            current = unit.read(request.type, id)
            return FhirResponse(200, current, location=True)
        if request.method == "POST":
            result = unit.create(request.type, prepared.resource, id=id)
        else:
            result = unit.update(request.type, id, prepared.resource, if_match=prepared.if_match)
        return FhirResponse(201 if result.created else 200, result.version, location=True)
    return run_write(unit, prepared, settings)


def _run_transaction(unit: Unit, entries: list[Entry], settings: Settings) -> list[FhirResponse]:
    ordered = sorted(entries, key=lambda e: _ORDER[e.request.method])
    responses: dict[int, FhirResponse] = {}
    # DELETEs first: the identities and matches of the later entries see the data without them
    deletes = [e for e in ordered if e.request.method == "DELETE"]
    for entry in deletes:
        responses[entry.index] = _run_checked(unit, entry, settings)
    mapping = _resolve(unit, entries)
    _check_overlaps(entries)
    ctx = search_service(settings).context
    for entry in entries:
        prepared = entry.prepared
        if prepared is not None and prepared.resource is not None:
            _rewrite(prepared.resource, mapping, unit, entry.index, ctx)
    warnings = _validate_entries(unit, entries, settings)
    for entry in ordered[len(deletes) :]:
        responses[entry.index] = _run_checked(unit, entry, settings)
        responses[entry.index].warnings.extend(warnings.get(entry.index, []))
    return [responses[i] for i in range(len(entries))]


def _validate_entries(
    unit: Unit, entries: list[Entry], settings: Settings
) -> dict[int, list[Issue]]:
    """Profile validation of every resource the transaction writes, before any is written,
    references resolved to the transaction's own entries first; every entry's errors together
    fail the transaction (422). Returns each entry's warnings."""
    validation = validation_service(settings)
    written: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        prepared = entry.prepared
        if prepared is not None and prepared.resource is not None and entry.target is not None:
            type, _, id = entry.target.partition("/")
            written[(type, id)] = prepared.resource
    lookup = chained(lambda type, id: written.get((type, id)), reader_lookup(unit))
    errors: list[Issue] = []
    first: int | None = None
    warnings: dict[int, list[Issue]] = {}
    for entry in entries:
        prepared = entry.prepared
        if prepared is None or prepared.resource is None or entry.existing:
            continue
        root = f"Bundle.entry[{entry.index}].resource"
        findings = validation.check(prepared.resource, lookup=lookup, root=root)
        prepared.checked = True
        if findings.errors:
            errors += findings.issues
            first = entry.index if first is None else first
        elif findings.warnings:
            warnings[entry.index] = findings.warnings
    if first is not None:
        raise EntryFailed(first, Unprocessable(issues=errors))
    return warnings


def _run_checked(unit: Unit, entry: Entry, settings: Settings) -> FhirResponse:
    try:
        return _run_entry(unit, entry, settings)
    except FhirError as error:
        raise EntryFailed(entry.index, error) from error


async def _transaction(
    raw_entries: list[Any], repo: AuthorizedRepository, settings: Settings, prefer: str
) -> bytes:
    entries: list[Entry] = []
    issues: list[Issue] = []
    first_status: int | None = None
    for index, raw in enumerate(raw_entries):
        try:
            entry = _entry(raw, index, settings.fhir_base)
            _prepare(entry, settings)
            entries.append(entry)
        except FhirError as error:
            issues.extend(_issues(error, index))
            first_status = first_status or error.status
    if issues:
        assert first_status is not None
        raise _combined(first_status, issues)
    try:
        _check_overlaps(entries)
        responses = await repo.writing(lambda unit: _run_transaction(unit, entries, settings))
    except EntryFailed as failed:
        raise _combined(
            failed.error.status, _issues(failed.error, failed.index), failed.error.headers
        ) from failed
    results = [_response_entry(r, settings, prefer) for r in responses]
    return orjson.dumps(
        {"resourceType": "Bundle", "type": "transaction-response", "entry": results}
    )


def _combined(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> FhirError:
    error = FhirError(issues=issues, headers=headers)
    error.status = status  # type: ignore[misc]
    return error


async def process(
    body: Any, repo: AuthorizedRepository, settings: Settings, prefer: str = "representation"
) -> bytes:
    kind, entries = _check_shell(body)
    if kind == "batch":
        return await _batch(entries, repo, settings, prefer)
    return await _transaction(entries, repo, settings, prefer)
