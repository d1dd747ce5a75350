"""SMART backend services, put together: the token endpoint's grant and each request's
authentication (``server/api/smart.py`` and ``server/api/authentication.py`` are their HTTP
edges).

Blocking database calls run through ``call`` (the store runner: inline on SQLite, on a thread
on PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from server.auth import assertion
from server.auth.clients import Client
from server.auth.external import ExternalIssuer
from server.auth.jwks_fetch import JwksFetcher
from server.auth.keys import SigningKeys
from server.auth.principal import Principal
from server.auth.scope_policy import clauses_of
from server.auth.scopes import Scope, ScopeError, enforceable, grant
from server.auth.tokens import InvalidToken, Verifier, issue
from server.search.service import search_service
from server.settings import Settings
from server.store.sql.auth import SqlAuth

T = TypeVar("T")
Call = Callable[[Callable[[], T]], Awaitable[T]]
_PRUNE_SECONDS = 60.0
REALM = 'Bearer realm="calaim-fhir"'


@dataclass
class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer of the token endpoint."""

    status: int
    error: str
    description: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class AuthFailure(Exception):
    """A request without a valid access token (401, ``WWW-Authenticate``)."""

    description: str
    error: str | None = "invalid_token"
    headers: dict[str, str] = field(default_factory=dict)

    def challenge(self) -> str:
        if self.error is None:
            return REALM
        safe = self.description.replace('"', "'")
        return f'{REALM}, error="{self.error}", error_description="{safe}"'


def token_url(settings: Settings) -> str:
    return settings.fhir_base + "/auth/token"


class AuthService:
    def _enforceable(self, scope: Scope) -> None:
        """A scope this server enforces for a backend service (no ``patient/`` scope: no
        patient context): a granular one's query parses into clauses."""
        enforceable(scope)
        clauses_of(scope, search_service(self.settings).context)

    def __init__(
        self,
        settings: Settings,
        store: SqlAuth,
        *,
        clock: Callable[[], float] = time.time,
        fetcher: JwksFetcher | None = None,
        external: ExternalIssuer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.keys = SigningKeys(store, token_lifetime=settings.token_lifetime_seconds, clock=clock)
        self.verifier = Verifier(self.keys, settings.fhir_base)
        self.fetcher = fetcher or JwksFetcher(
            allowed_networks=settings.jwks_private_networks.split(","),
            allow_http_loopback=settings.jwks_allow_http_loopback,
        )
        self.external = external if external is not None else ExternalIssuer.of(settings)
        self.token_url = token_url(settings)
        self._pruned = float("-inf")

    def start(self) -> None:
        self.keys.ensure()

    # -- the token endpoint -------------------------------------------------------------------

    async def token(self, form: Mapping[str, str], call: Call[Any]) -> dict[str, Any]:
        """The token response for a ``client_credentials`` request; raises ``OAuthError``."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError(
                400, "unsupported_grant_type", "Only client_credentials is supported"
            )
        if form.get("client_assertion_type") != assertion.ASSERTION_TYPE or not form.get(
            "client_assertion"
        ):
            raise OAuthError(
                401,
                "invalid_client",
                "Client authentication is private_key_jwt: send client_assertion_type "
                f"{assertion.ASSERTION_TYPE} and a client_assertion",
            )
        now = self.clock()

        async def lookup(client_id: str) -> Client | None:
            row = await call(lambda: self.store.client(client_id))
            return None if row is None else Client.of(row)

        async def keys(client: Client, kid: str) -> dict[str, Any] | None:
            if client.jwks is not None:
                return client.jwks
            if client.jwks_url is None:  # a public launch app: it has no keys
                return None
            return await self.fetcher.keys(client.client_id, client.jwks_url, kid)

        try:
            checked = await assertion.check_assertion(
                form["client_assertion"],
                form_client_id=form.get("client_id"),
                token_url=self.token_url,
                now=now,
                leeway=self.settings.auth_leeway_seconds,
                lookup=lookup,
                keys=keys,
            )
        except assertion.InvalidClient as exc:
            raise OAuthError(401, "invalid_client", str(exc)) from exc
        requested = form.get("scope", "")
        if not requested.strip():
            raise OAuthError(400, "invalid_scope", "scope is required")
        client = checked.client
        try:
            scopes = grant(requested, client.scopes, self._enforceable)
        except ScopeError as exc:
            raise OAuthError(400, "invalid_scope", str(exc)) from exc
        keep_until = int((checked.exp + self.settings.auth_leeway_seconds) * 1e6)
        fresh = await call(
            lambda: self.store.use_assertion(client.client_id, checked.jti, keep_until)
        )
        if not fresh:
            raise OAuthError(401, "invalid_client", "assertion jti was already used")
        if now - self._pruned > _PRUNE_SECONDS:
            self._pruned = now
            await call(lambda: self.store.prune_assertions(int(now * 1e6)))
        lifetime = self.settings.token_lifetime_seconds
        token = issue(
            self.keys, client, scopes, base=self.settings.fhir_base, now=now, lifetime=lifetime
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": scopes.text,
        }

    # -- each request -------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None, call: Call[Any]) -> Principal:
        """The principal of a request's ``Authorization`` header; raises ``AuthFailure``."""
        if not authorization:
            raise AuthFailure("An access token is required (Authorization: Bearer)", None)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthFailure("The Authorization header must be Bearer <token>", "invalid_request")
        now = self.clock()
        if self.external is not None and self.external.claims_issuer(token):
            try:
                return await self.external.authenticate(token, now)
            except InvalidToken as exc:
                raise AuthFailure(str(exc)) from exc
        try:
            verified = self.verifier.verify(token, now)
        except InvalidToken as exc:
            raise AuthFailure(str(exc)) from exc
        if not await call(lambda: self.store.active(verified.client_id)):
            raise AuthFailure("The client has been revoked")
        return verified.principal
