"""The token endpoint, check by check (SMART backend services, RFC 6749 §5.2 errors), and
what a token then opens: discovery without a token, 401 with WWW-Authenticate without one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import BASE, TestClient, outcome

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def rs(database_url: str, tmp: Path, smart: TestClient) -> Partner:
    partner = Partner("RS384")
    partner.register(database_url, tmp, scope="system/Patient.rs system/Observation.cruds",
                     organization=ORGANIZATION)
    return partner


@pytest.fixture(scope="module")
def es(database_url: str, tmp: Path, smart: TestClient) -> Partner:
    partner = Partner("ES384")
    partner.register(database_url, tmp, scope="system/*.rs", organization=ORGANIZATION)
    return partner


def ask(client: TestClient, form: dict[str, str]) -> Any:
    return client.post("/fhir/auth/token", data=form, headers=FORM)


def refused(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["error_description"]
    return body


def test_discovery_answers_without_a_token_as_json_whatever_the_accept(smart: TestClient
                                                                       ) -> None:
    for accept in ("application/fhir+xml", "text/html", "*/*"):
        response = smart.get("/fhir/.well-known/smart-configuration", headers={"Accept": accept})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["access-control-allow-origin"] == "*"
    config = response.json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["grant_types_supported"] == [
        "authorization_code", "client_credentials", "refresh_token"]
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    # exactly what is built: backend services and the standalone launch
    assert set(config["capabilities"]) == {
        "client-confidential-asymmetric", "client-public", "launch-standalone",
        "context-standalone-patient", "permission-offline", "permission-online",
        "permission-patient", "permission-user", "permission-v1", "permission-v2",
        "sso-openid-connect"}
    assert config["scopes_supported"]
    statement = smart.get("/fhir/metadata").json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert {"url": "token", "valueUri": TOKEN_URL} in uris["extension"]
    assert {"url": "authorize", "valueUri": BASE + "/auth/authorize"} in uris["extension"]
    assert smart.get("/").status_code == 200
    keys = smart.get("/fhir/auth/jwks").json()["keys"]
    assert keys and all("d" not in key and key["kty"] == "RSA" for key in keys)


@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/_history?_count=1000",
                                  "/fhir/Patient/x", "/openapi.json", "/fhir"])
def test_every_other_request_without_a_valid_token_is_401(smart: TestClient, path: str
                                                          ) -> None:
    for headers in ({}, {"Authorization": "Bearer junk"}, {"Authorization": "Basic abc"}):
        response = smart.get(path, headers=headers)
        assert response.status_code == 401, (path, headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        outcome(response)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_signed_assertion_gets_a_token_that_reads(
    smart: TestClient, rs: Partner, es: Partner, alg: str, local: TestClient
) -> None:
    partner = rs if alg == "RS384" else es
    response = ask(smart, token_form(partner.assertion(TOKEN_URL), "system/Patient.read"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.rs"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    local.put("/fhir/Patient/tok1", json={"resourceType": "Patient", "id": "tok1"},
              headers={"Content-Type": "application/fhir+json"})
    assert smart.get("/fhir/Patient/tok1", headers=bearer).status_code == 200
    assert smart.get("/fhir/Patient", headers=bearer).status_code == 200
    denied = smart.get("/fhir/Observation", headers=bearer)
    assert denied.status_code == 403
    outcome(denied)


def test_client_id_field_must_match(smart: TestClient, rs: Partner) -> None:
    ok = ask(smart, token_form(rs.assertion(TOKEN_URL), "system/Patient.rs",
                               client_id=rs.client_id))
    assert ok.status_code == 200
    refused(ask(smart, token_form(rs.assertion(TOKEN_URL), "system/Patient.rs",
                                  client_id="someone-else")), 401, "invalid_client")


def _other_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


CASES: dict[str, Any] = {
    "signature by another key": lambda p: p.assertion(TOKEN_URL, key=_other_key()),
    "aud another URL": lambda p: p.assertion("https://elsewhere.example/token"),
    "aud from the Host header": lambda p: p.assertion("http://evil.example/fhir/auth/token"),
    "iss not sub": lambda p: p.assertion(TOKEN_URL, sub="other"),
    "unknown client": lambda p: p.assertion(TOKEN_URL, iss="nobody", sub="nobody"),
    "no exp": lambda p: p.assertion(TOKEN_URL, drop=("exp",)),
    "exp past the leeway": lambda p: p.assertion(TOKEN_URL, exp=int(time.time()) - 120),
    "exp over 300 s ahead": lambda p: p.assertion(TOKEN_URL, exp=int(time.time()) + 600),
    "nbf in the future": lambda p: p.assertion(TOKEN_URL, nbf=int(time.time()) + 120),
    "iat in the future": lambda p: p.assertion(TOKEN_URL, iat=int(time.time()) + 120),
    "no jti": lambda p: p.assertion(TOKEN_URL, drop=("jti",)),
    "unknown kid": lambda p: p.assertion(TOKEN_URL, headers={"kid": "not-registered"}),
    "jku not registered": lambda p: p.assertion(
        TOKEN_URL, headers={"jku": "https://attacker.example/jwks"}),
    "x5u header": lambda p: p.assertion(TOKEN_URL, headers={"x5u": "https://a.example/c"}),
    "alg RS256 not allowed for this client": lambda p: p.assertion(TOKEN_URL, alg="RS256"),
    "alg HS256 with the public key as secret": lambda p: jwt.encode(
        {"iss": p.client_id, "sub": p.client_id, "aud": TOKEN_URL,
         "exp": int(time.time()) + 60, "jti": "hs"},
        b"a-shared-secret-that-is-long-enough-for-hs256", algorithm="HS256",
        headers={"kid": p.kid}),
    "alg none": lambda p: jwt.encode(
        {"iss": p.client_id, "sub": p.client_id, "aud": TOKEN_URL,
         "exp": int(time.time()) + 60, "jti": "none"}, None, algorithm="none",
        headers={"kid": p.kid}),
    "not a JWT": lambda p: "not.a.jwt",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_failed_client_authentication_is_401_invalid_client(
    smart: TestClient, rs: Partner, case: str
) -> None:
    assertion = CASES[case](rs)
    refused(ask(smart, token_form(assertion, "system/Patient.rs")), 401, "invalid_client")


def test_a_replayed_jti_is_refused(smart: TestClient, rs: Partner) -> None:
    assertion = rs.assertion(TOKEN_URL)
    assert ask(smart, token_form(assertion, "system/Patient.rs")).status_code == 200
    refused(ask(smart, token_form(assertion, "system/Patient.rs")), 401, "invalid_client")
    # the same jti in a new assertion too
    again = rs.assertion(TOKEN_URL, jti=jwt.decode(assertion, options={
        "verify_signature": False})["jti"])
    refused(ask(smart, token_form(again, "system/Patient.rs")), 401, "invalid_client")


def test_leeway_accepts_a_small_skew(smart: TestClient, rs: Partner) -> None:
    skewed = rs.assertion(TOKEN_URL, exp=int(time.time()) - 10, iat=int(time.time()) + 10)
    assert ask(smart, token_form(skewed, "system/Patient.rs")).status_code == 200


def test_grant_type_and_client_authentication_errors(smart: TestClient, rs: Partner) -> None:
    for unsupported in ("password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"):
        refused(ask(smart, {**token_form(rs.assertion(TOKEN_URL), "system/Patient.rs"),
                            "grant_type": unsupported}), 400, "unsupported_grant_type")
    # supported since the standalone launch: without a code it is a malformed request
    refused(ask(smart, {**token_form(rs.assertion(TOKEN_URL), "system/Patient.rs"),
                        "grant_type": "authorization_code"}), 400, "invalid_request")
    refused(ask(smart, {"grant_type": "client_credentials", "scope": "system/Patient.rs"}),
            401, "invalid_client")
    refused(ask(smart, {"scope": "system/Patient.rs"}), 400, "invalid_request")


@pytest.mark.parametrize(
    "scope",
    [
        "system/Patient.rs?gender=female",
        "system/Observation.rs?status=final",
        "system/Observation.rs?code:text=glucose",
        "patient/Patient.rs",
        "system/Patient.sr",
        "system/Patient.cruds.x",
        "system/Encounter.rs",  # not registered for this client: nothing to grant
        "openid fhirUser",
        "",
    ],
)
def test_a_bad_or_unenforceable_scope_is_invalid_scope(smart: TestClient, rs: Partner,
                                                       scope: str) -> None:
    refused(ask(smart, token_form(rs.assertion(TOKEN_URL), scope)), 400, "invalid_scope")


def test_a_scope_wider_than_registered_is_granted_as_a_subset(smart: TestClient, rs: Partner
                                                              ) -> None:
    response = ask(smart, token_form(rs.assertion(TOKEN_URL),
                                     "system/Patient.cruds launch/patient system/Encounter.r"))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.rs"


def test_a_token_for_another_server_or_expired_is_refused(smart: TestClient, rs: Partner
                                                          ) -> None:
    body = ask(smart, token_form(rs.assertion(TOKEN_URL), "system/Patient.rs")).json()
    header, payload, signature = body["access_token"].split(".")
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    response = smart.get("/fhir/Patient", headers={"Authorization": f"Bearer {tampered}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_revocation_stops_tokens_at_the_next_request(
    smart: TestClient, database_url: str, tmp: Path
) -> None:
    from typer.testing import CliRunner

    from server.cli import app as cli

    partner = Partner("ES384")
    partner.register(database_url, tmp, scope="system/Patient.rs", organization=ORGANIZATION)
    token = ask(smart, token_form(partner.assertion(TOKEN_URL), "system/Patient.rs")).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert smart.get("/fhir/Patient", headers=bearer).status_code == 200
    listed = CliRunner().invoke(cli, ["client", "list", "--database-url", database_url])
    assert partner.client_id in listed.stdout
    result = CliRunner().invoke(
        cli, ["client", "revoke", partner.client_id, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert smart.get("/fhir/Patient", headers=bearer).status_code == 401
    refused(ask(smart, token_form(partner.assertion(TOKEN_URL), "system/Patient.rs")),
            401, "invalid_client")


def test_registration_errors(database_url: str, tmp: Path, smart: TestClient) -> None:
    from typer.testing import CliRunner

    from server.cli import app as cli

    partner = Partner()
    jwks = tmp / "reg.json"
    jwks.write_text('{"keys": [' + __import__("json").dumps(partner.jwk) + "]}")
    base = ["client", "add", "--name", "x", "--database-url", database_url,
            "--jwks-file", str(jwks)]
    for args, message in [
        (["--scope", "system/*.rs", "--organization", "Organization/missing"], "does not exist"),
        (["--scope", "system/*.rs"], "--organization is required"),
        (["--scope", "system/*.rs?category=x|y", "--organization", ORGANIZATION], "granular"),
        (["--scope", "system/Patient.rs?category=x|y", "--organization", ORGANIZATION],
         "cannot be enforced"),
        (["--scope", "system/Observation.rs?status=final", "--organization", ORGANIZATION],
         "granular"),
        (["--scope", "system/*.rs", "--organization", ORGANIZATION, "--purpose", "FUN"],
         "Unknown purpose"),
        (["--scope", "system/*.rs", "--role", "root"], "--role"),
    ]:
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    secret = tmp / "secret.json"
    secret.write_text('{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}')
    result = CliRunner().invoke(cli, ["client", "add", "--name", "x", "--database-url",
                                      database_url, "--jwks-file", str(secret), "--scope",
                                      "system/*.rs", "--role", "admin"])
    assert result.exit_code == 2 and "secret" in result.stderr
    admin = CliRunner().invoke(cli, [*base, "--scope", "system/*.cruds", "--role", "admin"])
    assert admin.exit_code == 0, admin.output
    assert BASE  # the base the token URL is computed from
