"""Batch and transaction Bundles (R4 http.html#transaction): the HTTP side.

Each entry's request is parsed into a read, a ``Write`` or an operation call
(``operations.entry``: GET or POST ``[type]/[id]/$op``) here. Batch entries run one by one,
each write, and each operation call that writes, through the pipeline in its own unit, each
with its own status. A transaction prepares every entry before anything is written, then runs
in one unit through ``server/writes/transaction.py`` (identities, reference rewriting, the
spec's order; operation calls run after the writes, with the reads, in entry order); any
failure rolls the whole unit back and answers one OperationOutcome.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import orjson

from server.api import operations, patches
from server.api.bundle_build import ENVELOPE_BYTES
from server.api.http import write_outcome
from server.api.interactions import (
    FhirRequest,
    FhirResponse,
    parse_url,
    run_read,
    to_response,
    to_write,
)
from server.api.json_body import loads
from server.api.patches import PatchFormat
from server.api.writing import submit
from server.errors import (
    BadRequest,
    FhirError,
    InvalidResource,
    OutsideView,
    TooCostly,
    Unprocessable,
)
from server.fhir.base_validation import base_validator
from server.fhir.instant import format_instant
from server.fhir.outcome import Issue, information, operation_outcome
from server.fhir.urns import urn_problem
from server.ports import ENTRY_BYTES, Reader
from server.services import Services
from server.settings import Settings
from server.store.authorized import AuthorizedRepository, system_reader
from server.store.base import Event
from server.writes import transaction
from server.writes.pipeline import Pipeline
from server.writes.transaction import EntryFailed
from server.writes.write import Write, Written

Events = Callable[[str, str], list[Event]]  # a resource's outbox events

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_PATCH_TYPES: dict[str, PatchFormat] = {
    patches.JSON_PATCH: "json-patch",
    patches.MERGE_PATCH: "merge-patch",
}


@dataclass(slots=True)
class Parsed:
    index: int
    full_url: str | None
    request: FhirRequest


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


def _patch_body(resource: Any, index: int) -> tuple[PatchFormat, Any]:
    """The patch a Bundle entry carries, and its format: a FHIRPath Patch is the entry's
    Parameters resource; a JSON Patch or JSON Merge Patch is a Binary whose data is the
    document."""
    where = f"Bundle.entry[{index}].resource"
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return "fhirpath", resource
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise BadRequest(
            "A PATCH entry carries a FHIRPath Patch (Parameters), or a JSON Patch or JSON "
            "Merge Patch as a Binary resource",
            expression=where,
        )
    format = _PATCH_TYPES.get(str(resource.get("contentType")))
    if format is None:
        raise BadRequest(
            "The PATCH Binary needs contentType application/json-patch+json or "
            "application/merge-patch+json",
            expression=f"{where}.contentType",
        )
    try:
        data = base64.b64decode(resource.get("data", ""), validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadRequest("The PATCH Binary data is not base64", expression=f"{where}.data") from exc
    try:
        return format, loads(data)
    except BadRequest as exc:
        raise BadRequest(
            f"The PATCH Binary data is not a JSON document: {exc}", expression=f"{where}.data"
        ) from exc


def _entry(raw: Any, index: int, base: str) -> Parsed:
    where = f"Bundle.entry[{index}]"
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        raise BadRequest("Every entry needs a request", expression=f"{where}.request")
    method, url = request.get("method"), request.get("url")
    if method not in _METHODS or not isinstance(url, str):
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
        freq.patch_format, freq.body = _patch_body(raw.get("resource"), index)
    elif method in ("POST", "PUT"):
        freq.body = raw.get("resource")
    full_url = raw.get("fullUrl")
    if isinstance(full_url, str):
        problem = urn_problem(full_url)
        if problem is not None:
            raise BadRequest(f"fullUrl '{full_url[:80]}': {problem}", expression=f"{where}.fullUrl")
    return Parsed(index, full_url if isinstance(full_url, str) else None, freq)


class _Bound:
    """What is left of a batch or transaction response's byte bound as its entries run. A
    read runs with what is left as its own bound; past the bound it is refused
    (``too-costly``: ask for it on its own; in a transaction, nothing is written). A write's
    resource that does not fit is left out of its entry, which keeps its status and says so
    in an outcome. The first resource always fits, as a page's first match does."""

    def __init__(self, settings: Settings) -> None:
        self.bound = settings.max_response_bytes
        self.left = self.bound - ENVELOPE_BYTES
        self.empty = True
        self._reads: dict[int, int] = {}  # what each read entry took (a rerun takes it anew)

    def take(self, size: int) -> bool:
        if size and not self.empty and size + ENTRY_BYTES > self.left:
            return False
        self.left -= size + ENTRY_BYTES
        self.empty = self.empty and not size
        return True

    def read(self, index: int, run: Callable[[int], FhirResponse]) -> FhirResponse:
        """``run`` (entry ``index``'s read, given its byte bound), counted against what is
        left (a transaction run again after a conflict reads again: counted once)."""
        self.left += self._reads.pop(index, 0)
        if not self.empty and self.left <= 0:
            raise self.left_out()
        response = run(self.left + ENVELOPE_BYTES)
        size = _size(response)
        if not self.take(size):
            raise self.left_out()
        self._reads[index] = size + ENTRY_BYTES
        return response

    def left_out(self) -> FhirError:
        return TooCostly(
            f"The answer to this entry was left out: the response reached its bound of "
            f"{self.bound} bytes. Ask for it on its own"
        )


def _size(response: FhirResponse) -> int:
    if response.payload is not None:
        return len(response.payload)
    body = None if response.version is None else response.version.body
    return 0 if body is None else len(body)


def _response_entry(
    response: FhirResponse, settings: Settings, prefer: str, bound: _Bound | None
) -> dict[str, Any]:
    """The entry answering one request; ``bound``: a write's, whose resource is left out
    when it does not fit (a read was counted as it ran)."""
    out: dict[str, Any] = {}
    reply: dict[str, Any] = {"status": _status_line(response.status)}
    version = response.version
    if version is not None:
        if response.location:
            reply["location"] = f"{version.type}/{version.id}/_history/{version.version}"
        reply["etag"] = f'W/"{version.version}"'
        reply["lastModified"] = format_instant(version.last_updated)
        if version.body is not None and prefer != "minimal" and response.status != 304:
            if bound is None or bound.take(len(version.body)):
                out["fullUrl"] = f"{settings.fhir_base}/{version.type}/{version.id}"
                out["resource"] = orjson.Fragment(version.body)
            else:
                response.outcome = information(
                    "The resource was left out: the response reached its bound of "
                    f"{bound.bound} bytes. Read it at its location"
                )
    if response.payload is not None:
        if bound is None or bound.take(len(response.payload)):
            out["resource"] = orjson.Fragment(response.payload)
        else:  # an operation's answer after its writes: they stand
            response.outcome = information(
                "The operation's answer was left out: the response reached its bound of "
                f"{bound.bound} bytes"
            )
    if response.outcome is not None:
        reply["outcome"] = response.outcome
    elif prefer == "OperationOutcome" and response.location and version is not None:
        reply["outcome"] = write_outcome(response)
    out["response"] = reply
    return out


def _error_entry(error: FhirError, index: int) -> dict[str, Any]:
    return {
        "response": {
            "status": _status_line(error.status),
            "outcome": operation_outcome(_issues(error, index)),
        }
    }


def _answer(result: Written | FhirResponse) -> FhirResponse:
    return to_response(result) if isinstance(result, Written) else result


# -- batch -----------------------------------------------------------------------------------


async def _batch(
    raw_entries: list[Any],
    repo: AuthorizedRepository,
    pipeline: Pipeline,
    settings: Settings,
    services: Services,
    prefer: str,
    events: Events | None,
) -> bytes:
    results: list[dict[str, Any]] = []
    bound = _Bound(settings)
    for index, raw in enumerate(raw_entries):
        try:
            request = _entry(raw, index, settings.fhir_base).request
            if request.operation is not None:
                call = operations.entry(repo.access, settings, services, request)
                if call.writes:  # in a unit of its own, as a write entry
                    response = await repo.writing(partial(call.in_unit, pipeline=pipeline,
                                                          principal=repo.principal))
                    results.append(_response_entry(response, settings, prefer, bound))
                    continue
                read = _called(call, index, bound, events)
                response = await repo.reading(read)
                results.append(_response_entry(response, settings, prefer, None))
            elif request.method == "GET":
                read = _read(request, index, settings, services, bound)
                response = await repo.reading(read)
                results.append(_response_entry(response, settings, prefer, None))
            else:
                response = to_response(await submit(repo, pipeline, to_write(request)))
                results.append(_response_entry(response, settings, prefer, bound))
        except FhirError as error:
            results.append(_error_entry(error, index))
    return orjson.dumps({"resourceType": "Bundle", "type": "batch-response", "entry": results})


# -- transaction -----------------------------------------------------------------------------


def _read(
    request: FhirRequest, index: int, settings: Settings, services: Services, bound: _Bound
) -> Callable[[Reader], FhirResponse]:
    """How a GET entry that is not an operation runs on a reader: a read, search or
    history."""
    return lambda reader: bound.read(
        index, lambda left: run_read(reader, request, settings, services.search.context, left)
    )


def _called(
    call: operations.Invocation, index: int, bound: _Bound, events: Events | None
) -> Callable[[Reader], FhirResponse]:
    """How an operation entry that writes nothing runs on a reader, bounded as a read."""
    return lambda reader: bound.read(
        index, lambda left: call.read(system_reader(reader), reader, left, events)
    )


def _transaction_entry(
    parsed: Parsed,
    write: Write | None,
    pipeline: Pipeline,
    repo: AuthorizedRepository,
    settings: Settings,
    services: Services,
    bound: _Bound,
    events: Events | None,
) -> transaction.Entry:
    request = parsed.request
    entry = transaction.Entry(parsed.index, parsed.full_url)
    if request.operation is not None:
        call = operations.entry(repo.access, settings, services, request)
        if call.writes:
            principal = repo.principal
            entry.call = lambda writer: call.in_unit(writer.unit, pipeline, principal)
        else:
            entry.read = _called(call, parsed.index, bound, events)
        return entry
    if write is None:
        entry.read = _read(request, parsed.index, settings, services, bound)
        return entry
    entry.prepared = pipeline.prepare(write, None)
    entry.original = entry.prepared.resource
    return entry


async def _transaction(
    raw_entries: list[Any],
    repo: AuthorizedRepository,
    pipeline: Pipeline,
    settings: Settings,
    services: Services,
    prefer: str,
    events: Events | None,
) -> bytes:
    entries: list[transaction.Entry] = []
    unprepared: list[tuple[int, FhirError, Write | None]] = []
    bound = _Bound(settings)
    for index, raw in enumerate(raw_entries):
        write = None
        try:
            parsed = _entry(raw, index, settings.fhir_base)
            request = parsed.request
            reads = request.method == "GET" or request.operation is not None
            write = None if reads else to_write(request)
            entries.append(
                _transaction_entry(
                    parsed, write, pipeline, repo, settings, services, bound, events
                )
            )
        except FhirError as error:
            unprepared.append((index, error, write))
    if unprepared:
        raise await _entry_errors(unprepared, repo, pipeline)
    principal = repo.principal
    planned = None
    try:
        transaction.check_overlaps(entries)
        planned = await repo.checking(
            lambda reader, view: transaction.plan(pipeline, entries, reader, view)
        )
        results = await repo.writing(
            lambda unit: transaction.run(pipeline.in_unit(unit, principal), entries, planned)
        )
    except EntryFailed as failed:
        raise _combined(
            failed.error.status, _issues(failed.error, failed.index), failed.error.headers
        ) from failed
    except OutsideView as refused:  # judged on what the whole unit left: the entry named
        targets = planned.identities.targets if planned is not None else {}
        at = next((i for i, t in targets.items() if t == refused.target), None)
        if at is None:
            raise
        raise _combined(refused.status, _issues(refused, at), refused.headers) from refused
    out = [
        _response_entry(_answer(result), settings, prefer, None if entry.read else bound)
        for entry, result in zip(entries, results, strict=True)
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": out})


async def _entry_errors(
    failed: list[tuple[int, FhirError, Write | None]],
    repo: AuthorizedRepository,
    pipeline: Pipeline,
) -> FhirError:
    """One error for the entries that failed to prepare: each entry's issues in entry order,
    the status of the first; an entry whose base errors leave its structure readable also
    lists its profile issues, as a REST write does (one read of the store for them all)."""
    writes = [(i, error, write) for i, error, write in failed if write is not None]
    if any(isinstance(error, (InvalidResource, Unprocessable)) for _, error, _ in writes):

        def profiled(reader: Reader, view: Reader) -> dict[int, FhirError]:
            return {
                i: pipeline.with_profile_issues(write, error, reader, view)
                for i, error, write in writes
            }

        answered = await repo.checking(profiled)
        failed = [(i, answered.get(i, error), write) for i, error, write in failed]
    issues = [issue for i, error, _ in failed for issue in _issues(error, i)]
    return _combined(failed[0][1].status, issues)


def _combined(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> FhirError:
    error = FhirError(issues=issues, headers=headers)
    error.status = status  # type: ignore[misc]
    return error


async def process(
    body: Any,
    repo: AuthorizedRepository,
    pipeline: Pipeline,
    settings: Settings,
    services: Services,
    prefer: str = "representation",
    *,
    events: Events | None = None,
) -> bytes:
    """A batch or transaction Bundle's response; GET entries are read and operations run with
    ``services`` (the server's); ``events``: a resource's outbox events, for the operations
    entries may call."""
    kind, entries = _check_shell(body)
    if kind == "batch":
        return await _batch(entries, repo, pipeline, settings, services, prefer, events)
    return await _transaction(entries, repo, pipeline, settings, services, prefer, events)
