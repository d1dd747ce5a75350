"""Secure by default: ``create_app`` has authentication on unless told otherwise; with it
off, only loopback requests are answered; the CLI's loopback default turns it off and says
so; ``--auth smart`` wants an https base URL off loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.app import create_app
from server.cli import app as cli
from server.settings import Settings
from tests.support import TestClient, outcome, sqlite_url


def _app(tmp_path: Path, **values: object) -> TestClient:
    settings = Settings(database_url=sqlite_url(tmp_path / "d.db"), **values)  # type: ignore[arg-type]
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_create_app_defaults_to_authentication_on(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALAIM_FHIR_AUTH", raising=False)
    assert Settings().auth == "smart"
    with _app(tmp_path) as client:
        response = client.get("/fhir/Patient")
        assert response.status_code == 401
        outcome(response)


def test_care_relationships_are_on_by_default_and_off_only_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With authentication on, care relationships narrow every partner unless an operator
    sets ``CALAIM_FHIR_ACCESS_RELATIONSHIPS=false``; with authentication off the setting has
    no policy to add (every request is the local operator's)."""
    from server.app import access_policies
    from server.auth.relationships import RelationshipPolicy
    from server.services import build_search_service

    monkeypatch.delenv("CALAIM_FHIR_ACCESS_RELATIONSHIPS", raising=False)
    assert Settings().access_relationships is True
    search = build_search_service(Settings()).context
    kinds = [type(p) for p in access_policies(Settings(auth="smart"), search)]
    assert RelationshipPolicy in kinds
    off = access_policies(Settings(auth="smart", access_relationships=False), search)
    assert RelationshipPolicy not in [type(p) for p in off]
    assert access_policies(Settings(auth="off"), search) == ()
    monkeypatch.setenv("CALAIM_FHIR_ACCESS_RELATIONSHIPS", "false")
    assert Settings().access_relationships is False


@pytest.mark.parametrize(
    ("client", "server", "status"),
    [
        (("127.0.0.1", 5000), ("127.0.0.1", 8080), 200),
        (("::1", 5000), ("::1", 8080), 200),
        (("10.1.2.3", 5000), ("127.0.0.1", 8080), 403),
        (("127.0.0.1", 5000), ("192.0.2.10", 8080), 403),
        (("testclient", 5000), ("testserver", 80), 403),
        (None, None, 403),
    ],
)
def test_authentication_off_answers_loopback_only(
    tmp_path: Path, client: object, server: object, status: int
) -> None:
    app = create_app(Settings(database_url=sqlite_url(tmp_path / "d.db"), auth="off"))

    async def addressed(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] == "http":
            scope = {**scope, "client": client, "server": server}
        await app(scope, receive, send)  # type: ignore[arg-type]

    with TestClient(addressed, raise_server_exceptions=False) as http:
        response = http.get("/fhir/metadata")
        assert response.status_code == status, response.text
        if status == 403:
            assert "loopback" in outcome(response)["issue"][0]["diagnostics"]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` hands its settings to workers through the environment: restored after
    (monkeypatch puts back what each name held, or removes it)."""
    for name in ("HOST", "PORT", "WORKERS", "AUTH", "INSECURE_NO_AUTH", "DATABASE_URL",
                 "BASE_URL"):
        monkeypatch.delenv(f"CALAIM_FHIR_{name}", raising=False)


@pytest.mark.usefixtures("environment")
def test_cli_loopback_default_says_authentication_is_off(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:  # a port in use: serve stops after its start-up notes
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port), "--database-url",
                                          sqlite_url(tmp_path / "x.db")])
    assert result.exit_code == 1, result.output
    assert "authentication is off" in result.stderr


@pytest.mark.usefixtures("environment")
def test_auth_off_on_all_interfaces_is_refused_without_the_flag() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--auth", "off"])
    assert result.exit_code == 2
    assert "Refusing to listen on 0.0.0.0" in result.stderr


@pytest.mark.usefixtures("environment")
def test_auth_smart_refuses_a_non_https_base_off_loopback() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--auth", "smart",
                                      "--base-url", "http://fhir.example.org/fhir"])
    assert result.exit_code == 2
    assert "non-https base URL" in result.stderr
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--auth", "smart"])
    assert result.exit_code == 2
