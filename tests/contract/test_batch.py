"""Batch Bundles: entries are independent, each with its own status."""

from __future__ import annotations

from typing import Any

from tests.support import BASE, TestClient, create, history_total, observation, patient


def _batch(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch", "entry": list(entries)}


def test_batch_entries_are_independent(client: TestClient) -> None:
    existing = create(client, patient("Existing"))
    before = history_total(client)
    response = client.post(
        "/fhir",
        json=_batch(
            {"resource": patient("Good"), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "bogus": 1},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/nobody"}},
            {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
            {
                "resource": {**patient("Stale"), "id": existing["id"]},
                "request": {
                    "method": "PUT",
                    "url": f"Patient/{existing['id']}",
                    "ifMatch": 'W/"9"',
                },
            },
            {"resource": observation(), "request": {"method": "POST", "url": "Observation"}},
        ),
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "batch-response"
    statuses = [e["response"]["status"][:3] for e in bundle["entry"]]
    assert statuses == ["201", "400", "404", "200", "412", "201"], statuses
    for index in (1, 2, 4):
        outcome = bundle["entry"][index]["response"].get("outcome")
        assert outcome and outcome["resourceType"] == "OperationOutcome", bundle["entry"][index]
    exprs = [
        e
        for i in bundle["entry"][1]["response"]["outcome"]["issue"]
        for e in i.get("expression", [])
    ]
    assert "Bundle.entry[1].resource.bogus" in exprs, exprs
    assert bundle["entry"][3]["resource"]["id"] == existing["id"]
    assert history_total(client) == before + 2, "the two good writes happened"


def test_batch_entry_with_a_bad_request_does_not_stop_the_others(client: TestClient) -> None:
    response = client.post(
        "/fhir",
        json=_batch(
            {"request": {"method": "GET", "url": "Patient/bad!id"}},
            {"resource": patient("A"), "request": {"method": "POST", "url": "Nope"}},
            {"resource": patient("B"), "request": {"method": "POST", "url": "Patient"}},
        ),
    )
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses[0] == "400" and statuses[1] == "404" and statuses[2] == "201", statuses


def test_invalid_bundle_shell_is_400(client: TestClient) -> None:
    response = client.post("/fhir", json=_batch({"request": {"method": "FETCH", "url": "x"}}))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert any(
        "Bundle.entry[0].request.method" in i.get("expression", []) for i in body["issue"]
    ), body


def test_bundles_post_to_the_base_url_with_or_without_a_trailing_slash(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": patient(), "request": {"method": "POST", "url": "Patient"}}],
    }
    for url in ("/fhir", "/fhir/"):
        response = client.post(url, json=bundle, follow_redirects=False)
        assert response.status_code == 200, (url, response.status_code)
        assert response.json()["type"] == "batch-response"


def test_entry_urls_may_be_absolute_under_the_base(client: TestClient) -> None:
    created = create(client, patient())
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {
                    "method": "GET",
                    "url": f"{BASE}/Patient/{created['id']}",
                }
            },
            {
                "request": {
                    "method": "GET",
                    "url": f"https://elsewhere.example/fhir/Patient/{created['id']}",
                }
            },
        ],
    }
    entries = client.post("/fhir", json=bundle).json()["entry"]
    assert entries[0]["response"]["status"].startswith("200")
    assert entries[0]["resource"]["id"] == created["id"]
    assert entries[1]["response"]["status"].startswith("400")


def test_a_byte_order_mark_before_the_json_is_ignored(client: TestClient) -> None:
    body = b"\xef\xbb\xbf" + b'{"resourceType": "Patient"}'
    response = client.post(
        "/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 201, response.text
