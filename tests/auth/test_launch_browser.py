"""The whole standalone launch in headless Chromium against a real ``serve --auth smart``:
the user signs in, approves, picks a member; the app exchanges the code, reads that member
and is refused another. Then the ``fhirclient`` library completes a launch the same way
(the browser step driven here). The screenshots of the login and approval pages in
``docs/`` are taken by this run."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from server.cli import app as cli
from tests.auth.webdriver import Browser, chromium
from tests.cli.conftest import command, free_port, running
from tests.support import FHIR_JSON, fhir_client, sqlite_url

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORD = "correct horse battery staple"
SCOPE = "openid fhirUser launch/patient patient/*.rs"


class _App(http.server.BaseHTTPRequestHandler):
    """The app's redirect target: a page saying the browser came back."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = b"<!doctype html><title>App</title><p>Back in the app.</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the URL carries the code."""


def _cli(*args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("launch")
    database_url = sqlite_url(tmp / "launch.db")
    with fhir_client(database_url) as local:
        for resource in (
            {"resourceType": "Organization", "id": "cbo", "name": "Community Org"},
            {"resourceType": "Practitioner", "id": "cw1", "name": [{"family": "Worker"}]},
            {"resourceType": "PractitionerRole", "id": "cw1-role",
             "practitioner": {"reference": "Practitioner/cw1"},
             "organization": {"reference": "Organization/cbo"}},
            {"resourceType": "Patient", "id": "m1",
             "name": [{"given": ["Ana"], "family": "Mora"}], "birthDate": "1980-02-03"},
            {"resourceType": "Patient", "id": "m2",
             "name": [{"given": ["Ben"], "family": "Diaz"}], "birthDate": "1975-11-20"},
        ):
            response = local.put(f"/fhir/{resource['resourceType']}/{resource['id']}",
                                 json=resource, headers={"Content-Type": FHIR_JSON})
            assert response.status_code in (200, 201), response.text
    app_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app_server.serve_forever, daemon=True).start()
    redirect = f"http://127.0.0.1:{app_server.server_address[1]}/callback"
    client_id = json.loads(_cli(
        "client", "add", "--name", "Caseworker app", "--organization", "Organization/cbo",
        "--scope", SCOPE, "--redirect-uri", redirect, "--public",
        "--database-url", database_url).stdout)["client_id"]
    _cli("user", "add", "--username", "casey", "--practitioner-role",
         "PractitionerRole/cw1-role", "--database-url", database_url, input=PASSWORD)
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    args = [*command(), "serve", "--auth", "smart", "--port", str(port),
            "--database-url", database_url]
    try:
        # the subject is the launch itself: what the user's scopes reach, care relationships
        # (on by default) turned off explicitly
        with running(args, tmp / "serve.log", f"{base}/metadata", timeout=60,
                     env={"CALAIM_FHIR_ACCESS_RELATIONSHIPS": "false"}), \
                chromium(free_port(), tmp / "chromedriver.log") as browser:
            yield {"base": base, "client_id": client_id, "redirect": redirect,
                   "browser": browser, "log": tmp / "serve.log"}
    finally:
        app_server.shutdown()
        app_server.server_close()


def _sign_in_and_approve(browser: Browser, url: str, redirect: str,
                         screenshots: bool = False) -> str:
    browser.go(url)
    assert "Sign in" in browser.text
    browser.type("#username", "casey")
    browser.type("#password", PASSWORD)
    if screenshots:
        browser.screenshot(DOCS / "launch-login.png")
    browser.click('button[type="submit"]')
    page = browser.wait_for_text("Allow the app?")
    assert "Allow the app?" in page, page
    assert "Ana Mora, born 1980-02-03" in page and "Ben Diaz" in page
    browser.click("#m-m1")
    if screenshots:
        browser.screenshot(DOCS / "launch-approval.png")
    browser.click('button[value="approve"]')
    return browser.wait_for_url(redirect)


def test_the_standalone_launch_in_chromium(served: dict[str, Any]) -> None:
    base, redirect = served["base"], served["redirect"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    url = f"{base}/auth/authorize?" + urlencode({
        "response_type": "code", "client_id": served["client_id"], "redirect_uri": redirect,
        "scope": SCOPE, "state": "browser-state", "aud": base, "code_challenge": challenge,
        "code_challenge_method": "S256"})
    back = _sign_in_and_approve(served["browser"], url, redirect, screenshots=True)
    query = parse_qs(urlsplit(back).query)
    assert query["state"] == ["browser-state"]
    token = httpx.post(f"{base}/auth/token", data={
        "grant_type": "authorization_code", "code": query["code"][0],
        "redirect_uri": redirect, "code_verifier": verifier,
        "client_id": served["client_id"]})
    assert token.status_code == 200, token.text
    assert token.json()["patient"] == "m1"
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    member = httpx.get(f"{base}/Patient/m1", headers=bearer)
    assert member.status_code == 200 and member.json()["name"][0]["family"] == "Mora"
    assert httpx.get(f"{base}/Patient/m2", headers=bearer).status_code == 404
    logged = served["log"].read_text()
    for secret in (query["code"][0], token.json()["access_token"], verifier, PASSWORD):
        assert secret not in logged  # no codes, tokens or passwords in the server's log
    assert (DOCS / "launch-login.png").stat().st_size > 1000
    assert (DOCS / "launch-approval.png").stat().st_size > 1000


def test_fhirclient_completes_a_standalone_launch(served: dict[str, Any]) -> None:
    from fhirclient import client
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRNotFoundException

    smart = client.FHIRClient(settings={
        "app_id": served["client_id"],
        "api_base": served["base"],
        "redirect_uri": served["redirect"],
        "scope": SCOPE,
    }, save_func=lambda state: None)
    url = smart.authorize_url
    assert url is not None and "code_challenge_method=S256" in url
    back = _sign_in_and_approve(served["browser"], url, served["redirect"])
    smart.handle_callback(back)
    assert smart.ready
    assert smart.patient_id == "m1"
    assert Patient.read("m1", smart.server).name[0].family == "Mora"
    with pytest.raises(FHIRNotFoundException):
        Patient.read("m2", smart.server)
