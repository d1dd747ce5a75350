"""SMART backend services, put together: the token endpoint's grant and each request's
authentication (``server/api/smart.py`` and ``server/api/authentication.py`` are their HTTP
edges).

Blocking database calls run through ``call`` (the store runner: inline on SQLite, on a thread
on PostgreSQL).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from server.auth import assertion, launch
from server.auth.clients import Client
from server.auth.external import ExternalIssuer
from server.auth.jwks_fetch import JwksFetcher
from server.auth.keys import SigningKeys
from server.auth.principal import Principal
from server.auth.scope_policy import clauses_of
from server.auth.scopes import Scope, ScopeError, ScopeSet, enforceable, grant
from server.auth.tokens import InvalidToken, Verifier, id_token, issue
from server.search.parse import SearchContext
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
    def enforce_query(self, scope: Scope) -> None:
        """A granular scope's query parses into clauses (``ScopeError`` otherwise)."""
        clauses_of(scope, self.search)

    def _enforceable(self, scope: Scope) -> None:
        """A scope this server enforces for a backend service (no ``patient/`` scope: no
        patient context): a granular one's query parses into clauses."""
        enforceable(scope)
        clauses_of(scope, self.search)

    def __init__(
        self,
        settings: Settings,
        store: SqlAuth,
        search: SearchContext,
        *,
        clock: Callable[[], float] = time.time,
        fetcher: JwksFetcher | None = None,
        external: ExternalIssuer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.search = search  # granular scopes' queries parse with it
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
        """The token response for a ``client_credentials`` or ``authorization_code``
        request; raises ``OAuthError``."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        if grant_type == "authorization_code":
            return await self._code(form, call)
        if grant_type == "refresh_token":
            return await self._refresh(form, call)
        if grant_type != "client_credentials":
            raise OAuthError(
                400,
                "unsupported_grant_type",
                "Supported: client_credentials, authorization_code, refresh_token",
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
        checked = await self._authenticate_client(form, call)
        requested = form.get("scope", "")
        if not requested.strip():
            raise OAuthError(400, "invalid_scope", "scope is required")
        client = checked.client
        try:
            scopes = grant(requested, client.scopes, self._enforceable)
        except ScopeError as exc:
            raise OAuthError(400, "invalid_scope", str(exc)) from exc
        await self._use_assertion(checked, call)
        lifetime = self.settings.token_lifetime_seconds
        token = issue(
            self.keys, client, scopes, base=self.settings.fhir_base, now=self.clock(),
            lifetime=lifetime,
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": scopes.text,
        }

    async def _authenticate_client(
        self, form: Mapping[str, str], call: Call[Any]
    ) -> assertion.Assertion:
        """The client of a ``private_key_jwt`` assertion (its ``jti`` not yet recorded)."""
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
        return checked

    async def _use_assertion(self, checked: assertion.Assertion, call: Call[Any]) -> None:
        """Record the assertion's ``jti`` (401 for a replay), pruning expired ones now and
        then."""
        now = self.clock()
        client_id = checked.client.client_id
        keep_until = int((checked.exp + self.settings.auth_leeway_seconds) * 1e6)
        fresh = await call(lambda: self.store.use_assertion(client_id, checked.jti, keep_until))
        if not fresh:
            raise OAuthError(401, "invalid_client", "assertion jti was already used")
        if now - self._pruned > _PRUNE_SECONDS:
            self._pruned = now
            await call(lambda: self.store.prune_assertions(int(now * 1e6)))

    async def _launch_client(self, form: Mapping[str, str], call: Call[Any]) -> Client:
        """The client of a launch's token or revocation request: a confidential one by its
        ``private_key_jwt`` assertion, a public one by its ``client_id``."""
        if form.get("client_assertion") or form.get("client_assertion_type"):
            if form.get("client_assertion_type") != assertion.ASSERTION_TYPE:
                raise OAuthError(401, "invalid_client", "Unsupported client_assertion_type")
            checked = await self._authenticate_client(form, call)
            await self._use_assertion(checked, call)
            return checked.client
        client_id = form.get("client_id", "")
        row = await call(lambda: self.store.client(client_id)) if client_id else None
        if row is None or row.status != "active":
            raise OAuthError(401, "invalid_client", "Unknown client")
        client = Client.of(row)
        if not client.public:
            raise OAuthError(
                401, "invalid_client", "This client must authenticate (private_key_jwt)"
            )
        return client

    async def _code(self, form: Mapping[str, str], call: Call[Any]) -> dict[str, Any]:
        """The authorization code grant of a launch (``launch.py``): the client (public: its
        ``client_id``; confidential: ``private_key_jwt``), then the code — single use (a
        second use revokes the grant and every token issued from it), unexpired, issued to
        this client for this ``redirect_uri``, its PKCE ``code_verifier`` hashing (S256) to
        the challenge."""
        client = await self._launch_client(form, call)
        for name in ("code", "redirect_uri", "code_verifier"):
            if not form.get(name):
                raise OAuthError(400, "invalid_request", f"{name} is required")
        hashed = launch.code_hash(form["code"])
        found, fresh = await call(lambda: self.store.use_code(hashed))
        if found is None:
            raise OAuthError(400, "invalid_grant", "Unknown authorization code")
        if not fresh:
            await call(lambda: self.store.revoke_grant(found.grant_id))
            raise OAuthError(
                400,
                "invalid_grant",
                "The authorization code was used before: the tokens issued from it are revoked",
            )
        now = self.clock()
        if found.expires < now * 1e6:
            raise OAuthError(400, "invalid_grant", "The authorization code has expired")
        if found.client_id != client.client_id:
            raise OAuthError(400, "invalid_grant", "The code was issued to another client")
        if found.redirect_uri != form["redirect_uri"]:
            raise OAuthError(400, "invalid_grant", "redirect_uri differs from the authorization's")
        if not launch.pkce_matches(form["code_verifier"], found.code_challenge):
            raise OAuthError(400, "invalid_grant", "code_verifier does not match (PKCE S256)")
        words = found.scope.split()
        body = await self._launch_tokens(
            client, found.grant_id, found.username, found.scope, found.patient, call
        )
        if "openid" in words and "fhirUser" in words:
            user = await call(lambda: self.store.user(found.username))
            assert user is not None
            body["id_token"] = id_token(
                self.keys, base=self.settings.fhir_base, client_id=client.client_id,
                subject=user.username, fhir_user=user.practitioner, now=now,
                lifetime=self.settings.token_lifetime_seconds,
            )
        refresh = None
        if "offline_access" in words or "online_access" in words:
            lifetime = (self.settings.refresh_offline_seconds if "offline_access" in words
                        else self.settings.refresh_online_seconds)
            refresh = secrets.token_urlsafe(32)
            hashed_refresh = launch.code_hash(refresh)
            until = int((now + lifetime) * 1e6)
            await call(lambda: self.store.add_refresh(hashed_refresh, found.grant_id, until))
            body["refresh_token"] = refresh
        return body

    async def _launch_tokens(
        self, client: Client, grant_id: str, username: str, scope: str, patient: str | None,
        call: Call[Any],
    ) -> dict[str, Any]:
        """The access token of a launch's grant (its user still active)."""
        user = await call(lambda: self.store.user(username))
        if user is None or user.status != "active":
            raise OAuthError(400, "invalid_grant", "The user can no longer sign in")
        lifetime = self.settings.token_lifetime_seconds
        token = issue(
            self.keys, client, ScopeSet.of(scope), base=self.settings.fhir_base,
            now=self.clock(), lifetime=lifetime, patient=patient, user=user.practitioner,
            organization=user.organization, grant=grant_id,
        )
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": scope,
        }
        if patient is not None:
            body["patient"] = patient
        return body

    async def _refresh(self, form: Mapping[str, str], call: Call[Any]) -> dict[str, Any]:
        """A refresh token grant: the token rotated (a rotated token presented again revokes
        its whole grant: every refresh and access token of it), bound to its client, within
        the grant's absolute lifetime; ``scope``, if sent, may only narrow."""
        client = await self._launch_client(form, call)
        presented = form.get("refresh_token", "")
        if not presented:
            raise OAuthError(400, "invalid_request", "refresh_token is required")
        hashed = launch.code_hash(presented)
        found = await call(lambda: self.store.grant_of_refresh(hashed))
        if found is None:
            raise OAuthError(400, "invalid_grant", "Unknown refresh token")
        if found.client_id != client.client_id:
            raise OAuthError(400, "invalid_grant", "The refresh token was issued to another client")
        scope = self._narrowed(found.scope, form.get("scope"))
        rotated, fresh = await call(lambda: self.store.use_refresh(hashed))
        if rotated is None or not fresh:
            await call(lambda: self.store.revoke_grant(found.grant_id))
            raise OAuthError(
                400, "invalid_grant",
                "The refresh token was used before: the authorization is revoked",
            )
        if found.status != "active" or found.expires is None or found.expires < self.clock() * 1e6:
            raise OAuthError(400, "invalid_grant", "The authorization has ended: launch again")
        body = await self._launch_tokens(
            client, found.grant_id, found.username, scope, found.patient, call
        )
        renewed = secrets.token_urlsafe(32)
        hashed_renewed = launch.code_hash(renewed)
        await call(lambda: self.store.add_refresh(hashed_renewed, found.grant_id))
        body["refresh_token"] = renewed
        return body

    @staticmethod
    def _narrowed(granted: str, asked: str | None) -> str:
        """The scopes of a refresh: the grant's, or the part of them ``asked`` names (it may
        only narrow; ``invalid_scope`` otherwise)."""
        if not asked:
            return granted
        had = granted.split()
        extra = [s for s in asked.split() if s not in had]
        if extra:
            raise OAuthError(
                400, "invalid_scope", f"A refresh may only narrow the scopes: {' '.join(extra)}"
            )
        if not ScopeSet.of(asked).scopes:
            raise OAuthError(400, "invalid_scope", "No resource scope left")
        return " ".join(s for s in had if s in asked.split())

    async def revoke(self, form: Mapping[str, str], call: Call[Any]) -> None:
        """RFC 7009: revoke the grant a launch's refresh or access token belongs to (every
        token of it). An unknown token, or one of another client, changes nothing; the
        answer is the same (200)."""
        client = await self._launch_client(form, call)
        token = form.get("token", "")
        if not token:
            raise OAuthError(400, "invalid_request", "token is required")
        grant_id: str | None = None
        found = await call(lambda: self.store.grant_of_refresh(launch.code_hash(token)))
        if found is not None and found.client_id == client.client_id:
            grant_id = found.grant_id
        elif found is None:
            try:
                verified = self.verifier.verify(token, self.clock())
            except InvalidToken:
                verified = None
            if verified is not None and verified.client_id == client.client_id:
                grant_id = verified.grant
        if grant_id is not None:
            revoked = grant_id
            await call(lambda: self.store.revoke_grant(revoked))

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
        if verified.grant is not None:
            grant_id = verified.grant
            if not await call(lambda: self.store.grant_active(verified.client_id, grant_id)):
                raise AuthFailure("The authorization has been revoked")
        elif not await call(lambda: self.store.active(verified.client_id)):
            raise AuthFailure("The client has been revoked")
        return verified.principal
