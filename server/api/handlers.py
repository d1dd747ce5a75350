"""Every error becomes an OperationOutcome with the right status, in this one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.api.http import FHIR_JSON, dump, pretty
from server.errors import FhirError, MethodNotAllowed, NotFound
from server.fhir.outcome import Issue, operation_outcome
from server.logs import error_place

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


def log_unexpected(request: Request, exc: BaseException) -> str:
    """Log an exception no handler took: its class, place and the request id only (its message,
    arguments and locals may carry resource content). Returns the request id."""
    request_id = str(request.scope.get("calaim.request_id", ""))
    logger.error(
        "unhandled %s at %s (request %s)", type(exc).__name__, error_place(exc), request_id
    )
    return request_id


async def unexpected(request: Request, exc: Exception) -> Response:
    request_id = log_unexpected(request, exc)
    return _response(
        request,
        500,
        [Issue("fatal", "exception", f"Internal server error (request id {request_id})")],
    )


async def answer_unexpected(
    scope: Scope, receive: Receive, send: Send, exc: Exception, *, answered: bool
) -> None:
    """Answer an exception no handler took (500, ``unexpected``), or only log it when the
    response had begun (``answered``: too late for an answer, the response is cut short)."""
    request = Request(scope, receive, send)
    if answered:
        log_unexpected(request, exc)
        return
    response = await unexpected(request, exc)
    await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, fhir_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
