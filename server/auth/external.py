"""Access tokens from an external identity provider (a plan's own authorization server).

Configured by ``CALAIM_FHIR_IDP_*`` (``settings.py``). A token is the provider's when its
(unverified) ``iss`` is exactly ``idp_issuer`` — or, with introspection configured, when it
is not a JWT at all (an opaque token). Then:

- **JWKS** (``idp_jwks_url``): the signature by the provider's key ``kid`` (fetched with the
  same checks as a client's ``jwks_uri``), one of the pinned ``idp_algorithms``; ``iss``
  exact; ``aud`` containing ``idp_audience`` (default: our FHIR base URL); ``exp`` not past.
- **Introspection** (``idp_introspection_url``, RFC 7662): the token is posted with the
  configured client credentials; ``active`` must be true, and ``iss``/``aud``/``exp`` as
  above when present (``exp`` required). An answer is cached for at most
  min(exp − now, 60 s): a token the provider revokes stops within 60 s.

The organisation, user and purpose claims are named in configuration; a configured claim
that is missing, or an Organization that is not ``Organization/id``, fails the token (401).
Scopes come from the ``scope`` claim; granular and ``patient/`` scopes count for nothing
(``scopes.py``).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from server.auth.jwks_fetch import JwksFetcher
from server.auth.principal import Principal
from server.auth.scopes import ScopeError, ScopeSet
from server.auth.tokens import InvalidToken
from server.settings import Settings

INTROSPECTION_CACHE_SECONDS = 60.0


class ExternalIssuer:
    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: JwksFetcher | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert settings.idp_issuer is not None
        self.issuer = settings.idp_issuer
        self.audience = settings.idp_audience or settings.fhir_base
        self.algorithms = [a.strip() for a in settings.idp_algorithms.split(",") if a.strip()]
        self.settings = settings
        self.fetcher = fetcher or JwksFetcher(
            allowed_networks=settings.jwks_private_networks.split(","),
            allow_http_loopback=settings.jwks_allow_http_loopback,
        )
        self._transport = transport
        self._introspected: dict[str, tuple[float, dict[str, Any]]] = {}

    @classmethod
    def of(cls, settings: Settings) -> ExternalIssuer | None:
        return cls(settings) if settings.idp_issuer else None

    def claims_issuer(self, token: str) -> bool:
        try:
            compact = jws.extract_compact(token.encode())
        except (JoseError, ValueError):
            return self.settings.idp_introspection_url is not None  # opaque: introspect it
        try:
            claims = orjson.loads(compact.payload)
        except orjson.JSONDecodeError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self.issuer

    async def authenticate(self, token: str, now: float) -> Principal:
        if self.settings.idp_introspection_url:
            claims = await self._introspect(token, now)
        else:
            claims = await self._verify(token)
        self._check(claims, now)
        return self._principal(claims)

    async def _verify(self, token: str) -> dict[str, Any]:
        if not self.settings.idp_jwks_url:
            raise InvalidToken("no key source configured for the identity provider")
        try:
            compact = jws.extract_compact(token.encode())
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the access token is not a JWT") from exc
        header = compact.headers()
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise InvalidToken(f"algorithm {alg!r} is not pinned for the identity provider")
        jwks = await self.fetcher.keys("idp:" + self.issuer, self.settings.idp_jwks_url, str(kid))
        if jwks is None:
            raise InvalidToken("the identity provider's keys cannot be had")
        keys = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
        if not keys or keys[0].get("kty") == "oct":
            raise InvalidToken("the access token's key is unknown")
        try:
            key = KeySet.import_key_set({"keys": keys[:1]}).keys[0]
            jws.deserialize_compact(token, key, algorithms=[str(alg)])
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the access token's signature does not verify") from exc
        claims = orjson.loads(compact.payload)
        if not isinstance(claims, dict):
            raise InvalidToken("the access token's claims are not an object")
        return claims

    async def _introspect(self, token: str, now: float) -> dict[str, Any]:
        cached = self._introspected.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        url = self.settings.idp_introspection_url
        assert url is not None
        auth: tuple[str | bytes, str | bytes] | None = None
        if self.settings.idp_introspection_client_id:
            auth = (
                self.settings.idp_introspection_client_id,
                self.settings.idp_introspection_client_secret or "",
            )
        try:
            async with httpx.AsyncClient(
                timeout=5.0, follow_redirects=False, transport=self._transport
            ) as client:
                if auth is None:
                    response = await client.post(url, data={"token": token})
                else:
                    response = await client.post(url, data={"token": token}, auth=auth)
        except httpx.HTTPError as exc:
            raise InvalidToken("the identity provider's introspection failed") from exc
        if response.status_code != 200:
            raise InvalidToken("the identity provider's introspection failed")
        try:
            claims = response.json()
        except ValueError as exc:
            raise InvalidToken("the introspection answer is not JSON") from exc
        if not isinstance(claims, dict) or claims.get("active") is not True:
            raise InvalidToken("the access token is not active")
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise InvalidToken("the introspection answer has no exp")
        keep = min(float(exp) - now, INTROSPECTION_CACHE_SECONDS)
        if keep > 0:
            if len(self._introspected) > 4096:
                self._introspected.clear()
            self._introspected[token] = (now + keep, claims)
        return claims

    def _check(self, claims: dict[str, Any], now: float) -> None:
        if claims.get("iss", self.issuer if self.settings.idp_introspection_url else None) != (
            self.issuer
        ):
            raise InvalidToken("the access token's issuer is not the configured one")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise InvalidToken("the access token is not for this server")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now:
            raise InvalidToken("the access token has expired")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        settings = self.settings
        organization = claims.get(settings.idp_organization_claim)
        if not isinstance(organization, str) or not organization.startswith("Organization/"):
            raise InvalidToken(f"claim {settings.idp_organization_claim!r} is missing")
        user = None
        if settings.idp_user_claim:
            user = claims.get(settings.idp_user_claim)
            if not isinstance(user, str) or not user:
                raise InvalidToken(f"claim {settings.idp_user_claim!r} is missing")
        purposes = claims.get(settings.idp_purpose_claim)
        if isinstance(purposes, str):
            purposes = purposes.split()
        if not isinstance(purposes, list) or not purposes:
            raise InvalidToken(f"claim {settings.idp_purpose_claim!r} is missing")
        try:
            scopes = ScopeSet.of(str(claims.get("scope", "")))
        except ScopeError as exc:
            raise InvalidToken("the access token's scope is malformed") from exc
        client = claims.get("client_id") or claims.get("sub") or "external"
        return Principal(
            f"{self.issuer}#{client}",
            organization=organization,
            user=user,
            scopes=scopes,
            purposes=tuple(str(p) for p in purposes),
        )
