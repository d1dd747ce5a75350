"""The SMART standalone launch over HTTP on both stores: authorization code with PKCE, the
login and approval pages, throttling, the patient picker, the id_token, each rule one by one.

The browser is played by hand: the session cookie is ``Secure``, which an HTTP test client
does not send back on ``http://testserver``, so each step sends it explicitly."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from typer.testing import CliRunner

from server.cli import app as cli
from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import BASE, FHIR_JSON, TestClient

APP = "https://app.example.org/callback"
PASSWORD = "correct horse battery staple"
SCOPE = "openid fhirUser launch/patient patient/*.rs"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _put(local: TestClient, resource: dict[str, Any]) -> None:
    response = local.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                         headers={"Content-Type": FHIR_JSON})
    assert response.status_code in (200, 201), response.text


def _cli(database_url: str, *args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(cli, [*args, "--database-url", database_url], input=input)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def scene(database_url: str, local: TestClient, tmp: Path) -> dict[str, Any]:
    for resource in (
        {"resourceType": "Practitioner", "id": "cw1", "name": [{"family": "Worker"}]},
        {"resourceType": "PractitionerRole", "id": "cw1-role",
         "practitioner": {"reference": "Practitioner/cw1"},
         "organization": {"reference": ORGANIZATION}},
        {"resourceType": "Patient", "id": "m1", "name": [{"given": ["Ana"], "family": "Mora"}],
         "birthDate": "1980-02-03"},
        {"resourceType": "Patient", "id": "m2", "name": [{"given": ["Ben"], "family": "Diaz"}]},
        {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
         "subject": {"reference": "Patient/m1"}},
        {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},
         "subject": {"reference": "Patient/m2"}},
    ):
        _put(local, resource)
    public = json.loads(_cli(
        database_url, "client", "add", "--name", "Caseworker app", "--organization",
        ORGANIZATION, "--scope", f"{SCOPE} user/Patient.rs offline_access online_access",
        "--redirect-uri", APP,
        "--public").stdout)["client_id"]
    other = json.loads(_cli(
        database_url, "client", "add", "--name", "Other app", "--organization", ORGANIZATION,
        "--scope", SCOPE, "--redirect-uri", APP, "--public").stdout)["client_id"]
    confidential = Partner("ES384")
    jwks = tmp / "launch-app.jwks.json"
    jwks.write_text(json.dumps(confidential.jwks()))
    confidential.client_id = json.loads(_cli(
        database_url, "client", "add", "--name", "EHR app", "--organization", ORGANIZATION,
        "--scope", SCOPE, "--redirect-uri", APP, "--jwks-file", str(jwks)).stdout)["client_id"]
    for username in ("casey", "dana"):
        _cli(database_url, "user", "add", "--username", username, "--practitioner-role",
             "PractitionerRole/cw1-role", input=PASSWORD)
    return {"public": public, "other": other, "confidential": confidential}


@pytest.fixture
def web(smart: TestClient, scene: dict[str, Any]) -> Iterator[TestClient]:
    """The launch app, throttling forgotten before each test, the real clock."""
    service = smart.app.state.auth
    for key in ("source:testclient", "source:127.0.0.1", "user:casey", "user:dana",
                "user:nobody"):
        service.store.clear_throttle(key)
    clock = service.clock
    yield smart
    service.clock = clock


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _params(app: str, challenge: str, **extra: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": app, "redirect_uri": APP,
              "scope": SCOPE, "state": "st-123", "aud": BASE, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    params.update(extra)
    return {k: v for k, v in params.items() if v != "-"}


class Browser:
    """One user's browser: the cookie and the last form's CSRF token."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.cookie = ""
        self.csrf = ""

    def start(self, params: dict[str, str]) -> Any:
        response = self.client.get("/fhir/auth/authorize", params=params,
                                   follow_redirects=False)
        if "set-cookie" in response.headers:
            self.cookie = response.headers["set-cookie"].split(";")[0]
        self._csrf(response)
        return response

    def _csrf(self, response: Any) -> None:
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found[1]

    def post(self, path: str, data: dict[str, str]) -> Any:
        response = self.client.post(path, data={"csrf": self.csrf, **data},
                                    headers={"Cookie": self.cookie}, follow_redirects=False)
        self._csrf(response)
        return response

    def login(self, username: str = "casey", password: str = PASSWORD) -> Any:
        return self.post("/fhir/auth/login", {"username": username, "password": password})

    def approve(self, patient: str | None = "m1", decision: str = "approve") -> Any:
        data = {"decision": decision}
        if patient:
            data["patient"] = patient
        return self.post("/fhir/auth/approve", data)


def _code(client: TestClient, client_id: str, patient: str = "m1",
          **extra: str) -> tuple[str, str]:
    """A code for ``client_id`` (signed in as casey, ``patient`` chosen) and its verifier."""
    verifier, challenge = _pkce()
    browser = Browser(client)
    assert browser.start(_params(client_id, challenge, **extra)).status_code == 200
    assert browser.login().status_code == 200
    response = browser.approve(patient)
    assert response.status_code == 303, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st-123"]
    return query["code"][0], verifier


def _exchange(client: TestClient, code: str, verifier: str, client_id: str,
              **extra: str) -> Any:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP,
            "code_verifier": verifier, "client_id": client_id, **extra}
    return client.post(TOKEN_URL, data={k: v for k, v in form.items() if v != "-"})


# -- discovery -----------------------------------------------------------------------------


def test_discovery_advertises_the_launch(web: TestClient) -> None:
    config = web.get("/fhir/.well-known/smart-configuration").json()
    assert config["authorization_endpoint"] == BASE + "/auth/authorize"
    assert config["grant_types_supported"] == [
        "authorization_code", "client_credentials", "refresh_token"]
    assert config["revocation_endpoint"] == BASE + "/auth/revoke"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    for capability in ("launch-standalone", "client-public", "context-standalone-patient",
                       "permission-patient", "permission-user", "sso-openid-connect",
                       "permission-offline", "permission-online"):
        assert capability in config["capabilities"]
    for absent in ("client-confidential-symmetric", "launch-ehr", "context-ehr-patient"):
        assert absent not in config["capabilities"]
    assert config["issuer"] == BASE and config["jwks_uri"] == BASE + "/auth/jwks"


# -- the authorization request ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "unknown"},
        {"redirect_uri": "https://evil.example.org/callback"},
        {"redirect_uri": APP + "/"},
        {"redirect_uri": APP + "?x=1"},
        {"redirect_uri": "-"},
        {"state": "-"},
    ],
)
def test_errors_before_the_redirect_is_trusted_are_shown_never_redirected(
    web: TestClient, scene: dict[str, Any], change: dict[str, str]
) -> None:
    _, challenge = _pkce()
    response = Browser(web).start(_params(scene["public"], challenge, **change))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "evil.example.org" not in response.text
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"aud": "https://other.example.org/fhir"}, "invalid_request"),
        ({"aud": "-"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": "-"}, "invalid_request"),
        ({"code_challenge": "-"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "system/*.rs"}, "invalid_scope"),
        ({"scope": "patient/*.rs"}, "invalid_scope"),  # no launch/patient: no patient
        ({"scope": "openid user/Observation.rs"}, "invalid_scope"),  # not registered
        ({"scope": "user/Patient.rs?name=x"}, "invalid_scope"),  # unenforceable
    ],
)
def test_errors_after_it_go_back_to_the_app_with_the_state(
    web: TestClient, scene: dict[str, Any], change: dict[str, str], error: str
) -> None:
    _, challenge = _pkce()
    response = Browser(web).start(_params(scene["public"], challenge, **change))
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == APP
    query = parse_qs(location.query)
    assert query["error"] == [error]
    assert query["state"] == ["st-123"]


def test_pages_cannot_be_framed_and_the_cookie_is_locked_down(
    web: TestClient, scene: dict[str, Any]
) -> None:
    _, challenge = _pkce()
    response = Browser(web).start(_params(scene["public"], challenge))
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path"} <= attributes
    assert "samesite=lax" in cookie.lower() and "path=/fhir/auth" in cookie.lower()
    assert "domain" not in attributes  # host-only
    assert '<label for="username">' in response.text and 'lang="en"' in response.text


# -- sign-in ---------------------------------------------------------------------------------


def _signed_in_page(web: TestClient, scene: dict[str, Any]) -> Browser:
    _, challenge = _pkce()
    browser = Browser(web)
    assert browser.start(_params(scene["public"], challenge)).status_code == 200
    return browser


def test_forms_need_the_csrf_token_of_their_pending_request(
    web: TestClient, scene: dict[str, Any]
) -> None:
    browser = _signed_in_page(web, scene)
    other = _signed_in_page(web, scene)
    browser.csrf, real = other.csrf, browser.csrf  # a token of another request
    assert browser.login().status_code == 400
    browser.csrf = real
    no_cookie = web.post("/fhir/auth/login", data={"csrf": real, "username": "casey",
                                                   "password": PASSWORD})
    assert no_cookie.status_code == 400
    assert browser.login().status_code == 200
    assert browser.csrf != real  # a new token after sign-in
    browser.csrf = real
    assert browser.approve().status_code == 400


def test_unknown_user_wrong_password_and_disabled_user_look_the_same(
    web: TestClient, scene: dict[str, Any], database_url: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.auth import users

    derived: list[int] = []
    real = users._derive

    def counting(*args: Any) -> bytes:
        derived.append(1)
        return real(*args)

    monkeypatch.setattr(users, "_derive", counting)
    answers = []
    _cli(database_url, "user", "disable", "dana")
    try:
        for username, password in (("nobody", PASSWORD), ("casey", "wrong password!!"),
                                   ("dana", PASSWORD)):
            browser = _signed_in_page(web, scene)
            derived.clear()
            response = browser.login(username, password)
            answers.append((response.status_code, response.text.replace(browser.csrf, "X")))
            assert len(derived) == 1  # the same work: one scrypt derivation each
    finally:
        _cli(database_url, "user", "enable", "dana")
    assert answers[0][0] == 401
    assert answers[0] == answers[1] == answers[2]


def test_failed_sign_ins_back_off_per_account_and_source_without_locking_out(
    web: TestClient, scene: dict[str, Any]
) -> None:
    service = web.app.state.auth
    now = time.time()
    service.clock = lambda: now  # time stands still: the back-off cannot run out meanwhile
    browser = _signed_in_page(web, scene)
    statuses = [browser.login("casey", "wrong password!!").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    blocked = browser.login("casey", PASSWORD)  # even the right password waits
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    # the source is blocked too: another account from the same address waits
    assert browser.login("dana", PASSWORD).status_code == 429
    service.clock = lambda: now + 1.5  # the first back-off is 1 s
    assert browser.login("casey", PASSWORD).status_code == 200


# -- approval, code and token ------------------------------------------------------------------


def test_the_approval_page_lists_scopes_in_words_and_the_members_the_user_may_see(
    web: TestClient, scene: dict[str, Any]
) -> None:
    browser = _signed_in_page(web, scene)
    page = browser.login().text
    assert "Know who you are" in page
    assert "Work with the one member you choose below." in page
    assert "Read and search all kinds of records of the member you choose." in page
    assert "Ana Mora, born 1980-02-03" in page and "Ben Diaz" in page
    assert 'type="radio"' in page and "<legend>Choose the member</legend>" in page


def test_the_whole_launch_gives_a_token_for_the_chosen_member(
    web: TestClient, scene: dict[str, Any]
) -> None:
    code, verifier = _code(web, scene["public"])
    response = _exchange(web, code, verifier, scene["public"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert body["token_type"] == "bearer" and body["expires_in"] <= 300
    assert body["patient"] == "m1"
    assert body["scope"] == SCOPE
    keys = web.get("/fhir/auth/jwks").json()
    claims = jwt.decode(body["id_token"], key=jwt.PyJWKSet.from_dict(keys).keys[0],
                        algorithms=["RS256"], audience=scene["public"], issuer=BASE)
    assert claims["fhirUser"] == BASE + "/Practitioner/cw1"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 200
    assert web.get("/fhir/Patient/m2", headers=bearer).status_code == 404
    found = web.get("/fhir/Observation", headers=bearer).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == ["o1"]


def test_a_reused_code_is_refused_and_revokes_its_tokens(
    web: TestClient, scene: dict[str, Any]
) -> None:
    code, verifier = _code(web, scene["public"])
    first = _exchange(web, code, verifier, scene["public"])
    assert first.status_code == 200
    bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 200
    again = _exchange(web, code, verifier, scene["public"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        {"redirect_uri": APP + "/other"},
        {"code_verifier": "wrong-" + "v" * 50},
        {"code_verifier": "plain"},  # replaced by the challenge itself: plain PKCE
        {"client_id": "other"},
        {"code": "not-a-code"},
    ],
)
def test_a_code_is_bound_to_client_redirect_and_challenge(
    web: TestClient, scene: dict[str, Any], change: dict[str, str]
) -> None:
    verifier, challenge = _pkce()
    browser = Browser(web)
    browser.start(_params(scene["public"], challenge))
    browser.login()
    code = parse_qs(urlsplit(browser.approve().headers["location"]).query)["code"][0]
    form = {"code": code, "verifier": verifier, "client_id": scene["public"], **change}
    if change.get("code_verifier") == "plain":
        form["code_verifier"] = challenge
    if change.get("client_id") == "other":
        form["client_id"] = scene["other"]
    extra = {k: v for k, v in form.items() if k in ("redirect_uri",)}
    response = _exchange(web, form["code"], form.get("code_verifier", verifier),
                         form["client_id"], **extra)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def test_a_code_lives_at_most_60_seconds(web: TestClient, scene: dict[str, Any]) -> None:
    code, verifier = _code(web, scene["public"])
    later = time.time() + 61
    web.app.state.auth.clock = lambda: later
    response = _exchange(web, code, verifier, scene["public"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_deny_goes_back_with_access_denied(web: TestClient, scene: dict[str, Any]) -> None:
    browser = _signed_in_page(web, scene)
    browser.login()
    response = browser.approve(None, "deny")
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-123"]


def test_the_member_must_be_one_the_user_may_see_and_an_answer_is_final(
    web: TestClient, scene: dict[str, Any]
) -> None:
    browser = _signed_in_page(web, scene)
    browser.login()
    assert browser.approve("not-a-member").status_code == 400
    assert browser.approve(None).status_code == 400
    assert browser.approve("m2").status_code == 303
    assert browser.approve("m2").status_code == 400  # the request is gone


def test_a_confidential_app_must_authenticate_at_the_token_endpoint(
    web: TestClient, scene: dict[str, Any]
) -> None:
    app: Partner = scene["confidential"]
    code, verifier = _code(web, app.client_id)
    unauthenticated = _exchange(web, code, verifier, app.client_id)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"
    code, verifier = _code(web, app.client_id)
    signed = token_form(app.assertion(TOKEN_URL), "")
    response = _exchange(web, code, verifier, "-", **{k: signed[k] for k in
                                                     ("client_assertion_type",
                                                      "client_assertion")})
    assert response.status_code == 200, response.text


def test_disabling_the_user_stops_the_launch_tokens_at_the_next_request(
    web: TestClient, scene: dict[str, Any], database_url: str
) -> None:
    code, verifier = _code(web, scene["public"])
    token = _exchange(web, code, verifier, scene["public"]).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 200
    _cli(database_url, "user", "disable", "casey")
    try:
        assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 401
    finally:
        _cli(database_url, "user", "enable", "casey")


# -- refresh tokens and revocation ---------------------------------------------------------


def _offline(web: TestClient, scene: dict[str, Any], access: str = "offline_access") -> Any:
    code, verifier = _code(web, scene["public"], scope=f"{SCOPE} {access}")
    response = _exchange(web, code, verifier, scene["public"])
    assert response.status_code == 200, response.text
    return response.json()


def _refresh(web: TestClient, token: str, client_id: str, **extra: str) -> Any:
    return web.post(TOKEN_URL, data={"grant_type": "refresh_token", "refresh_token": token,
                                     "client_id": client_id, **extra})


def test_refresh_tokens_only_with_offline_or_online_access(
    web: TestClient, scene: dict[str, Any]
) -> None:
    code, verifier = _code(web, scene["public"])
    assert "refresh_token" not in _exchange(web, code, verifier, scene["public"]).json()
    assert "refresh_token" in _offline(web, scene)
    assert "refresh_token" in _offline(web, scene, "online_access")


def test_refresh_rotates_and_a_reused_token_revokes_the_family(
    web: TestClient, scene: dict[str, Any]
) -> None:
    first = _offline(web, scene)
    second = _refresh(web, first["refresh_token"], scene["public"])
    assert second.status_code == 200, second.text
    renewed = second.json()
    assert renewed["refresh_token"] != first["refresh_token"]
    assert renewed["patient"] == "m1" and renewed["scope"] == (
        "openid fhirUser launch/patient offline_access patient/*.rs")
    bearer = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 200
    reused = _refresh(web, first["refresh_token"], scene["public"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # the whole family: the newest refresh token and every access token stop
    assert _refresh(web, renewed["refresh_token"], scene["public"]).status_code == 400
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 401


def test_refresh_is_bound_to_the_client_and_stored_hashed(
    web: TestClient, scene: dict[str, Any]
) -> None:
    issued = _offline(web, scene)
    other = _refresh(web, issued["refresh_token"], scene["other"])
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    store = web.app.state.auth.store
    with store._dialect.autocommit() as conn:
        stored = {row[0] for row in conn.execute("SELECT token_hash FROM auth_refresh")}
    assert issued["refresh_token"] not in stored
    assert hashlib.sha256(issued["refresh_token"].encode()).hexdigest() in stored


def test_scopes_may_only_narrow_on_refresh(web: TestClient, scene: dict[str, Any]) -> None:
    issued = _offline(web, scene)
    wider = _refresh(web, issued["refresh_token"], scene["public"],
                     scope=f"{SCOPE} user/Patient.rs")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    narrower = _refresh(web, issued["refresh_token"], scene["public"],
                        scope="launch/patient patient/*.rs")
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "launch/patient patient/*.rs"


@pytest.mark.parametrize(("access", "seconds"),
                         [("offline_access", 30 * 86400 + 1), ("online_access", 12 * 3600 + 1)])
def test_refresh_tokens_have_an_absolute_lifetime(
    web: TestClient, scene: dict[str, Any], access: str, seconds: int
) -> None:
    issued = _offline(web, scene, access)
    almost = time.time() + seconds - 120
    web.app.state.auth.clock = lambda: almost
    kept = _refresh(web, issued["refresh_token"], scene["public"])
    assert kept.status_code == 200, kept.text
    later = time.time() + seconds
    web.app.state.auth.clock = lambda: later
    ended = _refresh(web, kept.json()["refresh_token"], scene["public"])
    assert ended.status_code == 400 and ended.json()["error"] == "invalid_grant"


def test_revocation_endpoint(web: TestClient, scene: dict[str, Any]) -> None:
    issued = _offline(web, scene)
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    assert web.post("/fhir/auth/revoke", data={"token": "unknown",
                                               "client_id": scene["public"]}).status_code == 200
    # another client's revocation changes nothing
    assert web.post("/fhir/auth/revoke", data={"token": issued["refresh_token"],
                                               "client_id": scene["other"]}).status_code == 200
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 200
    unauthenticated = web.post("/fhir/auth/revoke", data={"token": issued["refresh_token"]})
    assert unauthenticated.status_code == 401
    done = web.post("/fhir/auth/revoke", data={"token": issued["refresh_token"],
                                               "client_id": scene["public"]})
    assert done.status_code == 200
    assert web.get("/fhir/Patient/m1", headers=bearer).status_code == 401
    assert _refresh(web, issued["refresh_token"], scene["public"]).status_code == 400
    # an access token revokes its grant as well
    again = _offline(web, scene)
    web.post("/fhir/auth/revoke", data={"token": again["access_token"],
                                        "client_id": scene["public"]})
    assert _refresh(web, again["refresh_token"], scene["public"]).status_code == 400
