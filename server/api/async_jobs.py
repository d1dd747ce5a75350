"""The status URL of an asynchronous request (R4 ``async.html``): ``[base]/_async/{job}``.

A request sent with ``Prefer: respond-async`` to a long-running operation is answered
``202 Accepted`` with ``Content-Location: [base]/_async/{job}`` (``operations.py``). Then:

* ``GET`` while it runs: ``202`` with ``X-Progress`` ("3 of 10 members", or "3 done" when the
  total is not known yet) and ``Retry-After``, and an informational OperationOutcome;
* ``GET`` once it ended: ``200`` with a ``batch-response`` Bundle of one entry: the result
  resource with ``response.status`` "200 OK", or, if it failed, ``response.status`` with the
  failure's status and ``response.outcome`` its OperationOutcome; ``Expires`` says when the
  result will be purged;
* ``DELETE``: cancels a running job, or deletes the result of an ended one (``202``);
* unknown, expired, cancelled or another caller's job: ``404``. A job belongs to the whole
  principal that submitted it (``Principal.key``), not only to its client id; its stored
  result is checked through the door again when fetched: a Reference or a resource the caller
  may no longer see is left out (``operations/output.py``, ``visible_only``).

The job's state is in the database (``server/jobs.py``), so any worker process answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api import http
from server.api import paths as _paths  # noqa: F401 - registers the fhirid path convertor
from server.api.context import jobs_of, note, principal_of, repository, settings_of
from server.errors import NotFound
from server.fhir.instant import format_http_date
from server.fhir.outcome import information
from server.operations.output import visible_only
from server.store.base import Job

router = APIRouter()

RETRY_AFTER = "2"  # seconds a client should wait before polling again
_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {
        "description": "An OperationOutcome describing the error",
        "content": {"application/fhir+json": {}},
    }
}


def progress(job: Job) -> str:
    """The ``X-Progress`` text of a running job."""
    if job.total is None:
        return f"{job.done} done"
    return f"{job.done} of {job.total} {job.unit}"


def result_bundle(job: Job, result: bytes | None = None) -> bytes:
    """The ``batch-response`` Bundle of an ended job (its stored JSON spliced in as is, or
    ``result``: what of it the caller may see now)."""
    assert job.result is not None and job.status is not None
    status = http.status_line(job.status).encode()
    if job.state == "completed":
        body = job.result if result is None else result
        entry = b'{"resource":' + body + b',"response":{"status":"' + status + b'"}}'
    else:
        entry = b'{"response":{"status":"' + status + b'","outcome":' + job.result + b"}}"
    return b'{"resourceType":"Bundle","type":"batch-response","entry":[' + entry + b"]}"


def _unknown(job_id: str) -> NotFound:
    return NotFound(f"No asynchronous request {job_id} (never started, expired or cancelled)")


@router.get(
    "/_async/{job:fhirid}",
    operation_id="asyncStatus",
    response_description="Ended: a batch-response Bundle with the result or the failure",
    responses={202: {"description": "Still running (X-Progress, Retry-After)"}, **_RESPONSES},
    summary="The status of an asynchronous request: 202 while it runs, then its result",
)
async def status(request: Request) -> Response:
    job_id = request.path_params["job"]
    note(request, "async-status", None, job_id)
    http.check_accept(request)
    indent = http.pretty(request)
    job = await asyncio.to_thread(jobs_of(request).status, job_id, principal_of(request).key)
    if job is None:
        raise _unknown(job_id)
    if job.state == "running":
        text = progress(job)
        outcome = information(f"The request is still running: {text}")
        return Response(
            http.dump(outcome, indent),
            status_code=202,
            headers={"X-Progress": text, "Retry-After": RETRY_AFTER},
            media_type=http.FHIR_JSON,
        )
    result = None
    repo = repository(request)
    if job.state == "completed" and job.result is not None and not repo.access.unrestricted:
        stored, base = orjson.loads(job.result), settings_of(request).fhir_base
        seen = await repo.reading(lambda reader: visible_only(stored, reader.visible, base))
        result = orjson.dumps(seen)
    return Response(
        http.reformat(result_bundle(job, result), indent),
        headers={"Expires": format_http_date(job.expires)},
        media_type=http.FHIR_JSON,
    )


@router.delete(
    "/_async/{job:fhirid}",
    operation_id="asyncCancel",
    status_code=202,
    response_description="Cancelled, or its result deleted",
    responses=_RESPONSES,
    summary="Cancel an asynchronous request, or delete its result",
)
async def cancel(request: Request) -> Response:
    job_id = request.path_params["job"]
    note(request, "async-cancel", None, job_id)
    http.check_accept(request)
    done = await asyncio.to_thread(jobs_of(request).cancel, job_id, principal_of(request).key)
    if done is None:
        raise _unknown(job_id)
    if done == "cancelled":
        text = f"Request {job_id} cancelled: it stops at its next check and its result is discarded"
    else:
        text = f"The result of request {job_id} is deleted"
    return Response(
        http.dump(information(text), http.pretty(request)),
        status_code=202,
        media_type=http.FHIR_JSON,
    )
