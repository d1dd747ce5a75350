"""Headers every answer carries (nosniff; no-store where it carries data) and CORS, which is
off unless origins are configured."""

from __future__ import annotations

from typing import Any

from tests.support import TestClient, create, patient

_ORIGIN = "https://app.example.org"


def _answers(client: TestClient) -> list[Any]:
    pid = create(client, patient("H"))["id"]
    return [
        client.get(f"/fhir/Patient/{pid}"),
        client.get(f"/fhir/Patient/{pid}/_history/1"),
        client.get("/fhir/Patient?name=H"),
        client.get("/fhir/_history"),
        client.get(f"/fhir/Patient/{pid}/$everything"),
        client.post("/fhir/Patient", json=patient("I")),
        client.put(f"/fhir/Patient/{pid}", json={**patient("J"), "id": pid}),
        client.get("/fhir/Patient/missing"),
        client.post("/fhir/Patient", content=b"{", headers={"Content-Type": "application/json"}),
        client.get("/fhir/nowhere/at/all"),
        client.delete(f"/fhir/Patient/{pid}"),
    ]


def test_every_answer_with_data_is_nosniff_and_no_store(client: TestClient) -> None:
    for response in _answers(client):
        label = f"{response.request.method} {response.request.url} {response.status_code}"
        assert response.headers.get("x-content-type-options") == "nosniff", label
        assert response.headers.get("cache-control") == "no-store", label


def test_the_capability_statement_is_nosniff_and_revalidated(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"Origin": _ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options("/fhir/Patient", headers={
        "Origin": _ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origins_only(client: TestClient, make_client: Any) -> None:
    with make_client(cors_origins=f"{_ORIGIN}, https://other.example.org/") as cors:
        pid = create(cors, patient("C"))["id"]
        response = cors.get(f"/fhir/Patient/{pid}", headers={"Origin": _ORIGIN})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == _ORIGIN
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "etag" in exposed and "location" in exposed
        other = cors.get("/fhir/metadata", headers={"Origin": "https://other.example.org"})
        assert other.headers["access-control-allow-origin"] == "https://other.example.org"
        preflight = cors.options(f"/fhir/Patient/{pid}", headers={
            "Origin": _ORIGIN, "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type, if-match, authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == _ORIGIN
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        stranger = cors.get("/fhir/metadata", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in stranger.headers
        refused = cors.options("/fhir/Patient", headers={
            "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
