"""The scope matrix over HTTP: {system, user, patient} × {c, r, u, d, s, v1 read, v1 write,
wildcards} × every interaction, against a table written by hand from SMART App Launch 2.2
("Scopes": c = create; r = read, vread, instance history; u = update, patch; d = delete;
s = type search, type history, system search/history — the system level needs a wildcard
scope, which covers every type). Several scopes are a union. ``patient/`` scopes are refused
at the token endpoint (no patient context in backend services)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import FHIR_JSON, TestClient

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ALL = ("create", "read", "vread", "history", "search-type", "history-type", "search-system",
       "history-system", "update", "patch", "delete")
READS = {"read", "vread", "history"}
SEARCHES = {"search-type", "history-type"}
SYSTEM = {"search-system", "history-system"}

# scope suffix (after "<context>/") -> interactions permitted on Observation, by hand
TABLE: dict[str, set[str]] = {
    "Observation.c": {"create"},
    "Observation.r": READS,
    "Observation.u": {"update", "patch"},
    "Observation.d": {"delete"},
    "Observation.s": SEARCHES,
    "Observation.read": READS | SEARCHES,
    "Observation.write": {"create", "update", "patch", "delete"},
    "Observation.*": set(ALL) - SYSTEM,
    "Observation.cruds": set(ALL) - SYSTEM,
    "Observation.rs": READS | SEARCHES,
    "Observation.cud": {"create", "update", "patch", "delete"},
    "Patient.cruds": set(),
    "*.s": SEARCHES | SYSTEM,
    "*.r": READS,
    "*.read": READS | SEARCHES | SYSTEM,
    "*.cruds": set(ALL),
    # unions: two scopes on one type add up
    "Observation.r {ctx}/Observation.s": READS | SEARCHES,
    "Observation.c {ctx}/Observation.d": {"create", "delete"},
    "Patient.rs {ctx}/Observation.u": {"update", "patch"},
}


def run(client: TestClient, local: TestClient, interaction: str, bearer: dict[str, str]
        ) -> int:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "w"}}
    made = local.post("/fhir/Observation", json=observation,
                      headers={"Content-Type": FHIR_JSON}).json()
    id = made["id"]
    json_headers = {**bearer, "Content-Type": FHIR_JSON}
    calls: dict[str, Any] = {
        "create": lambda: client.post("/fhir/Observation", json=observation,
                                      headers=json_headers),
        "read": lambda: client.get(f"/fhir/Observation/{id}", headers=bearer),
        "vread": lambda: client.get(f"/fhir/Observation/{id}/_history/1", headers=bearer),
        "history": lambda: client.get(f"/fhir/Observation/{id}/_history", headers=bearer),
        "search-type": lambda: client.get("/fhir/Observation", headers=bearer),
        "history-type": lambda: client.get("/fhir/Observation/_history", headers=bearer),
        "search-system": lambda: client.get("/fhir?_type=Observation", headers=bearer),
        "history-system": lambda: client.get("/fhir/_history", headers=bearer),
        "update": lambda: client.put(f"/fhir/Observation/{id}",
                                     json={**observation, "id": id}, headers=json_headers),
        "patch": lambda: client.patch(
            f"/fhir/Observation/{id}",
            content=b'[{"op": "replace", "path": "/status", "value": "amended"}]',
            headers={**bearer, "Content-Type": "application/json-patch+json"}),
        "delete": lambda: client.delete(f"/fhir/Observation/{id}", headers=bearer),
    }
    status: int = calls[interaction]().status_code
    return status


@pytest.fixture(scope="module")
def partners(database_url: str, tmp: Path, smart: TestClient) -> dict[str, Partner]:
    out = {}
    for context in ("system", "user", "patient"):
        partner = Partner("RS384")
        registered = "system/*.cruds user/*.cruds" if context != "patient" else "system/*.rs"
        partner.register(database_url, tmp, scope=registered, organization=ORGANIZATION)
        out[context] = partner
    return out


@pytest.mark.parametrize("context", ["system", "user"])
def test_scope_matrix(smart: TestClient, local: TestClient, partners: dict[str, Partner],
                      context: str) -> None:
    mismatches = []
    for suffix, permitted in TABLE.items():
        scope = f"{context}/" + suffix.format(ctx=context)
        partner = partners[context]
        response = smart.post("/fhir/auth/token", headers=FORM,
                              data=token_form(partner.assertion(TOKEN_URL), scope))
        assert response.status_code == 200, (scope, response.text)
        bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
        for interaction in ALL:
            status = run(smart, local, interaction, bearer)
            allowed = 200 <= status < 300
            if allowed != (interaction in permitted) or (not allowed and status != 403):
                mismatches.append((scope, interaction, status))
    assert mismatches == [], "\n".join(map(str, mismatches))


@pytest.mark.parametrize("suffix", sorted(TABLE))
def test_patient_scopes_are_refused_at_the_token_endpoint(
    smart: TestClient, partners: dict[str, Partner], suffix: str
) -> None:
    scope = "patient/" + suffix.format(ctx="patient")
    response = smart.post("/fhir/auth/token", headers=FORM,
                          data=token_form(partners["patient"].assertion(TOKEN_URL), scope))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_batch_entries_are_authorised_one_by_one(
    smart: TestClient, local: TestClient, partners: dict[str, Partner]
) -> None:
    partner = partners["system"]
    token = smart.post("/fhir/auth/token", headers=FORM, data=token_form(
        partner.assertion(TOKEN_URL), "system/Observation.rs")).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    made = local.post("/fhir/Observation", headers={"Content-Type": FHIR_JSON}, json={
        "resourceType": "Observation", "status": "final", "code": {"text": "w"}}).json()
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{made['id']}"}},
        {"request": {"method": "GET", "url": "Patient"}},
        {"request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}},
        {"request": {"method": "GET", "url": "Observation?status=final"}},
    ]}
    response = smart.post("/fhir", json=batch, headers=bearer)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["200", "403", "403", "200"]
    transaction = {**batch, "type": "transaction", "entry": batch["entry"][2:3]}
    assert smart.post("/fhir", json=transaction, headers=bearer).status_code == 403
