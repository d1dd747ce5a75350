"""A shortcut for the three most frequent interactions: read, create and update by id.

FastAPI's routing and dependency machinery costs more per request than reading a resource
from SQLite. For ``GET|PUT /fhir/{type}/{id}`` and ``POST /fhir/{type}`` this pure ASGI layer
calls the very endpoint functions of ``routes.py`` (same parsing, same rules) and answers errors
through the same ``handlers``; every other request continues to the FastAPI application, where
the same endpoints are registered (and described in the OpenAPI document).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api import handlers, paths, routes
from server.errors import FhirError

Endpoint = Callable[[Request], Awaitable[Response]]

_TYPE = re.compile(paths.TypeConvertor.regex)
_ID = re.compile(paths.IdConvertor.regex)
_PREFIX = "/fhir/"
_INSTANCE: dict[str, Endpoint] = {"GET": routes.read, "PUT": routes.update}
_TYPE_LEVEL: dict[str, Endpoint] = {"POST": routes.create}


def _route(method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    if not path.startswith(_PREFIX):
        return None
    segments = path[len(_PREFIX) :].split("/")
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


class FastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _route(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
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
