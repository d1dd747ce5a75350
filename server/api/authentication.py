"""Who may talk to the server at all: the edge (``edge.py``) admits each request before any
route sees it.

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

import functools
import ipaddress
from typing import Any

from starlette.types import Scope

from server.auth import emergency
from server.auth.service import AuthFailure, AuthService
from server.errors import BadRequest, FhirError, Forbidden, Unauthorized
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
    return _loopback_host(str(host))


@functools.lru_cache(maxsize=1024)
def _loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
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


async def admit(scope: Scope, settings: Settings) -> FhirError | None:
    """Who the request is from: the principal goes in ``scope[PRINCIPAL]`` (when known, also for
    a refused request, which is audited under it); returns the error to answer instead of the
    request, or None to serve it."""
    if settings.auth == "off":
        if loopback(scope.get("client")) and loopback(scope.get("server")):
            return None
        return Forbidden(
            "Authentication is off (CALAIM_FHIR_AUTH=off): only loopback requests are "
            "answered. Start the server with --auth smart to serve other addresses."
        )
    if scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
        return None
    state = scope["app"].state
    service: AuthService = state.auth
    try:
        principal = await service.authenticate(_authorization(scope), state.runner.call)
    except AuthFailure as failure:
        return Unauthorized(failure.description, headers={"WWW-Authenticate": failure.challenge()})
    try:
        read = emergency.reads(scope["method"], scope["path"])
        principal = emergency.asserted(principal, _header(scope, emergency.HEADER), read)
    except emergency.BadAssertion as exc:
        scope[PRINCIPAL] = principal
        return BadRequest(str(exc))
    except (emergency.NotGranted, emergency.WriteRefused) as exc:
        scope[PRINCIPAL] = exc.args[0]  # the refused assertion is audited as ETREAT
        return Forbidden(
            "Break the glass (ETREAT) is not granted to this client"
            if isinstance(exc, emergency.NotGranted)
            else "Break the glass (ETREAT) reads only: no write asserts it"
        )
    scope[PRINCIPAL] = principal
    return None
