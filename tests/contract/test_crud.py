"""read, vread, create, update (and update-as-create), delete: statuses, versions, headers."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from tests.support import (
    BASE,
    FHIR_JSON,
    TestClient,
    create,
    etag_version,
    outcome,
    patient,
    put,
)


def test_create_returns_201_with_location_etag_last_modified_and_body(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient("Alpha"),
                           headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["resourceType"] == "Patient"
    assert body["name"] == [{"family": "Alpha"}]
    new_id = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["location"] == f"{BASE}/Patient/{new_id}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert parsedate_to_datetime(response.headers["last-modified"]) is not None
    assert response.headers["content-type"].startswith(FHIR_JSON)


def test_create_ignores_a_client_supplied_id(client: TestClient) -> None:
    body = create(client, patient("Alpha", id="client-chose-this"))
    assert body["id"] != "client-chose-this"
    assert client.get("/fhir/Patient/client-chose-this").status_code == 404


def test_read_returns_the_current_version(client: TestClient) -> None:
    created = create(client, patient("Alpha"))
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'
    assert "last-modified" in response.headers


def test_read_unknown_id_is_404_operation_outcome(client: TestClient) -> None:
    outcome(client.get("/fhir/Patient/does-not-exist"), 404)


def test_update_makes_version_2_and_vread_keeps_both(client: TestClient) -> None:
    created = create(client, patient("Alpha"))
    pid = created["id"]
    changed = {**patient("Beta"), "id": pid}
    response = put(client, changed)
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"] == f"{BASE}/Patient/{pid}/_history/2"
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1")
    v2 = client.get(f"/fhir/Patient/{pid}/_history/2")
    assert v1.status_code == 200 and v1.json()["name"][0]["family"] == "Alpha"
    assert v1.headers["etag"] == 'W/"1"'
    assert v2.status_code == 200 and v2.json()["name"][0]["family"] == "Beta"
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "2"


def test_versions_are_consecutive_integers_from_1(client: TestClient) -> None:
    pid = create(client, patient("v"))["id"]
    for n in range(2, 6):
        response = put(client, {**patient(f"v{n}"), "id": pid})
        assert response.status_code == 200, response.text
        assert etag_version(response) == n
        assert response.json()["meta"]["versionId"] == str(n)


def test_update_as_create_is_201_version_1(client: TestClient) -> None:
    response = put(client, {**patient("New"), "id": "chosen-by-client"})
    assert response.status_code == 201, response.text
    assert response.json()["id"] == "chosen-by-client"
    assert response.json()["meta"]["versionId"] == "1"
    assert response.headers["location"] == f"{BASE}/Patient/chosen-by-client/_history/1"
    assert client.get("/fhir/Patient/chosen-by-client").status_code == 200


def test_delete_then_read_410_and_vread_of_deletion_410(client: TestClient) -> None:
    pid = create(client, patient("Gone"))["id"]
    response = client.delete(f"/fhir/Patient/{pid}")
    assert response.status_code in (200, 202, 204), response.text
    outcome(client.get(f"/fhir/Patient/{pid}"), 410)
    outcome(client.get(f"/fhir/Patient/{pid}/_history/2"), 410)
    older = client.get(f"/fhir/Patient/{pid}/_history/1")
    assert older.status_code == 200, "earlier versions stay readable after a delete"


def test_delete_missing_or_already_deleted_is_success(client: TestClient) -> None:
    response = client.delete("/fhir/Patient/never-existed")
    assert response.status_code in (200, 204), response.text
    pid = create(client, patient("Twice"))["id"]
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)
    again = client.delete(f"/fhir/Patient/{pid}")
    assert again.status_code in (200, 204), again.text
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert len(history["entry"]) == 2, "deleting a deleted resource must not add a version"


def test_put_on_a_deleted_id_creates_a_new_version_201(client: TestClient) -> None:
    pid = create(client, patient("Phoenix"))["id"]
    client.delete(f"/fhir/Patient/{pid}")
    response = put(client, {**patient("Phoenix"), "id": pid})
    assert response.status_code == 201, response.text
    assert response.json()["meta"]["versionId"] == "3"
    assert response.headers["etag"] == 'W/"3"'
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_prefer_return_minimal_has_an_empty_body(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient("Min"),
                           headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["location"].startswith(f"{BASE}/Patient/")
    assert response.headers["etag"] == 'W/"1"'
    pid = response.headers["location"].split("/")[-3]
    update = put(client, {**patient("Min2"), "id": pid}, Prefer="return=minimal")
    assert update.status_code == 200 and update.content == b""


def test_prefer_return_operation_outcome(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient("OO"),
                           headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201
    outcome(response)
    assert response.headers["location"].startswith(f"{BASE}/Patient/")


def test_prefer_return_representation_is_the_default(client: TestClient) -> None:
    explicit = client.post("/fhir/Patient", json=patient("Rep"),
                           headers={"Prefer": "return=representation"})
    assert explicit.status_code == 201
    assert explicit.json()["resourceType"] == "Patient"
    default = client.post("/fhir/Patient", json=patient("Rep"))
    assert default.json()["resourceType"] == "Patient"


def test_meta_is_kept_but_version_and_last_updated_are_the_servers(client: TestClient) -> None:
    body = create(client, patient(
        "Meta", meta={"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z",
                      "tag": [{"system": "urn:t", "code": "x"}]}))
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]
