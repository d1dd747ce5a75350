"""A shortcut for the three most frequent interactions: read, create and update by id.

FastAPI's routing and dependency machinery costs more per request than reading a resource
from SQLite. For ``GET|PUT /fhir/{type}/{id}`` and ``POST /fhir/{type}`` the edge's last step
(``route``, run by ``edge.py``) calls the very endpoint functions of ``routes.py`` (same
parsing, same rules) and answers errors through the same ``handlers``; every other request
continues to the FastAPI application, where
the same endpoints are registered (and described in the OpenAPI document).

Every other request runs guarded: an exception no handler took is answered here (500,
an OperationOutcome with the request id; logged with its class and place only) instead of
leaving the application, where the server would log its traceback and message, which may
carry request content.

It also refuses (400) a path with a control character before any route sees it: a route's
pattern ends in ``$``, which matches before a final newline, so ``/fhir/Patient/q1%0A`` would
otherwise reach ``Patient/q1``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import handlers, paths, routes
from server.errors import BadRequest, FhirError

Endpoint = Callable[[Request], Awaitable[Response]]

_TYPE = re.compile(paths.TypeConvertor.regex)
_ID = re.compile(paths.IdConvertor.regex)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PREFIX = "/fhir/"
_INSTANCE: dict[str, Endpoint] = {"GET": routes.read, "PUT": routes.update}
_TYPE_LEVEL: dict[str, Endpoint] = {"POST": routes.create}


def _route(method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    if not path.startswith(_PREFIX):
        return None
    segments = path[len(_PREFIX) :].split("/")
    if segments[0] == "AuditEvent":  # a view of the audit trail (audit_events.py)
        return None
    if len(segments) == 2:
        endpoint = _INSTANCE.get(method)
        type, id = segments
        if endpoint and _TYPE.fullmatch(type) and _ID.fullmatch(id):
            return endpoint, {"type": type, "id": id}
    elif len(segments) == 1:
        endpoint = _TYPE_LEVEL.get(method)
        if endpoint and _TYPE.fullmatch(segments[0]):
            return endpoint, {"type": segments[0]}
    return None


async def route(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve an HTTP request: by its endpoint when it is one of the three, else by ``app`` (the
    FastAPI application's routing), guarded."""
    path = scope["path"]
    if _CONTROL.search(path):
        error = BadRequest("The URL path contains a control character", expression="url")
        response = await handlers.fhir_error(Request(scope, receive, send), error)
        await response(scope, receive, send)
        return
    found = _route(scope["method"], path)
    if found is None:
        await _guarded(app, scope, receive, send)
        return
    endpoint, params = found
    scope["path_params"] = params
    request = Request(scope, receive, send)
    try:
        response = await endpoint(request)
    except FhirError as exc:
        response = await handlers.fhir_error(request, exc)
    except Exception as exc:  # noqa: BLE001 - answered as the application would
        response = await handlers.unexpected(request, exc)
    await response(scope, receive, send)


async def _guarded(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracked)
    except Exception as exc:  # noqa: BLE001 - answered (and logged) without its message
        await handlers.answer_unexpected(scope, receive, send, exc, answered=started)
