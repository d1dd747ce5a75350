"""``calaim-fhir serve`` refuses non-loopback addresses without --insecure-no-auth."""

from __future__ import annotations

import subprocess
import time

import httpx
from typer.testing import CliRunner

from server.cli import app, is_loopback
from tests.cli.conftest import Server, command


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


def test_serve_says_when_it_is_ready_and_what_to_do_next(server: Server) -> None:
    deadline = time.monotonic() + 10
    while "ready at" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    output = server.log.read_text()
    assert f"calaim-fhir: ready at {server.base}" in output, output
    assert f"calaim-fhir load --url {server.base} examples/bundles" in output
    assert output.index("starting") < output.index("ready at")


def test_serve_on_a_port_in_use_says_so_and_how_to_go_on(server: Server) -> None:
    result = subprocess.run(
        [*command(), "serve", "--port", str(server.port)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr, result.stderr
    assert f"--port {server.port + 1}" in result.stderr
    assert "calaim-fhir: starting" not in result.stderr and "ready at" not in result.stderr


def test_the_root_page_names_the_base_the_capability_statement_and_openapi(server: Server
                                                                          ) -> None:
    origin = server.base.removesuffix("/fhir")
    page = httpx.get(origin + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert server.base in page.text
    assert f"{server.base}/metadata" in page.text
    assert f"{origin}/openapi.json" in page.text
    assert "docs/" in page.text
    assert httpx.get(f"{origin}/openapi.json", timeout=10).status_code == 200
