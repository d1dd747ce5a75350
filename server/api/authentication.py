"""Who may talk to the server at all: an ASGI layer in front of every route.

- ``auth = smart`` (the default of ``create_app``): discovery (``GET /``,
  ``[base]/metadata``, ``[base]/.well-known/smart-configuration``, ``[base]/auth/jwks``), the
  token endpoint and the launch's pages (``[base]/auth/authorize``, ``login``, ``approve``)
  answer without a token; every other request needs a valid access token
  (``Authorization: Bearer``), else 401 with ``WWW-Authenticate: Bearer``. The principal it
  names is put in the request scope (``calaim.principal``), where ``context.principal_of``
  finds it.
- ``auth = off``: no authentication, and every request whose ASGI ``client`` or ``server``
  address is not a loopback address is refused 403 — whatever started the application
  (``uvicorn --factory server.app:create_app --host 0.0.0.0`` skips the CLI's checks). A
  request forwarded by a proxy carries the proxy's address, or (with uvicorn's proxy
  headers) the forwarded one: auth off behind a proxy is unsupported.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api import handlers
from server.auth import emergency
from server.auth.service import AuthFailure, AuthService
from server.errors import BadRequest, Forbidden, Unauthorized
from server.settings import Settings

PRINCIPAL = "calaim.principal"
OPEN_PATHS = frozenset(
    {
        "/",
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/fhir/auth/token",
        "/fhir/auth/jwks",
        "/fhir/auth/authorize",
        "/fhir/auth/login",
        "/fhir/auth/approve",
        "/fhir/auth/revoke",
    }
)


def loopback(address: Any) -> bool:
    """Whether an ASGI ``client``/``server`` address is a loopback address (None, a unix
    socket or a name: not one)."""
    if not address:
        return False
    host = address[0] if isinstance(address, list | tuple) else address
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def _authorization(scope: Scope) -> str | None:
    """The ``Authorization`` header (the first), without building a request object."""
    return _header(scope, b"authorization")


def _header(scope: Scope, wanted: bytes) -> str | None:
    """The first header named ``wanted`` (lower case bytes), or None."""
    for name, value in scope["headers"]:
        if name == wanted:
            text: str = value.decode("latin-1")
            return text
    return None


class Authentication:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.settings.auth == "off":
            if loopback(scope.get("client")) and loopback(scope.get("server")):
                await self.app(scope, receive, send)
                return
            error = Forbidden(
                "Authentication is off (CALAIM_FHIR_AUTH=off): only loopback requests are "
                "answered. Start the server with --auth smart to serve other addresses."
            )
            await self._answer(scope, receive, send, error)
            return
        if scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        service: AuthService = state.auth
        try:
            principal = await service.authenticate(_authorization(scope), state.runner.call)
        except AuthFailure as failure:
            refusal = Unauthorized(
                failure.description, headers={"WWW-Authenticate": failure.challenge()}
            )
            await self._answer(scope, receive, send, refusal)
            return
        try:
            read = emergency.reads(scope["method"], scope["path"])
            principal = emergency.asserted(principal, _header(scope, emergency.HEADER), read)
        except emergency.BadAssertion as exc:
            scope[PRINCIPAL] = principal
            await self._answer(scope, receive, send, BadRequest(str(exc)))
            return
        except (emergency.NotGranted, emergency.WriteRefused) as exc:
            scope[PRINCIPAL] = exc.args[0]  # the refused assertion is audited as ETREAT
            error = Forbidden(
                "Break the glass (ETREAT) is not granted to this client"
                if isinstance(exc, emergency.NotGranted)
                else "Break the glass (ETREAT) reads only: no write asserts it"
            )
            await self._answer(scope, receive, send, error)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, error: Any) -> None:
        response = await handlers.fhir_error(Request(scope, receive, send), error)
        await response(scope, receive, send)
