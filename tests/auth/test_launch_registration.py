"""Launch apps and users, through the CLI on both stores (the exact forms of "Partner apps"):
``client add … --redirect-uri URI [--redirect-uri URI…] (--public | --jwks-url | --jwks-file)``
and ``user add --username U --practitioner-role PractitionerRole/ID`` (password on standard
input), ``user disable|enable U``, ``user reset-password U``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from server.auth.users import verify
from server.cli import app as cli
from server.search.service import build_search_service
from server.settings import Settings
from server.store.sql.opening import open_store
from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import FHIR_JSON, TestClient

PASSWORD = "correct horse battery staple"
APP = "https://app.example.org/callback"


@pytest.fixture(scope="module")
def roles(local: TestClient) -> None:
    for resource in (
        {"resourceType": "Practitioner", "id": "cw1"},
        {"resourceType": "PractitionerRole", "id": "cw1-role",
         "practitioner": {"reference": "Practitioner/cw1"},
         "organization": {"reference": ORGANIZATION}},
        {"resourceType": "PractitionerRole", "id": "no-org",
         "practitioner": {"reference": "Practitioner/cw1"}},
    ):
        response = local.put(f"/fhir/{resource['resourceType']}/{resource['id']}",
                             json=resource, headers={"Content-Type": FHIR_JSON})
        assert response.status_code in (200, 201), response.text


def _run(database_url: str, *args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, [*args, "--database-url", database_url], input=input)


def _stored_user(database_url: str, username: str) -> Any:
    settings = Settings(database_url=database_url)
    repo = open_store(settings, build_search_service(settings))
    try:
        return repo.auth.user(username)
    finally:
        repo.close()


# -- launch apps ---------------------------------------------------------------------------


def test_a_public_launch_app_is_registered_with_its_redirect_uris(
    database_url: str, local: TestClient
) -> None:
    result = _run(database_url, "client", "add", "--name", "Caseworker app",
                  "--organization", ORGANIZATION,
                  "--scope", "openid fhirUser launch/patient offline_access patient/*.rs "
                  "user/Patient.rs",
                  "--redirect-uri", APP, "--redirect-uri", "http://127.0.0.1:8765/cb",
                  "--public")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["client_id"]
    assert printed["public"] is True
    assert printed["redirect_uris"] == [APP, "http://127.0.0.1:8765/cb"]
    assert printed["scope"] == ("openid fhirUser launch/patient offline_access "
                                "patient/*.rs user/Patient.rs")
    listed = [json.loads(line) for line in
              _run(database_url, "client", "list").stdout.splitlines()]
    assert any(c["client_id"] == printed["client_id"] and c["public"] for c in listed)


def test_a_confidential_launch_app_registers_its_keys(
    database_url: str, local: TestClient, tmp_path: Path
) -> None:
    partner = Partner("ES384")
    jwks = tmp_path / "app.jwks.json"
    jwks.write_text(json.dumps(partner.jwks()))
    result = _run(database_url, "client", "add", "--name", "EHR app", "--organization",
                  ORGANIZATION, "--scope", "patient/Observation.rs launch/patient",
                  "--redirect-uri", APP, "--jwks-file", str(jwks))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["public"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--public", "--redirect-uri", "http://app.example.org/cb"], "https"),
        (["--public", "--redirect-uri", "https://app.example.org/cb#x"], "fragment"),
        (["--public", "--redirect-uri", "/callback"], "absolute"),
        (["--public"], "--redirect-uri"),
        (["--public", "--redirect-uri", APP, "--jwks-url", "https://app.example.org/jwks"],
         "one of --public"),
        (["--redirect-uri", APP], "one of --public"),
    ],
)
def test_launch_registrations_refused(
    database_url: str, local: TestClient, args: list[str], message: str
) -> None:
    result = _run(database_url, "client", "add", "--name", "x", "--organization",
                  ORGANIZATION, "--scope", "patient/*.rs", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_launch_app_needs_an_organization(database_url: str, local: TestClient) -> None:
    result = _run(database_url, "client", "add", "--name", "x", "--role", "admin",
                  "--scope", "patient/*.rs", "--redirect-uri", APP, "--public")
    assert result.exit_code == 2
    assert "--organization" in result.output


def test_backend_services_still_refuse_patient_and_launch_scopes(
    database_url: str, local: TestClient, tmp_path: Path
) -> None:
    jwks = tmp_path / "b.jwks.json"
    jwks.write_text(json.dumps(Partner().jwks()))
    for scope in ("patient/*.rs", "system/*.rs launch/patient", "system/*.rs openid"):
        result = _run(database_url, "client", "add", "--name", "b", "--organization",
                      ORGANIZATION, "--scope", scope, "--jwks-file", str(jwks))
        assert result.exit_code == 2, scope


def test_a_public_app_cannot_use_client_credentials(
    database_url: str, smart: TestClient
) -> None:
    result = _run(database_url, "client", "add", "--name", "p", "--organization",
                  ORGANIZATION, "--scope", "user/Patient.rs", "--redirect-uri", APP, "--public")
    assert result.exit_code == 0, result.output
    app = Partner()
    app.client_id = json.loads(result.stdout)["client_id"]
    response = smart.post(TOKEN_URL, data=token_form(app.assertion(TOKEN_URL),
                                                     "user/Patient.rs"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# -- users ---------------------------------------------------------------------------------


def test_user_add_hashes_the_password_read_from_standard_input(
    database_url: str, roles: None
) -> None:
    result = _run(database_url, "user", "add", "--username", "Casey.Worker@Example.org",
                  "--practitioner-role", "PractitionerRole/cw1-role", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == {"username": "casey.worker@example.org",
                       "practitioner_role": "PractitionerRole/cw1-role",
                       "organization": ORGANIZATION, "practitioner": "Practitioner/cw1",
                       "status": "active"}
    assert PASSWORD not in result.output
    stored = _stored_user(database_url, "casey.worker@example.org")
    assert stored.password_hash.startswith("scrypt$32768$8$1$")
    assert PASSWORD not in stored.password_hash
    assert verify(PASSWORD, stored.password_hash)
    assert not verify(PASSWORD + "x", stored.password_hash)
    again = _run(database_url, "user", "add", "--username", "casey.worker@example.org",
                 "--practitioner-role", "PractitionerRole/cw1-role", input=PASSWORD)
    assert again.exit_code == 2
    assert "taken" in again.output


@pytest.mark.parametrize(
    ("username", "role", "password", "message"),
    [
        ("u1", "PractitionerRole/missing", PASSWORD, "does not exist"),
        ("u1", "PractitionerRole/no-org", PASSWORD, "names no organization"),
        ("u1", "Practitioner/cw1", PASSWORD, "PractitionerRole/ID"),
        ("u1", "PractitionerRole/cw1-role", "short", "at least 12"),
        ("u1", "PractitionerRole/cw1-role", "", "at least 12"),
        ("bad name", "PractitionerRole/cw1-role", PASSWORD, "username"),
    ],
)
def test_user_add_refusals(
    database_url: str, roles: None, username: str, role: str, password: str, message: str
) -> None:
    result = _run(database_url, "user", "add", "--username", username,
                  "--practitioner-role", role, input=password)
    assert result.exit_code == 2
    assert message in result.output
    assert _stored_user(database_url, "u1") is None


def test_disable_enable_and_reset_password(database_url: str, roles: None) -> None:
    assert _run(database_url, "user", "add", "--username", "u2", "--practitioner-role",
                "PractitionerRole/cw1-role", input=PASSWORD).exit_code == 0
    assert _run(database_url, "user", "disable", "U2").exit_code == 0
    assert _stored_user(database_url, "u2").status == "disabled"
    assert _run(database_url, "user", "enable", "u2").exit_code == 0
    assert _stored_user(database_url, "u2").status == "active"
    new = "another long passphrase"
    assert _run(database_url, "user", "reset-password", "u2", input=new + "\r\n").exit_code == 0
    stored = _stored_user(database_url, "u2")
    assert verify(new, stored.password_hash) and not verify(PASSWORD, stored.password_hash)
    short = _run(database_url, "user", "reset-password", "u2", input="short")
    assert short.exit_code == 2
    assert verify(new, _stored_user(database_url, "u2").password_hash)
    for command in ("disable", "enable"):
        missing = _run(database_url, "user", command, "nobody")
        assert missing.exit_code == 1
        assert "no user" in missing.output
    assert _run(database_url, "user", "reset-password", "nobody",
                input=PASSWORD).exit_code == 1


def test_an_unknown_user_costs_the_same_work_and_fails() -> None:
    assert verify(PASSWORD, None) is False
