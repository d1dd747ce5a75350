"""``$export`` with SMART backend services on: the manifest says a token is required, the
files and status answer only the client that started the export, and the export holds only
the types its scopes let it read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import BASE, FHIR_JSON, TestClient, clear_store, outcome

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ASYNC = {"Prefer": "respond-async", "Accept": FHIR_JSON}


@pytest.fixture(scope="module")
def partners(database_url: str, tmp: Path, local: TestClient) -> dict[str, Partner]:
    out = {}
    for name in ("starter", "other"):
        partner = Partner()
        partner.register(database_url, tmp, scope="system/*.rs", organization=ORGANIZATION)
        out[name] = partner
    return out


def _bearer(smart: TestClient, partner: Partner, scope: str) -> dict[str, str]:
    response = smart.post(
        "/fhir/auth/token", headers=FORM, data=token_form(partner.assertion(TOKEN_URL), scope)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _path(url: str) -> str:
    return "/fhir" + url.removeprefix(BASE)


def _manifest(smart: TestClient, status_url: str, bearer: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.6)  # the default minimum between polls is 0.5 s
        response = smart.get(_path(status_url), headers=bearer)
        if response.status_code != 202:
            break
        assert time.monotonic() < deadline
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def seeded(local: TestClient, database_url: str) -> None:
    clear_store(database_url)
    local.put(
        "/fhir/Organization/partner-org",
        json={"resourceType": "Organization", "id": "partner-org", "name": "Partner"},
        headers={"Content-Type": FHIR_JSON},
    )
    local.put(
        "/fhir/Patient/p1",
        json={"resourceType": "Patient", "id": "p1"},
        headers={"Content-Type": FHIR_JSON},
    )
    local.put(
        "/fhir/Observation/o1",
        json={
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"text": "w"},
            "subject": {"reference": "Patient/p1"},
        },
        headers={"Content-Type": FHIR_JSON},
    )


@pytest.mark.usefixtures("seeded")
def test_the_files_need_the_token_of_the_client_that_started_the_export(
    smart: TestClient, partners: dict[str, Partner]
) -> None:
    starter = _bearer(smart, partners["starter"], "system/*.rs")
    other = _bearer(smart, partners["other"], "system/*.rs")
    outcome(smart.get("/fhir/$export", headers=ASYNC), 401)
    response = smart.get("/fhir/$export", headers={**ASYNC, **starter})
    assert response.status_code == 202, response.text
    status_url = response.headers["content-location"]
    found = _manifest(smart, status_url, starter)
    assert found["requiresAccessToken"] is True
    assert {e["type"] for e in found["output"]} >= {"Patient", "Observation"}
    url = _path(found["output"][0]["url"])
    outcome(smart.get(url), 401)
    outcome(smart.get(url, headers=other), 404)
    outcome(smart.get(_path(status_url), headers=other), 404)
    outcome(smart.delete(_path(status_url), headers=other), 404)
    assert smart.get(url, headers=starter).status_code == 200
    assert smart.delete(_path(status_url), headers=starter).status_code == 202
    outcome(smart.get(url, headers=starter), 404)


@pytest.mark.usefixtures("seeded")
def test_an_export_holds_only_the_types_the_scopes_read(
    smart: TestClient, partners: dict[str, Partner]
) -> None:
    bearer = _bearer(smart, partners["starter"], "system/Observation.rs")
    response = smart.get("/fhir/$export", headers={**ASYNC, **bearer})
    assert response.status_code == 202, response.text
    found = _manifest(smart, response.headers["content-location"], bearer)
    assert [e["type"] for e in found["output"]] == ["Observation"]
    refused = smart.get("/fhir/$export?_type=Observation,Patient", headers={**ASYNC, **bearer})
    outcome(refused, 403)
