"""``calaim-fhir serve`` refuses non-loopback addresses without --insecure-no-auth."""

from __future__ import annotations

import subprocess

from typer.testing import CliRunner

from server.cli import app, is_loopback
from tests.cli.conftest import command


def test_serve_refuses_all_interfaces_without_flag() -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "Refusing to listen on 0.0.0.0" in result.stderr
    assert "--insecure-no-auth" in result.stderr


def test_serve_refusal_through_the_installed_command() -> None:
    completed = subprocess.run(
        [*command(), "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "Refusing to listen on 0.0.0.0" in completed.stderr


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.0.2.10")


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("serve", "load", "validate", "openapi"):
        assert name in result.stdout


def test_openapi_command_matches_the_export(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from server.openapi_export import render

    target = tmp_path / "out" / "openapi.json"
    result = CliRunner().invoke(app, ["openapi", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == render()
