"""A SMART backend-services client for the server's own tools (``calaim-fhir load --url``).

``BackendServices`` is an ``httpx.Auth``: before the first request, and whenever the token is
about to expire (or a request answers 401 once), it signs a fresh ``private_key_jwt``
assertion (``iss`` = ``sub`` = the client id, ``aud`` = the token endpoint, ``exp`` in 60 s,
a new ``jti``) and posts a ``client_credentials`` request to the token endpoint named by the
server's ``.well-known/smart-configuration``. ``Bearer`` sets a token given as it is.

Private keys: a JWK (or a JWKS holding one private key) with its ``kid``, or a PEM file with
the ``kid`` given separately. RSA keys sign RS384, EC P-384 keys ES384 (P-256: ES256).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey, import_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RENEW_SECONDS = 30.0  # a token this close to its expiry is renewed before use
_ASSERTION_SECONDS = 60


class TokenError(Exception):
    """The token endpoint refused the client (its error and description)."""


def load_private_key(path: Path, kid: str | None = None) -> tuple[RSAKey | ECKey, str, str]:
    """The signing key in ``path``, its ``kid`` and algorithm."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"{"):
        value = orjson.loads(data)
        if isinstance(value, dict) and isinstance(value.get("keys"), list):
            private = [k for k in value["keys"] if isinstance(k, dict) and "d" in k]
            if len(private) != 1:
                raise ValueError(f"{path}: the JWKS must hold exactly one private key")
            value = private[0]
        if not isinstance(value, dict) or "d" not in value:
            raise ValueError(f"{path}: not a private JWK")
        key = import_key(value)
        kid = kid or value.get("kid")
    else:
        try:
            key = RSAKey.import_key(data)
        except (JoseError, ValueError):
            try:
                key = ECKey.import_key(data)
            except (JoseError, ValueError) as exc:
                raise ValueError(f"{path}: not an RSA or EC private key") from exc
    if not isinstance(key, RSAKey | ECKey) or not key.is_private:
        raise ValueError(f"{path}: an RSA or EC private key is required")
    if not kid:
        raise ValueError(f"{path}: the key has no kid (give --key-id)")
    if isinstance(key, RSAKey):
        return key, str(kid), "RS384"
    curve = key.as_dict().get("crv")
    algorithm = {"P-384": "ES384", "P-256": "ES256"}.get(str(curve))
    if algorithm is None:
        raise ValueError(f"{path}: EC keys must be on P-384 or P-256")
    return key, str(kid), algorithm


class Bearer(httpx.Auth):
    """A given access token, sent as it is."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class BackendServices(httpx.Auth):
    requires_response_body = True

    def __init__(
        self,
        base_url: str,
        client_id: str,
        key: RSAKey | ECKey,
        kid: str,
        algorithm: str,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._client_id = client_id
        self._key, self._kid, self._algorithm = key, kid, algorithm
        self._scope = scope
        self._clock = clock
        self._token_url: str | None = None
        self._token: str | None = None
        self._expires = 0.0

    def assertion(self, token_url: str) -> str:
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + _ASSERTION_SECONDS,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": self._algorithm, "kid": self._kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._key, algorithms=[self._algorithm])

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or self._clock() > self._expires - _RENEW_SECONDS:
            yield from self._renew()
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:  # revoked key rotation, clock skew: once more
            yield from self._renew()
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

    def _renew(self) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token_url is None:
            found = yield httpx.Request(
                "GET",
                self._base + "/.well-known/smart-configuration",
                headers={"Accept": "application/json"},
            )
            if found.status_code != 200:
                raise TokenError(
                    f"{self._base} publishes no SMART configuration ({found.status_code}): "
                    "is authentication on?"
                )
            self._token_url = str(found.json()["token_endpoint"])
        form = {
            "grant_type": "client_credentials",
            "scope": self._scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(self._token_url),
        }
        answer = yield httpx.Request("POST", self._token_url, data=form)
        body: Any = answer.json() if answer.content else {}
        if answer.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            text = body.get("error_description") if isinstance(body, dict) else None
            raise TokenError(f"The token endpoint refused the client: {error}: {text}")
        self._token = str(body["access_token"])
        self._expires = self._clock() + float(body.get("expires_in", 300))
