"""JSON Patch (application/json-patch+json)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support import TestClient, create, expressions, history_total, outcome, patient

PATCH = {"Content-Type": "application/json-patch+json"}

# Well-formed JSON that is not a well-formed JSON Patch (RFC 6902 / RFC 6901), with the
# expression of the offending member of the patch document.
MALFORMED: list[tuple[Any, str | None]] = [
    ({"op": "replace"}, None),
    ([{"op": "add", "path": "a", "value": 1}], "[0].path"),  # no leading slash
    ([{"op": "add", "path": "/name/x~9", "value": 1}], "[0].path"),  # bad escape
    ([{"op": "remove", "path": "/name~"}], "[0].path"),
    ([{"op": "add", "path": 7, "value": 1}], "[0].path"),
    ([{"op": "move", "from": "name", "path": "/x"}], "[0].from"),
    ([{"op": "copy", "from": "/a~7", "path": "/x"}], "[0].from"),
    ([{"op": "move", "path": "/x"}], "[0].from"),
    ([{"op": "add", "path": "/active"}], "[0].value"),
    ([{"op": "test", "path": "/active"}], "[0].value"),
    ([{"op": "explode", "path": "/x"}], "[0].op"),
    ([{"op": 3, "path": "/x"}], "[0].op"),
    ([{"path": "/x"}], "[0].op"),
    ([{"op": "remove"}], "[0].path"),
    ([{"op": "remove", "path": "/gender"}, "remove"], "[1]"),
    ([None], "[0]"),
    ([[]], "[0]"),
]


def test_patch_replace_makes_a_new_version(client: TestClient) -> None:
    pid = create(client, patient("Before", gender="female"))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"},
           {"op": "remove", "path": "/gender"},
           {"op": "add", "path": "/active", "value": True}]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    body = response.json()
    assert body["name"][0]["family"] == "After"
    assert "gender" not in body and body["active"] is True
    assert body["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "After"


def test_patch_test_operation_failure_is_422(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "test", "path": "/name/0/family", "value": "Other"},
           {"op": "replace", "path": "/name/0/family", "value": "After"}]
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def test_patch_producing_an_invalid_resource_is_rejected(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    before = history_total(client)
    for ops in (
        [{"op": "add", "path": "/notAnElement", "value": 1}],
        [{"op": "replace", "path": "/name/0/family", "value": 12}],
        [{"op": "add", "path": "/birthDate", "value": "2020-02-30"}],
    ):
        response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
        assert 400 <= response.status_code < 500, f"{ops}: {response.status_code}"
        body = outcome(response)
        assert any(i.get("expression") for i in body["issue"]), body
    assert history_total(client) == before


def test_patch_changing_id_or_type_is_rejected(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    for ops in ([{"op": "replace", "path": "/id", "value": "other"}],
                [{"op": "replace", "path": "/resourceType", "value": "Group"}]):
        body = outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
        assert expressions(body), body
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def test_patch_with_a_path_that_does_not_exist_is_4xx(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "replace", "path": "/telecom/5/value", "value": "x"}]
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


@pytest.mark.parametrize(("doc", "expression"), MALFORMED, ids=lambda v: json.dumps(v)[:40])
def test_malformed_patch_document_is_400_and_writes_nothing(
    client: TestClient, doc: Any, expression: str | None
) -> None:
    pid = create(client, patient("Before", gender="female"))["id"]
    before = history_total(client)
    for url in (f"/fhir/Patient/{pid}", "/fhir/Patient/nobody", "/fhir/Patient?gender=female"):
        body = outcome(client.patch(url, json=doc, headers=PATCH), 400)
        if expression is not None:
            assert expressions(body) == [expression], (url, body)
    assert history_total(client) == before
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def _binary(doc: Any) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(doc).encode()).decode()}


@pytest.mark.parametrize(("doc", "expression"), MALFORMED, ids=lambda v: json.dumps(v)[:40])
def test_malformed_patch_in_a_batch_fails_only_its_entry(
    client: TestClient, doc: Any, expression: str | None
) -> None:
    pid = create(client, patient("Before"))["id"]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _binary(doc), "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
        {"resource": _binary(doc), "request": {"method": "PATCH", "url": "Patient/nobody"}},
        {"resource": patient("Other"), "request": {"method": "POST", "url": "Patient"}},
    ]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    for index in (0, 1):
        reply = entries[index]["response"]
        assert reply["status"].startswith("400"), reply
        assert expressions(reply["outcome"]) == [f"Bundle.entry[{index}].resource.data"]
    assert entries[2]["response"]["status"].startswith("201")
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


@pytest.mark.parametrize(("doc", "expression"), MALFORMED, ids=lambda v: json.dumps(v)[:40])
def test_malformed_patch_in_a_transaction_is_400_and_writes_nothing(
    client: TestClient, doc: Any, expression: str | None
) -> None:
    pid = create(client, patient("Before"))["id"]
    before = history_total(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Other"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": _binary(doc), "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
    ]}
    body = outcome(client.post("/fhir", json=bundle), 400)
    assert expressions(body) == ["Bundle.entry[1].resource.data"]
    assert history_total(client) == before


def test_patch_that_cannot_be_applied_names_the_operation(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    before = history_total(client)
    for ops in (
        [{"op": "add", "path": "/active", "value": True},
         {"op": "replace", "path": "/telecom/5/value", "value": "x"}],
        [{"op": "remove", "path": "/gender"}],
        [{"op": "add", "path": "/name/-/family", "value": "x"}],
        [{"op": "move", "from": "/name", "path": "/name/0/x"}],
    ):
        body = outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
        assert expressions(body) == [f"[{len(ops) - 1}].path"], (ops, body)
    assert history_total(client) == before


def test_patch_with_wrong_content_type_is_415(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    for ctype in ("application/fhir+json", "application/json", "text/plain"):
        outcome(client.patch(f"/fhir/Patient/{pid}", json=ops,
                             headers={"Content-Type": ctype}), 415)
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def test_patch_missing_is_404_and_deleted_is_410(client: TestClient) -> None:
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    outcome(client.patch("/fhir/Patient/nobody", json=ops, headers=PATCH), 404)
    pid = create(client, patient("Before"))["id"]
    client.delete(f"/fhir/Patient/{pid}")
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 410)


def test_conditional_patch(client: TestClient) -> None:
    pid = create(client, patient("Before", identifier=("urn:s", "p1")))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    response = client.patch("/fhir/Patient?identifier=urn:s|p1", json=ops, headers=PATCH)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == pid
