"""Bulk Data ``$export`` (FHIR Bulk Data Access 2.0): kick-off, status, files, cancel.

* **Kick-off** ``GET|POST [base]/$export``, ``[base]/Patient/$export``,
  ``[base]/Group/[id]/$export`` (parameters: ``server/bulk/request.py``) with
  ``Prefer: respond-async`` (without it: 400) and ``Accept: application/fhir+json`` (or none):
  ``202`` with ``Content-Location: [base]/_export/<job>``. ``429`` (``Retry-After``) when the
  caller already runs ``export_max_running`` exports. A Group the caller cannot see: 404; a
  deleted one: 410.
* **Status** ``GET [base]/_export/<job>``: ``202`` with ``X-Progress`` and ``Retry-After``
  while it runs (``429`` when polled sooner than ``export_min_poll_seconds`` after the last
  poll); ``200`` with the manifest (``application/json``; ``Expires``) once complete; the
  failure's status with its OperationOutcome if it failed. A job whose worker stopped is
  resumed by the worker process that answers the poll (``server/bulk/export.py``).
* **Files** ``GET [base]/_export/<job>/<Type>-<n>.ndjson``: ``application/fhir+ndjson``, to
  the same principal that started the export only (a job is the whole principal's:
  ``Principal.key``), with the same token rules as every request (``requiresAccessToken``:
  true when authentication is on).
* **Cancel** ``DELETE [base]/_export/<job>``: ``202``; a running export stops, and its files
  are removed (those of a finished one too); the status URL then answers 404.

Unknown, expired, cancelled or another caller's job: 404.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from server.api import http
from server.api import paths as _paths  # noqa: F401 - registers the fhirid path convertor
from server.api.async_jobs import RETRY_AFTER, progress
from server.api.context import (
    jobs_of,
    note,
    principal_of,
    repository,
    services_of,
    settings_of,
)
from server.bulk import files
from server.bulk.export import KIND, UNIT, ExportJob, ExportWork, snapshot
from server.bulk.request import Level, parameters_pairs, parse_export, readable_types
from server.errors import BadRequest, Gone, NotFound, TooManyRequests
from server.fhir.instant import format_http_date, now_us
from server.fhir.outcome import Issue, operation_outcome
from server.jobs import JobContext, JobRunner
from server.search.service import SearchService
from server.settings import Settings
from server.store.base import Job

router = APIRouter()

NDJSON = "application/fhir+ndjson"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {
        "description": "An OperationOutcome describing the error",
        "content": {"application/fhir+json": {}},
    }
}
_KICK_OFF: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: poll the Content-Location URL"},
    429: {"description": "Too many exports of this caller running (Retry-After)"},
    **_RESPONSES,
}


def _work(
    settings: Settings, service: SearchService, job: ExportJob, job_id: str
) -> ExportWork:
    folder = files.job_folder(files.export_root(settings), job_id)
    return ExportWork(job, folder, settings.export_file_bytes, service.context, service.indexer)


def _members(group: dict[str, Any], base: str) -> list[str]:
    """The Patient ids of a Group's active members."""
    ids: list[str] = []
    for member in group.get("member") or []:
        if member.get("inactive") is True:
            continue
        reference = str((member.get("entity") or {}).get("reference") or "")
        reference = reference.removeprefix(base + "/")
        kind, _, id = reference.partition("/")
        if kind == "Patient" and id:
            ids.append(id)
    return ids


async def _kick_off(request: Request, level: Level, group: str | None = None) -> Response:
    note(
        request, "export", "Group" if group else ("Patient" if level == "patient" else None), group
    )
    http.check_accept(request)
    settings = settings_of(request)
    if not http.prefer_async(request):
        raise BadRequest(
            "$export runs asynchronously: send it with 'Prefer: respond-async'",
            expression="Prefer",
        )
    posted = request.method == "POST"
    if posted:
        pairs = parameters_pairs(await http.read_json(request, settings, http.JSON_TYPES))
    else:
        pairs = list(request.query_params.multi_items())
    service = services_of(request).search
    explicit = any(name == "_type" for name, _ in pairs)
    export = parse_export(
        level,
        pairs,
        service.context,
        service.indexer,
        lenient=http.prefer_lenient(request),
        posted=posted,
    )
    repo = repository(request)
    export = replace(export, types=readable_types(repo.access, export.types, explicit))
    base = settings.fhir_base
    if group is not None:
        found = await repo.reading(lambda reader: reader.read("Group", group))
        if found is None:
            raise NotFound(f"Group/{group} is not known")
        if found.deleted or found.body is None:
            raise Gone(f"Group/{group} was deleted")
        members = _members(orjson.loads(found.body), base)
        if export.patients is not None:
            wanted = set(export.patients)
            members = [m for m in members if m in wanted]
        export = replace(export, patients=tuple(members), group=group)
    jobs = jobs_of(request)
    principal = repo.principal.key
    root = files.export_root(settings)
    running = await asyncio.to_thread(jobs.running, KIND, principal)
    if running >= settings.export_max_running:
        raise TooManyRequests(
            f"{running} exports of this client are running; wait for one to end",
            retry_after=30,
        )
    await asyncio.to_thread(files.sweep, root, lambda id: jobs.store.get(id) is not None)
    pinned = await request.app.state.runner.read(lambda reader: snapshot(reader, now_us()))
    url = base + request.url.path.removeprefix("/fhir")
    if request.url.query:
        url += "?" + request.url.query
    job = ExportJob(export, pinned, url, base, settings.auth == "smart", export.ignored)

    def work(context: JobContext) -> tuple[int, dict[str, Any]]:
        return _work(settings, service, job, context.id)(context)

    job_id = await asyncio.to_thread(
        jobs.submit, KIND, job.record(request.method), work, access=repo, unit=UNIT
    )
    status_url = f"{base}/_export/{job_id}"
    issues = [Issue("information", "informational", f"Accepted: poll {status_url}")]
    issues += [
        Issue("warning", "not-supported", f"Parameter '{name}' is not supported and was ignored")
        for name in export.ignored
    ]
    return Response(
        http.dump(operation_outcome(issues), http.pretty(request)),
        status_code=202,
        headers={"Content-Location": status_url},
        media_type=http.FHIR_JSON,
    )


async def _system(request: Request) -> Response:
    return await _kick_off(request, "system")


async def _patient(request: Request) -> Response:
    return await _kick_off(request, "patient")


async def _group(request: Request) -> Response:
    return await _kick_off(request, "group", request.path_params["id"])


for _path, _handler, _name in (
    ("/$export", _system, "exportSystem"),
    ("/Patient/$export", _patient, "exportPatient"),
    ("/Group/{id:fhirid}/$export", _group, "exportGroup"),
):
    for _method in ("GET", "POST"):
        router.add_api_route(
            _path,
            _handler,
            methods=[_method],
            operation_id=f"{_name}{_method.title()}",
            responses=_KICK_OFF,
            status_code=202,
            summary="Bulk Data export kick-off (Prefer: respond-async): NDJSON files per type",
        )


def _unknown(job_id: str) -> NotFound:
    return NotFound(f"No export {job_id} (never started, expired or cancelled)")


def _job(jobs: JobRunner, job_id: str, principal: str) -> Job:
    job = jobs.status(job_id, principal)
    if job is None or job.kind != KIND:
        raise _unknown(job_id)
    return job


def _throttle(request: Request, job_id: str, minimum: float) -> None:
    """429 when this job was polled less than ``minimum`` seconds ago (per process)."""
    if minimum <= 0:
        return
    polls: dict[str, float] | None = getattr(request.app.state, "export_polls", None)
    if polls is None:
        polls = request.app.state.export_polls = {}
    clock = time.monotonic()
    last = polls.get(job_id)
    if last is not None and clock - last < minimum:
        raise TooManyRequests(
            f"Polled too often: wait {minimum:g} s between polls", retry_after=int(minimum) + 1
        )
    polls[job_id] = clock
    if len(polls) > 10_000:  # forget the oldest half
        for key in sorted(polls, key=polls.__getitem__)[:5_000]:
            del polls[key]


@router.get(
    "/_export/{job:fhirid}",
    operation_id="exportStatus",
    response_description="Complete: the Bulk Data manifest",
    responses={
        202: {"description": "Still running (X-Progress, Retry-After)"},
        429: {"description": "Polled too often (Retry-After)"},
        **_RESPONSES,
    },
    summary="The status of a Bulk Data export: 202 while it runs, then its manifest",
)
async def status(request: Request) -> Response:
    job_id = request.path_params["job"]
    note(request, "export-status", None, job_id)
    settings = settings_of(request)
    jobs = jobs_of(request)
    principal = principal_of(request).key
    raw = await asyncio.to_thread(jobs.store.get, job_id)
    if raw is None or raw.principal != principal or raw.kind != KIND:
        raise _unknown(job_id)
    _throttle(request, job_id, settings.export_min_poll_seconds)
    if jobs.stale(raw):  # its worker died: this process takes it over
        job = ExportJob.from_record(raw.request)
        await asyncio.to_thread(
            jobs.resume,
            raw,
            _work(settings, services_of(request).search, job, job_id),
            access=repository(request),
        )
    found = await asyncio.to_thread(_job, jobs, job_id, principal)
    indent = http.pretty(request)
    if found.state == "running":
        text = progress(found)
        return Response(
            http.dump(operation_outcome([Issue("information", "informational", text)]), indent),
            status_code=202,
            headers={"X-Progress": text, "Retry-After": RETRY_AFTER},
            media_type=http.FHIR_JSON,
        )
    assert found.result is not None and found.status is not None
    if found.state == "failed":
        return Response(
            http.reformat(found.result, indent), status_code=found.status, media_type=http.FHIR_JSON
        )
    return Response(
        http.reformat(found.result, indent),
        headers={"Expires": format_http_date(found.expires)},
        media_type="application/json",
    )


@router.delete(
    "/_export/{job:fhirid}",
    operation_id="exportCancel",
    status_code=202,
    response_description="Cancelled (a running export stops) and its files removed",
    responses=_RESPONSES,
    summary="Cancel a Bulk Data export, or delete a finished one's files",
)
async def cancel(request: Request) -> Response:
    job_id = request.path_params["job"]
    note(request, "export-cancel", None, job_id)
    jobs = jobs_of(request)
    principal = principal_of(request).key
    await asyncio.to_thread(_job, jobs, job_id, principal)
    done = await asyncio.to_thread(jobs.cancel, job_id, principal)
    if done is None:
        raise _unknown(job_id)
    folder = files.job_folder(files.export_root(settings_of(request)), job_id)
    await asyncio.to_thread(files.remove, folder)
    text = f"Export {job_id} cancelled and its files removed"
    return Response(
        http.dump(operation_outcome([Issue("information", "informational", text)]), False),
        status_code=202,
        media_type=http.FHIR_JSON,
    )


@router.get(
    "/_export/{job:fhirid}/{file}",
    operation_id="exportFile",
    response_description="An NDJSON file of the export",
    responses=_RESPONSES,
    summary="One NDJSON file of a finished Bulk Data export (the principal that started it)",
)
async def download(request: Request) -> Response:
    job_id, name = request.path_params["job"], request.path_params["file"]
    note(request, "export-file", None, job_id)
    jobs = jobs_of(request)
    job = await asyncio.to_thread(_job, jobs, job_id, principal_of(request).key)
    if job.state != "completed" or not files.FILE_NAME.match(name):
        raise NotFound(f"Export {job_id} has no file {name[:80]}")
    path: Path = files.job_folder(files.export_root(settings_of(request)), job_id) / name
    if not path.is_file():
        raise NotFound(f"Export {job_id} has no file {name[:80]}")
    return FileResponse(path, media_type=NDJSON)
