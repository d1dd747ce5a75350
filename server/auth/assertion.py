"""Checking a backend service's client assertion (``private_key_jwt``, RFC 7523; SMART
"client-confidential-asymmetric").

Each check below refuses with ``invalid_client`` (RFC 6749 §5.2) and a reason that names the
check (never key material):

- the header: ``alg`` one the client may use (RS384, ES384; RS256/ES256 if configured) —
  ``none``, ``HS*`` and anything else refused whatever the key set holds; a ``kid``; a
  ``jku`` only if it equals the registered ``jwks_uri``; no ``x5u``/``x5c``/``jwk`` header;
- ``iss`` = ``sub`` = a registered, active ``client_id`` (and the ``client_id`` form field,
  when sent);
- the signature, by the key ``kid`` of the client's JWKS (by value, or fetched from its
  ``jwks_uri``; an unknown ``kid`` refetches at most once a minute), of the type the
  algorithm needs (RSA; EC on the algorithm's curve);
- ``aud`` = the token endpoint URL (from the configured base URL, never the request's
  ``Host``);
- ``exp`` present, not past, and at most 300 s ahead; ``nbf``/``iat`` not in the future;
  each with the configured leeway (at most 60 s);
- ``jti`` present and never used by this client (``Auth.use_assertion``, by the caller).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from server.auth.clients import EC_CURVES, KEY_TYPES, Client

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = 300
_REFUSED_HEADERS = ("x5u", "x5c", "jwk")


class InvalidClient(Exception):
    """A failed client authentication (``invalid_client``); the message says which check."""


@dataclass(frozen=True, slots=True)
class Assertion:
    client: Client
    jti: str
    exp: int


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, not yet verified."""
    try:
        compact = jws.extract_compact(token.encode())
        claims = orjson.loads(compact.payload)
    except (JoseError, ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidClient("client_assertion is not a compact JWS with a JSON payload") from exc
    if not isinstance(claims, dict):
        raise InvalidClient("client_assertion claims are not a JSON object")
    return dict(compact.headers()), claims


Keys = Callable[[Client, str], Awaitable["dict[str, Any] | None"]]
Lookup = Callable[[str], Awaitable["Client | None"]]


async def check_assertion(
    token: str,
    *,
    form_client_id: str | None,
    token_url: str,
    now: float,
    leeway: int,
    lookup: Lookup,
    keys: Keys,
) -> Assertion:
    header, claims = unverified(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
        raise InvalidClient(f"assertion algorithm {alg!r} is not accepted")
    for name in _REFUSED_HEADERS:
        if name in header:
            raise InvalidClient(f"assertion header {name!r} is not accepted")
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not iss or iss != sub:
        raise InvalidClient("assertion iss and sub must both be the client_id")
    if form_client_id is not None and form_client_id != iss:
        raise InvalidClient("client_id does not match the assertion's iss")
    client = await lookup(iss)
    if client is None or not client.active:
        raise InvalidClient("unknown or revoked client")
    if alg not in client.algorithms:
        raise InvalidClient(f"assertion algorithm {alg} is not allowed for this client")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidClient("assertion header has no kid")
    jku = header.get("jku")
    if jku is not None and (client.jwks_url is None or jku != client.jwks_url):
        raise InvalidClient("assertion jku is not the client's registered jwks_uri")
    key = _key(await keys(client, kid), kid, alg)
    try:
        jws.deserialize_compact(token, key, algorithms=[alg])
    except JoseError as exc:
        raise InvalidClient("assertion signature does not verify") from exc
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if token_url not in audiences:
        raise InvalidClient("assertion aud is not this server's token endpoint")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise InvalidClient("assertion has no numeric exp")
    if exp < now - leeway:
        raise InvalidClient("assertion has expired")
    if exp > now + MAX_LIFETIME + leeway:
        raise InvalidClient(f"assertion exp is more than {MAX_LIFETIME} s ahead")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidClient(f"assertion {name} is not numeric")
        if value > now + leeway:
            raise InvalidClient(f"assertion {name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise InvalidClient("assertion has no jti (or one over 255 characters)")
    return Assertion(client, jti, int(exp))


def _key(jwks: dict[str, Any] | None, kid: str, alg: str) -> RSAKey | ECKey:
    if jwks is None:
        raise InvalidClient("the client's keys cannot be had")
    matches = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if not matches:
        raise InvalidClient("unknown kid")
    data = matches[0]
    if data.get("kty") != KEY_TYPES[alg] or "d" in data:
        raise InvalidClient(f"key {kid} is not a public {KEY_TYPES[alg]} key")
    if alg in EC_CURVES and data.get("crv") != EC_CURVES[alg]:
        raise InvalidClient(f"key {kid} is not on curve {EC_CURVES[alg]}")
    try:
        key = KeySet.import_key_set({"keys": [data]}).keys[0]
    except Exception as exc:  # noqa: BLE001 - an unreadable key fails the authentication
        raise InvalidClient(f"key {kid} cannot be read") from exc
    assert isinstance(key, RSAKey | ECKey)
    return key
