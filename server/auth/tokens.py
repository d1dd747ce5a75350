"""The server's access tokens: JWTs signed with the database-kept key (``keys.py``).

Claims: ``iss`` and ``aud`` the FHIR base URL, ``sub`` and ``client_id`` the client, ``scope``
the granted scopes, ``organization``, ``role`` and ``purpose`` as registered; for a launch
``patient`` (the id of the chosen Patient, if any), ``user`` (the user's Practitioner), the
user's ``organization`` and ``gid`` (the grant, checked on every request); ``iat``, ``exp`` (at
most 300 s), ``jti``. Verification checks the signature with a cached key,
``iss``, ``aud`` and ``exp``; a verified token is remembered (by its text, until it expires)
so a client's next requests skip the signature check. Whether the client is still active is
*not* part of verification: the caller asks the database on every request.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError

from server.auth.clients import Client
from server.auth.keys import ALGORITHM, SigningKeys
from server.auth.principal import Principal
from server.auth.scopes import ScopeSet

_CACHE_SIZE = 4096


class InvalidToken(Exception):
    """An access token that does not verify; the message says why (never the token)."""


@dataclass(frozen=True, slots=True)
class Verified:
    principal: Principal
    client_id: str
    exp: float
    grant: str | None = None  # a launch's grant (checked on every request as the client is)


def issue(
    keys: SigningKeys,
    client: Client,
    scopes: ScopeSet,
    *,
    base: str,
    now: float,
    lifetime: int,
    patient: str | None = None,
    user: str | None = None,
    organization: str | None = None,
    grant: str | None = None,
) -> str:
    """An access token; for a launch, ``user`` (the fhirUser reference), the user's
    ``organization`` and the ``grant`` it was issued from."""
    key = keys.current()
    claims: dict[str, Any] = {
        "iss": base,
        "aud": base,
        "sub": client.client_id,
        "client_id": client.client_id,
        "scope": scopes.text,
        "iat": int(now),
        "exp": int(now) + lifetime,
        "jti": uuid.uuid4().hex,
        "purpose": list(client.purposes),
    }
    if organization or client.organization:
        claims["organization"] = organization or client.organization
    if user is not None:
        claims["user"] = user
    if grant is not None:
        claims["gid"] = grant
    if client.role:
        claims["role"] = client.role
    if patient is not None:
        claims["patient"] = patient
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
    return jws.serialize_compact(header, orjson.dumps(claims), key, algorithms=[ALGORITHM])


def principal_of(claims: dict[str, Any], scopes: ScopeSet) -> Principal:
    role = claims.get("role")
    purposes = claims.get("purpose") or []
    return Principal(
        str(claims["client_id"]),
        organization=claims.get("organization"),
        operator=role == "admin",
        scopes=scopes,
        role=role if isinstance(role, str) else None,
        purposes=tuple(str(p) for p in purposes) if isinstance(purposes, list) else (),
        patient=patient if isinstance(patient := claims.get("patient"), str) else None,
        user=user if isinstance(user := claims.get("user"), str) else None,
    )


class Verifier:
    def __init__(self, keys: SigningKeys, base: str) -> None:
        self._keys = keys
        self._base = base
        self._cache: OrderedDict[str, Verified] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str, now: float) -> Verified:
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None:
                self._cache.move_to_end(token)
        if hit is not None:
            if hit.exp <= now:
                raise InvalidToken("the access token has expired")
            return hit
        verified = self._verify(token, now)
        with self._lock:
            self._cache[token] = verified
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return verified

    def _verify(self, token: str, now: float) -> Verified:
        try:
            compact = jws.extract_compact(token.encode())
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the access token is not a JWT") from exc
        header = compact.headers()
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("the access token's algorithm is not the server's")
        key = self._keys.key(str(header.get("kid", "")))
        if key is None:
            raise InvalidToken("the access token's key is unknown")
        try:
            jws.deserialize_compact(token, key, algorithms=[ALGORITHM])
            claims = orjson.loads(compact.payload)
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the access token's signature does not verify") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("the access token's claims are not an object")
        if claims.get("iss") != self._base or claims.get("aud") != self._base:
            raise InvalidToken("the access token was issued for another server")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now:
            raise InvalidToken("the access token has expired")
        if not isinstance(claims.get("client_id"), str):
            raise InvalidToken("the access token names no client")
        scopes = ScopeSet.of(str(claims.get("scope", "")))
        grant = claims.get("gid")
        return Verified(
            principal_of(claims, scopes),
            claims["client_id"],
            float(exp),
            grant if isinstance(grant, str) else None,
        )


def id_token(
    keys: SigningKeys, *, base: str, client_id: str, subject: str, fhir_user: str | None,
    now: float, lifetime: int,
) -> str:
    """An OpenID Connect id_token for a launch asking ``openid fhirUser``: signed like the
    access tokens (the JWKS at ``[base]/auth/jwks``), ``iss`` the base URL (the discovery's
    ``issuer``), ``aud`` the client, ``fhirUser`` the user's Practitioner as an absolute URL."""
    key = keys.current()
    claims: dict[str, Any] = {
        "iss": base,
        "aud": client_id,
        "sub": subject,
        "iat": int(now),
        "exp": int(now) + lifetime,
    }
    if fhir_user is not None:
        claims["fhirUser"] = f"{base}/{fhir_user}"
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
    return jws.serialize_compact(header, orjson.dumps(claims), key, algorithms=[ALGORITHM])
