"""SMART backend services over HTTP: discovery, the token endpoint and the server's JWKS.

``GET [base]/.well-known/smart-configuration`` (JSON whatever the ``Accept``, CORS open),
``POST [base]/auth/token`` (``client_credentials`` with ``private_key_jwt``; RFC 6749
answers, never cached) and ``GET [base]/auth/jwks`` (the keys that sign access tokens).
These answer without a token (``authentication.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from server.api.context import settings_of
from server.auth.clients import DEFAULT_ALGORITHMS, OPTIONAL_ALGORITHMS
from server.auth.service import AuthService, OAuthError, token_url
from server.settings import Settings

router = APIRouter(include_in_schema=False)

_OPEN = {"Access-Control-Allow-Origin": "*"}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CAPABILITIES = (
    "client-confidential-asymmetric",
    "client-public",
    "launch-standalone",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
)
SCOPES_SUPPORTED = ("openid", "fhirUser", "launch/patient", "offline_access", "online_access",
                    "system/*.cruds", "system/*.rs", "system/*.read", "system/*.write",
                    "user/*.cruds", "user/*.rs", "user/*.read", "user/*.write",
                    "patient/*.cruds", "patient/*.rs", "patient/*.read", "patient/*.write")


def configuration(settings: Settings) -> dict[str, Any]:
    """The SMART configuration: exactly what is implemented."""
    return {
        "issuer": settings.fhir_base,
        "jwks_uri": settings.fhir_base + "/auth/jwks",
        "authorization_endpoint": settings.fhir_base + "/auth/authorize",
        "token_endpoint": token_url(settings),
        "revocation_endpoint": settings.fhir_base + "/auth/revoke",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": [
            *DEFAULT_ALGORITHMS,
            *OPTIONAL_ALGORITHMS,
        ],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "capabilities": list(CAPABILITIES),
        "code_challenge_methods_supported": ["S256"],
    }


@router.get("/.well-known/smart-configuration")
async def smart_configuration(request: Request) -> Response:
    settings = settings_of(request)
    if settings.auth != "smart":
        return JSONResponse(
            {"error": "not_found", "error_description": "Authentication is off"},
            status_code=404,
            headers=_OPEN,
        )
    return JSONResponse(configuration(settings), headers=_OPEN)


def _service(request: Request) -> AuthService | None:
    service: AuthService | None = getattr(request.app.state, "auth", None)
    return service


@router.post("/auth/token")
async def token(request: Request) -> Response:
    service = _service(request)
    if service is None:
        return _error(OAuthError(404, "invalid_request", "Authentication is off"))
    fields = await _fields(request, ("grant_type", "scope", "client_id", "client_assertion_type",
                                     "client_assertion", "code", "redirect_uri",
                                     "code_verifier", "refresh_token"))
    if isinstance(fields, OAuthError):
        return _error(fields)
    runner = request.app.state.runner
    try:
        body = await service.token(fields, runner.call)
    except OAuthError as exc:
        return _error(exc)
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/auth/revoke")
async def revoke(request: Request) -> Response:
    """RFC 7009 token revocation (a launch's refresh or access token: its whole grant)."""
    service = _service(request)
    if service is None:
        return _error(OAuthError(404, "invalid_request", "Authentication is off"))
    fields = await _fields(request, ("token", "token_type_hint", "client_id",
                                     "client_assertion_type", "client_assertion"))
    if isinstance(fields, OAuthError):
        return _error(fields)
    try:
        await service.revoke(fields, request.app.state.runner.call)
    except OAuthError as exc:
        return _error(exc)
    return Response(status_code=200, headers=_NO_STORE)


async def _fields(request: Request, names: tuple[str, ...]) -> dict[str, str] | OAuthError:
    """The named fields of a form-encoded OAuth request (each at most once)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return OAuthError(400, "invalid_request", "Send application/x-www-form-urlencoded")
    form = await request.form(max_files=0, max_fields=20, max_part_size=64 * 1024)
    fields: dict[str, str] = {}
    for name in names:
        values = form.getlist(name)
        if len(values) > 1:
            return OAuthError(400, "invalid_request", f"{name} is repeated")
        if values and isinstance(values[0], str):
            fields[name] = values[0]
    return fields


def _error(error: OAuthError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=_NO_STORE)


@router.get("/auth/jwks")
async def jwks(request: Request) -> Response:
    service = _service(request)
    if service is None:
        return JSONResponse({"keys": []}, headers=_OPEN)
    runner = request.app.state.runner
    return JSONResponse(await runner.call(service.keys.jwks), headers=_OPEN)
