"""JSON Patch (application/json-patch+json)."""

from __future__ import annotations

from tests.support import TestClient, create, history_total, outcome, patient

PATCH = {"Content-Type": "application/json-patch+json"}


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
        response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
        assert 400 <= response.status_code < 500, response.text
        outcome(response)


def test_patch_with_a_path_that_does_not_exist_is_4xx(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "replace", "path": "/telecom/5/value", "value": "x"}]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
    assert 400 <= response.status_code < 500
    outcome(response)


def test_malformed_patch_document_is_400(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    for doc in ({"op": "replace"}, [{"op": "explode", "path": "/x"}], [{"path": "/x"}]):
        outcome(client.patch(f"/fhir/Patient/{pid}", json=doc, headers=PATCH), 400)


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
