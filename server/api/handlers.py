"""Every error becomes an OperationOutcome with the right status, in this one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.api.http import FHIR_JSON, dump, pretty
from server.errors import FhirError, MethodNotAllowed, NotFound
from server.fhir.outcome import Issue, operation_outcome

logger = logging.getLogger("calaim_fhir.errors")


def _response(
    request: Request, status: int, issues: list[Issue], headers: dict[str, str] | None = None
) -> Response:
    indent = False
    try:
        indent = pretty(request)
    except Exception:  # noqa: BLE001 - a malformed query string must not hide the error
        indent = False
    return Response(
        dump(operation_outcome(issues), indent),
        status_code=status,
        headers=headers,
        media_type=FHIR_JSON,
    )


async def fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _response(request, exc.status, exc.issues, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: FhirError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on this URL")
        return _response(
            request,
            405,
            error.issues,
            {"Allow": exc.headers.get("Allow", "")} if exc.headers else None,
        )
    if exc.status_code == 404:
        error = NotFound("No FHIR endpoint at this URL")
    else:
        error = FhirError(str(exc.detail))
        error.status = exc.status_code  # type: ignore[misc]
    return _response(request, error.status, error.issues)


async def validation_error(request: Request, exc: Exception) -> Response:
    return _response(request, 400, [Issue("error", "invalid", "The request is malformed")])


async def unexpected(request: Request, exc: Exception) -> Response:
    # the exception type and place only: messages and locals may carry resource content
    request_id = request.scope.get("calaim.request_id", "")
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
    logger.error("unhandled %s at %s (request %s)", type(exc).__name__, where, request_id)
    return _response(
        request,
        500,
        [Issue("fatal", "exception", f"Internal server error (request id {request_id})")],
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, fhir_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
