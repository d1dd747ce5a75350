"""Access tokens from an external identity provider: its JWKS (signature, pinned algorithms,
exact iss, aud containing our base URL) or RFC 7662 introspection (cached at most 60 s);
the organisation and purpose claims named in configuration, a missing one failing closed."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.auth.partners import Partner
from tests.support import BASE, TestClient, fhir_client

ISSUER = "https://idp.plan.example/realms/partners"


@pytest.fixture(scope="module")
def idp() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"jwks": {"keys": []}, "introspect": {"active": False}, "calls": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, value: Any) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._send(state["jwks"])

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["calls"] += 1
            self._send(state["introspect"])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def jwks_app(database_url: str, idp: dict[str, Any], local: TestClient
             ) -> Iterator[TestClient]:
    with fhir_client(database_url, auth="smart", idp_issuer=ISSUER,
                     idp_jwks_url=idp["url"] + "/jwks", idp_algorithms="RS256,ES384",
                     jwks_allow_http_loopback=True) as client:
        yield client


def claims(**extra: Any) -> dict[str, Any]:
    body = {"iss": ISSUER, "aud": [BASE, "account"], "exp": int(time.time()) + 120,
            "sub": "svc-1", "scope": "system/Patient.rs",
            "organization": "Organization/partner-org", "purpose": ["TREAT"]}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def test_idp_tokens_by_jwks(jwks_app: TestClient, idp: dict[str, Any]) -> None:
    key = Partner("RS384")
    other = Partner("RS384")
    idp["jwks"] = key.jwks()

    def call(token: str) -> int:
        response = jwks_app.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        status: int = response.status_code
        return status

    def sign(body: dict[str, Any], alg: str = "RS256", signer: Partner = key) -> str:
        return jwt.encode(body, signer.key, algorithm=alg, headers={"kid": signer.kid})

    assert call(sign(claims())) == 200
    assert jwks_app.get("/fhir/Observation", headers={
        "Authorization": f"Bearer {sign(claims())}"}).status_code == 403
    assert call(sign(claims(aud="https://other.example/fhir"))) == 401
    assert call(sign(claims(exp=int(time.time()) - 5))) == 401
    assert call(sign(claims(organization=None))) == 401
    assert call(sign(claims(purpose=None))) == 401
    assert call(sign(claims(), alg="RS384")) == 401  # not a pinned algorithm
    assert call(jwt.encode(claims(), key.key, algorithm="RS256",
                           headers={"kid": other.kid})) == 401  # unknown kid
    assert call(sign(claims(), signer=other).replace(other.kid, key.kid)) == 401


def test_idp_tokens_by_introspection(database_url: str, idp: dict[str, Any],
                                     local: TestClient) -> None:
    idp["calls"] = 0
    with fhir_client(database_url, auth="smart", idp_issuer=ISSUER,
                     idp_introspection_url=idp["url"] + "/introspect",
                     idp_introspection_client_id="fhir", idp_introspection_client_secret="s",
                     jwks_allow_http_loopback=True) as app:
        bearer = {"Authorization": "Bearer opaque-token-1"}
        idp["introspect"] = {"active": True, **claims()}
        assert app.get("/fhir/Patient", headers=bearer).status_code == 200
        assert app.get("/fhir/Patient", headers=bearer).status_code == 200
        assert idp["calls"] == 1  # cached (at most 60 s)
        idp["introspect"] = {"active": False}
        assert app.get("/fhir/Patient", headers={
            "Authorization": "Bearer opaque-token-2"}).status_code == 401
        idp["introspect"] = {"active": True, **claims(organization=None)}
        assert app.get("/fhir/Patient", headers={
            "Authorization": "Bearer opaque-token-3"}).status_code == 401


def test_idp_purpose_claim_grants_break_the_glass(database_url: str, idp: dict[str, Any],
                                                  local: TestClient) -> None:
    """An external token's purpose claim listing ETREAT grants break the glass; the request
    still asserts it (``X-Purpose-Of-Use``), and both outcomes are audited as ETREAT."""
    key = Partner("RS384")
    idp["jwks"] = key.jwks()
    with fhir_client(database_url, auth="smart", idp_issuer=ISSUER,
                     idp_jwks_url=idp["url"] + "/jwks", idp_algorithms="RS256",
                     jwks_allow_http_loopback=True) as app:
        _break_the_glass(app, key)


def _break_the_glass(jwks_app: TestClient, key: Partner) -> None:
    from server.store.base import AuditQuery

    def call(sub: str, purpose: list[str], glass: bool) -> int:
        token = jwt.encode(claims(sub=sub, purpose=purpose), key.key, algorithm="RS256",
                           headers={"kid": key.kid})
        headers = {"Authorization": f"Bearer {token}"}
        if glass:
            headers["X-Purpose-Of-Use"] = "ETREAT"
        status: int = jwks_app.get("/fhir/Patient", headers=headers).status_code
        return status

    assert call("bg-granted", ["TREAT", "ETREAT"], glass=True) == 200
    assert call("bg-granted", ["TREAT", "ETREAT"], glass=False) == 200
    assert call("bg-refused", ["TREAT"], glass=True) == 403
    trail = jwks_app.app.state.audit
    trail.flush()
    found = trail.store.search(AuditQuery(purposes=(("ETREAT",),)))
    mine = sorted((r.client, r.status, r.purposes) for _, r in found
                  if r.client and r.client.endswith(("#bg-granted", "#bg-refused")))
    assert mine == [(f"{ISSUER}#bg-granted", 200, ("TREAT", "ETREAT")),
                    (f"{ISSUER}#bg-refused", 403, ("TREAT", "ETREAT"))]
