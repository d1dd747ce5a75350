"""Accept, _format, request Content-Type and _pretty."""

from __future__ import annotations

import pytest

from tests.support import FHIR_JSON, TestClient, create, outcome, patient


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "application/*",
        "application/fhir+json",
        "application/fhir+json; fhirVersion=4.0",
        "application/json",
        "application/json+fhir",
        "text/html, application/fhir+json;q=0.9",
    ],
)
def test_acceptable_media_types(client: TestClient, accept: str | None) -> None:
    pid = create(client, patient("A"))["id"]
    headers = {"Accept": accept} if accept is not None else {}
    for url in (f"/fhir/Patient/{pid}", "/fhir/Patient", "/fhir/metadata"):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, f"{url} Accept={accept}: {response.text}"
        assert response.headers["content-type"].startswith(FHIR_JSON)


@pytest.mark.parametrize("fmt", ["json", "application/fhir+json", "application/json"])
def test_format_json_is_accepted(client: TestClient, fmt: str) -> None:
    pid = create(client, patient("A"))["id"]
    response = client.get(f"/fhir/Patient/{pid}", params={"_format": fmt},
                          headers={"Accept": "text/plain"})
    assert response.status_code == 200, "_format overrides Accept"


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Accept": "text/plain"}, {}),
        ({"Accept": "application/fhir+xml"}, {}),
        ({"Accept": "application/fhir+json; fhirVersion=3.0"}, {}),
        ({}, {"_format": "xml"}),
        ({}, {"_format": "application/fhir+xml"}),
    ],
)
def test_unacceptable_is_406(client: TestClient, headers: dict[str, str],
                             params: dict[str, str]) -> None:
    pid = create(client, patient("A"))["id"]
    for url in (f"/fhir/Patient/{pid}", "/fhir/Patient", "/fhir/metadata"):
        outcome(client.get(url, headers=headers, params=params), 406)


def test_unacceptable_write_is_406_and_writes_nothing(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient("A"), headers={"Accept": "text/plain"})
    outcome(response, 406)
    assert "entry" not in client.get("/fhir/Patient").json()


@pytest.mark.parametrize("ctype", ["application/fhir+json", "application/json",
                                   "application/json+fhir",
                                   "application/fhir+json; charset=utf-8",
                                   "application/fhir+json; fhirVersion=4.0"])
def test_json_request_content_types_are_accepted(client: TestClient, ctype: str) -> None:
    response = client.post("/fhir/Patient", content=b'{"resourceType":"Patient"}',
                           headers={"Content-Type": ctype})
    assert response.status_code == 201, f"{ctype}: {response.text}"


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "application/fhir+xml",
                                   "application/x-www-form-urlencoded"])
def test_unsupported_request_content_type_is_415(client: TestClient, ctype: str) -> None:
    outcome(client.post("/fhir/Patient", content=b'{"resourceType":"Patient"}',
                        headers={"Content-Type": ctype}), 415)
    outcome(client.put("/fhir/Patient/x1", content=b'{"resourceType":"Patient","id":"x1"}',
                       headers={"Content-Type": ctype}), 415)
    outcome(client.post("/fhir", content=b'{"resourceType":"Bundle","type":"batch"}',
                        headers={"Content-Type": ctype}), 415)


def test_pretty_gives_indented_json(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    pretty = client.get(f"/fhir/Patient/{pid}", params={"_pretty": "true"})
    assert pretty.status_code == 200
    assert b"\n  " in pretty.content, pretty.text
    compact = client.get(f"/fhir/Patient/{pid}")
    assert b"\n" not in compact.content.strip()
    assert pretty.json() == compact.json()
    search = client.get("/fhir/Patient", params={"_pretty": "true"})
    assert b"\n  " in search.content
    error = client.get("/fhir/Patient/nobody", params={"_pretty": "true"})
    assert error.status_code == 404 and b"\n  " in error.content
