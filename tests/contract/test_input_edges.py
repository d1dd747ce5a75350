"""Edge cases of request input: repeated JSON names, control characters in the URL path,
malformed urn:uuid / urn:oid fullUrls. Each one is 400 with an OperationOutcome, writes
nothing, and reaches no resource."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support import (
    FHIR_JSON,
    TestClient,
    create,
    expressions,
    history_total,
    outcome,
    patient,
)

_J = {"Content-Type": FHIR_JSON}


# -- repeated names in a JSON object ----------------------------------------------------------

DUPLICATES: list[tuple[bytes, str]] = [
    (b'{"resourceType":"Patient","gender":"male","gender":"female"}', "Patient.gender"),
    (b'{"resourceType":"Patient","name":[{"family":"A","family":"B"}]}', "Patient.name[0].family"),
    (b'{"resourceType":"Patient","resourceType":"Patient"}', "Patient.resourceType"),
    (b'{"resourceType":"Patient","meta":{"tag":[{"code":"a"}],"tag":[]}}', "Patient.meta.tag"),
]


@pytest.mark.parametrize(("body", "expression"), DUPLICATES)
def test_a_repeated_name_in_a_resource_is_400_on_create_and_update(
    client: TestClient, body: bytes, expression: str
) -> None:
    before = history_total(client)
    got = outcome(client.post("/fhir/Patient", content=body, headers=_J), 400)
    assert expressions(got) == [expression]
    assert "repeats the name" in got["issue"][0]["diagnostics"]
    with_id = body.replace(b'"resourceType":"Patient"', b'"resourceType":"Patient","id":"d1"', 1)
    outcome(client.put("/fhir/Patient/d1", content=with_id, headers=_J), 400)
    assert history_total(client) == before


def test_a_repeated_name_anywhere_in_a_bundle_refuses_the_bundle(client: TestClient) -> None:
    before = history_total(client)
    entry = '{"resource":{"resourceType":"Patient","active":true,"active":false},' \
            '"request":{"method":"POST","url":"Patient"}}'
    for kind in ("batch", "transaction"):
        ok = '{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}'
        body = f'{{"resourceType":"Bundle","type":"{kind}","entry":[{ok},{entry}]}}'.encode()
        got = outcome(client.post("/fhir", content=body, headers=_J), 400)
        assert expressions(got) == ["Bundle.entry[1].resource.active"]
        shell = f'{{"resourceType":"Bundle","type":"{kind}","type":"batch","entry":[]}}'
        outcome(client.post("/fhir", content=shell.encode(), headers=_J), 400)
    assert history_total(client) == before


def test_a_repeated_name_in_a_patch_document_is_400(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    doc = b'[{"op":"replace","path":"/active","path":"/gender","value":"male"}]'
    outcome(client.patch(f"/fhir/Patient/{pid}", content=doc,
                         headers={"Content-Type": "application/json-patch+json"}), 400)
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(doc).decode()}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}]}
    got = outcome(client.post("/fhir", json=bundle), 400)
    assert expressions(got) == ["Bundle.entry[0].resource.data"]
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def test_a_repeated_name_in_operation_parameters_is_400(client: TestClient) -> None:
    body = b'{"resourceType":"Parameters","parameter":[],"parameter":[]}'
    got = outcome(client.post("/fhir/Patient/$ecm-eligibility", content=body, headers=_J), 400)
    assert expressions(got) == ["Parameters.parameter"]


def test_the_same_name_in_different_objects_is_fine(client: TestClient) -> None:
    body = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B"}],
            "contact": [{"name": {"family": "C"}}]}
    assert client.post("/fhir/Patient", content=json.dumps(body, indent=2).encode(),
                       headers=_J).status_code == 201


# -- control characters in the URL path -------------------------------------------------------

CONTROL = ["%0A", "%0D", "%00", "%09", "%1F", "%7F", "%0D%0A"]


@pytest.mark.parametrize("char", CONTROL)
def test_a_control_character_in_the_path_is_400_and_reaches_no_resource(
    client: TestClient, char: str
) -> None:
    client.put("/fhir/Patient/q1", json={**patient("Q"), "id": "q1"})
    before = history_total(client)
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/fhir/Patient/q1{char}", None),
        ("GET", f"/fhir/Patient/q1{char}/_history/1", None),
        ("GET", f"/fhir/Patient/q1{char}/_history", None),
        ("GET", f"/fhir/Patient{char}", None),
        ("GET", f"/fhir/Patient{char}/q1", None),
        ("PUT", f"/fhir/Patient/q1{char}", {**patient("Changed"), "id": "q1"}),
        ("DELETE", f"/fhir/Patient/q1{char}", None),
        ("POST", f"/fhir/Patient{char}", patient("New")),
        ("GET", f"/fhir/metadata{char}", None),
    ]
    for method, url, body in requests:
        response = client.request(method, url, json=body)
        got = outcome(response, 400)
        assert expressions(got) == ["url"], (method, url, got)
    assert history_total(client) == before
    assert client.get("/fhir/Patient/q1").json()["name"][0]["family"] == "Q"


@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\t"])
def test_a_control_character_in_a_bundle_entry_url_is_400(client: TestClient, char: str) -> None:
    client.put("/fhir/Patient/q1", json={**patient("Q"), "id": "q1"})
    before = history_total(client)
    for method in ("GET", "DELETE", "PUT"):
        entry: dict[str, Any] = {"request": {"method": method, "url": f"Patient/q1{char}"}}
        if method == "PUT":
            entry["resource"] = {**patient("Changed"), "id": "q1"}
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
        response = client.post("/fhir", json=bundle)
        if response.status_code == 400:  # request.url is a uri: whitespace fails the Bundle
            assert expressions(outcome(response)) == ["Bundle.entry[0].request.url"]
            continue
        reply = response.json()["entry"][0]["response"]
        assert reply["status"].startswith("400"), (method, reply)
    assert history_total(client) == before


def test_a_request_id_with_a_newline_is_replaced(client: TestClient) -> None:
    response = client.get("/fhir/metadata", headers={"X-Request-Id": "abc\tdef"})
    assert response.headers["x-request-id"] != "abc\tdef"
    response = client.get("/fhir/metadata", headers={"X-Request-Id": "abc-1"})
    assert response.headers["x-request-id"] == "abc-1"


# -- urn:uuid / urn:oid fullUrls --------------------------------------------------------------

BAD_URNS = ["urn:uuid:not-a-uuid", "urn:uuid:1", "urn:uuid:",
            "urn:uuid:6F9619FF-8B86-D011-B42D-00CF4FC964FF",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00cf4fc964ff0", "urn:oid:1.02", "urn:oid:abc",
            "URN:UUID:x"]  # fmt: skip


@pytest.mark.parametrize("full_url", BAD_URNS)
def test_a_malformed_urn_full_url_is_400(client: TestClient, full_url: str) -> None:
    before = history_total(client)
    entry = {"fullUrl": full_url, "resource": patient("U"),
             "request": {"method": "POST", "url": "Patient"}}
    ok = {"fullUrl": "urn:uuid:6f9619ff-8b86-d011-b42d-00cf4fc964ff", "resource": patient("V"),
          "request": {"method": "POST", "url": "Patient"}}
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [ok, entry]}
    got = outcome(client.post("/fhir", json=tx), 400)
    assert expressions(got) == ["Bundle.entry[1].fullUrl"]
    assert history_total(client) == before
    batch = {**tx, "type": "batch"}
    replies = client.post("/fhir", json=batch).json()["entry"]
    assert replies[0]["response"]["status"].startswith("201")
    assert replies[1]["response"]["status"].startswith("400")
    assert expressions(replies[1]["response"]["outcome"]) == ["Bundle.entry[1].fullUrl"]


def test_well_formed_urn_full_urls_are_accepted(client: TestClient) -> None:
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f9619ff-8b86-d011-b42d-00cf4fc964ff", "resource": patient("A"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:oid:2.16.840.1.113883.3.1", "resource": patient("B"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "http://example.org/fhir/Patient/x", "resource": patient("C"),
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    response = client.post("/fhir", json=tx)
    assert response.status_code == 200, response.text
