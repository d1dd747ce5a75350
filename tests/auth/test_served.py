"""SMART on real servers: ``calaim-fhir serve --auth smart`` with two worker processes
(revocation stops tokens at the next request on every worker), ``fhirclient`` obtaining a
backend-services token and reading a resource, and ``uvicorn --factory`` with authentication
off refusing requests that do not come from a loopback address."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from server.cli import app as cli
from tests.auth.partners import Partner, token_form
from tests.cli.conftest import command, free_port, running
from tests.support import fhir_client, sqlite_url

pytestmark = pytest.mark.slow

#: these servers' subject is the tokens (issue, revocation, renewal) and what their scopes
#: reach: care relationships, on by default, are turned off explicitly
SCOPES_ALONE = {"CALAIM_FHIR_ACCESS_RELATIONSHIPS": "false"}


def _served(tmp_path: Path, alg: str, *extra: str) -> tuple[Partner, str, list[str], str]:
    """A SQLite store with Organization/o1 and Patient/p1, a partner registered for
    system/Patient.rs, and the ``serve --auth smart`` command on a free port: (partner,
    database URL, command, FHIR base)."""
    database_url = sqlite_url(tmp_path / f"{alg}.db")
    _organization(database_url)
    partner = Partner(alg)
    partner.register(database_url, tmp_path, scope="system/Patient.rs",
                     organization="Organization/o1")
    port = free_port()
    args = [*command(), "serve", "--auth", "smart", "--port", str(port),
            "--database-url", database_url, *extra]
    return partner, database_url, args, f"http://127.0.0.1:{port}/fhir"


def _organization(database_url: str) -> None:
    with fhir_client(database_url) as local:
        local.put("/fhir/Organization/o1", json={"resourceType": "Organization", "id": "o1"},
                  headers={"Content-Type": "application/fhir+json"})
        local.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1",
                                            "name": [{"family": "Served"}]},
                  headers={"Content-Type": "application/fhir+json"})


def test_revocation_is_effective_at_the_next_request_on_both_workers(tmp_path: Path) -> None:
    partner, database_url, args, base = _served(tmp_path, "ES384", "--workers", "2")
    with running(args, tmp_path / "two.log", f"{base}/metadata", timeout=60, env=SCOPES_ALONE):
        token = httpx.post(f"{base}/auth/token", data=token_form(
            partner.assertion(f"{base}/auth/token"), "system/Patient.rs")).json()
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        # a new connection per request: the kernel spreads them over both workers
        before = [httpx.get(f"{base}/Patient/p1", headers=bearer) for _ in range(20)]
        assert [r.status_code for r in before] == [200] * 20, (
            [r.text for r in before if r.status_code != 200],
            (tmp_path / "two.log").read_text(errors="replace"))
        result = CliRunner().invoke(cli, ["client", "revoke", partner.client_id,
                                          "--database-url", database_url])
        assert result.exit_code == 0, result.output
        statuses = [httpx.get(f"{base}/Patient/p1", headers=bearer).status_code
                    for _ in range(20)]
        assert statuses == [401] * 20


def test_fhirclient_gets_a_backend_services_token_and_reads(tmp_path: Path) -> None:
    from fhirclient import client
    from fhirclient.models.patient import Patient

    partner, _, args, base = _served(tmp_path, "RS384")
    with running(args, tmp_path / "fc.log", f"{base}/metadata", timeout=60, env=SCOPES_ALONE):
        smart = client.FHIRClient(settings={
            "app_id": partner.client_id,
            "api_base": base,
            "scope": "system/Patient.rs",
            "jwt_token": partner.assertion(f"{base}/auth/token"),
        }, save_func=lambda state: None)
        smart.wants_patient = False
        smart.prepare()
        smart.authorize()
        assert smart.ready
        patient = Patient.read("p1", smart.server)
        assert patient.name[0].family == "Served"


def test_uvicorn_factory_with_auth_off_refuses_non_loopback_clients(tmp_path: Path) -> None:
    database_url = sqlite_url(tmp_path / "off.db")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app",
            "--host", "0.0.0.0", "--port", str(port)]
    env = {"CALAIM_FHIR_AUTH": "off", "CALAIM_FHIR_DATABASE_URL": database_url}
    with running(args, tmp_path / "off.log", f"{origin}/fhir/metadata", env=env, timeout=60):
        assert httpx.get(f"{origin}/fhir/Patient").status_code == 200
        # what a reverse proxy on this host forwards from elsewhere (uvicorn trusts
        # 127.0.0.1's X-Forwarded-For by default): the client is not loopback
        forwarded = httpx.get(f"{origin}/fhir/Patient",
                              headers={"X-Forwarded-For": "203.0.113.7"})
        assert forwarded.status_code == 403
        assert forwarded.json()["resourceType"] == "OperationOutcome"
        assert "loopback" in forwarded.text


def test_uvicorn_factory_without_settings_has_authentication_on(tmp_path: Path) -> None:
    database_url = sqlite_url(tmp_path / "on.db")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app",
            "--host", "127.0.0.1", "--port", str(port)]
    with running(args, tmp_path / "on.log", f"{origin}/fhir/metadata",
                 env={"CALAIM_FHIR_DATABASE_URL": database_url}, timeout=60):
        response = httpx.get(f"{origin}/fhir/Patient")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{origin}/fhir/.well-known/smart-configuration").status_code == 200


def _private_jwk(partner: Partner, path: Path) -> Path:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    algorithm = RSAAlgorithm if partner.alg.startswith("RS") else ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(partner.key))
    jwk["kid"] = partner.kid
    path.write_text(json.dumps(jwk))
    return path


def test_load_url_authenticates_as_a_registered_client(tmp_path: Path) -> None:
    """``calaim-fhir load --url`` against ``--auth smart``: without credentials it stops at
    the first 401 and says what to give; with ``--client-id`` and ``--private-key`` (a JWK,
    or a PEM with ``--key-id``) it gets its own token and loads; ``--token`` sends one."""
    from cryptography.hazmat.primitives import serialization

    database_url = sqlite_url(tmp_path / "load.db")
    _organization(database_url)
    loader = Partner("ES384")
    loader.register(database_url, tmp_path, scope="system/*.cruds", role="admin")
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    args = [*command(), "serve", "--auth", "smart", "--port", str(port),
            "--database-url", database_url]
    data = Path("examples/bundles/care-plan-and-team.json")
    with running(args, tmp_path / "load.log", f"{base}/metadata", timeout=60):
        refused = CliRunner().invoke(cli, ["load", "--url", base, "-q", str(data)])
        assert refused.exit_code == 1
        assert "requires an access token" in refused.output
        assert "--client-id" in refused.output
        jwk = _private_jwk(loader, tmp_path / "loader.jwk.json")
        loaded = CliRunner().invoke(cli, ["load", "--url", base, "--client-id",
                                          loader.client_id, "--private-key", str(jwk), str(data)])
        assert loaded.exit_code == 0, loaded.output
        assert " 0 failed" in loaded.output
        pem = tmp_path / "loader.pem"
        pem.write_bytes(loader.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        again = CliRunner().invoke(cli, ["load", "--url", base, "-q", "--client-id",
                                         loader.client_id, "--private-key", str(pem),
                                         "--key-id", loader.kid, str(data)])
        assert again.exit_code == 0, again.output
        token = httpx.post(f"{base}/auth/token", data=token_form(
            loader.assertion(f"{base}/auth/token"), "system/*.cruds")).json()["access_token"]
        with_token = CliRunner().invoke(cli, ["load", "--url", base, "-q", "--token", token,
                                              str(data)])
        assert with_token.exit_code == 0, with_token.output
        wrong = CliRunner().invoke(cli, ["load", "--url", base, "-q", "--client-id",
                                         "nobody", "--private-key", str(jwk), str(data)])
        assert wrong.exit_code == 1
        assert "invalid_client" in wrong.output


def test_backend_services_auth_renews_its_token_before_expiry(tmp_path: Path) -> None:
    """The loader's ``httpx.Auth`` gets one token, reuses it, and gets a new one once the
    old is within 30 s of its expiry (an injected clock; tokens of 40 s, so the assertion
    signed at the advanced time stays within the server's leeway)."""
    from server.smart_client import BackendServices, load_private_key

    partner, _, args, base = _served(tmp_path, "RS384")
    key, kid, algorithm = load_private_key(_private_jwk(partner, tmp_path / "k.json"))
    assert (kid, algorithm) == (partner.kid, "RS384")
    now = [time.time()]
    auth = BackendServices(base, partner.client_id, key, kid, algorithm, "system/Patient.rs",
                           clock=lambda: now[0])
    asked: list[str] = []

    def seen(request: httpx.Request) -> None:
        asked.append(request.url.path)

    with running(args, tmp_path / "renew.log", f"{base}/metadata", timeout=60,
                 env={**SCOPES_ALONE, "CALAIM_FHIR_TOKEN_LIFETIME_SECONDS": "40"}), \
            httpx.Client(auth=auth, event_hooks={"request": [seen]}) as http:
        assert http.get(f"{base}/Patient/p1").status_code == 200
        assert http.get(f"{base}/Patient/p1").status_code == 200
        assert asked.count("/fhir/auth/token") == 1
        now[0] += 5
        assert http.get(f"{base}/Patient/p1").status_code == 200
        assert asked.count("/fhir/auth/token") == 1
        now[0] += 10
        assert http.get(f"{base}/Patient/p1").status_code == 200
        assert asked.count("/fhir/auth/token") == 2
