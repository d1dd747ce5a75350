"""ETag, If-Match (PUT/PATCH/DELETE), If-None-Match, If-Modified-Since, Last-Modified."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from tests.support import TestClient, create, outcome, patient, put

PATCH = "application/json-patch+json"


@pytest.mark.parametrize("tag", ['W/"1"', '"1"'])
def test_if_match_current_version_allows_put(client: TestClient, tag: str) -> None:
    pid = create(client, patient("A"))["id"]
    response = put(client, {**patient("B"), "id": pid}, **{"If-Match": tag})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'


@pytest.mark.parametrize("tag", ['W/"1"', '"1"'])
def test_if_match_stale_version_is_412_on_put_patch_delete(client: TestClient, tag: str) -> None:
    pid = create(client, patient("A"))["id"]
    assert put(client, {**patient("B"), "id": pid}).status_code == 200
    outcome(put(client, {**patient("C"), "id": pid}, **{"If-Match": tag}), 412)
    ops = [{"op": "replace", "path": "/name/0/family", "value": "D"}]
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops,
                         headers={"Content-Type": PATCH, "If-Match": tag}), 412)
    outcome(client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": tag}), 412)
    current = client.get(f"/fhir/Patient/{pid}")
    assert current.status_code == 200
    assert current.json()["name"][0]["family"] == "B", "a 412 must change nothing"
    assert current.headers["etag"] == 'W/"2"'


def test_if_match_current_version_allows_patch_and_delete(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "P"}]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops,
                            headers={"Content-Type": PATCH, "If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    deleted = client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": '"2"'})
    assert deleted.status_code in (200, 204), deleted.text
    outcome(client.get(f"/fhir/Patient/{pid}"), 410)


def test_malformed_if_match_is_400(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    outcome(put(client, {**patient("B"), "id": pid}, **{"If-Match": "version one"}), 400)


def test_if_none_match_current_version_is_304(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    for tag in ('W/"1"', '"1"', "*"):
        response = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": tag})
        assert response.status_code == 304, f"{tag}: {response.status_code}"
        assert response.content == b""
    assert put(client, {**patient("B"), "id": pid}).status_code == 200
    changed = client.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert changed.status_code == 200
    assert changed.json()["meta"]["versionId"] == "2"


def test_if_modified_since(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    response = client.get(f"/fhir/Patient/{pid}")
    last_modified = response.headers["last-modified"]
    stamp = parsedate_to_datetime(last_modified)
    assert stamp.microsecond == 0, "HTTP dates have whole seconds"
    same = client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": last_modified})
    assert same.status_code == 304, same.text
    later = format_datetime(stamp + timedelta(seconds=5), usegmt=True)
    assert client.get(f"/fhir/Patient/{pid}",
                      headers={"If-Modified-Since": later}).status_code == 304
    earlier = format_datetime(stamp - timedelta(seconds=1), usegmt=True)
    modified = client.get(f"/fhir/Patient/{pid}", headers={"If-Modified-Since": earlier})
    assert modified.status_code == 200
    assert modified.json()["id"] == pid


def test_last_modified_matches_meta_last_updated(client: TestClient) -> None:
    created = create(client, patient("A"))
    response = client.get(f"/fhir/Patient/{created['id']}")
    header = parsedate_to_datetime(response.headers["last-modified"])
    meta = created["meta"]["lastUpdated"]
    assert header.strftime("%Y-%m-%dT%H:%M:%S") == meta[:19], (header, meta)


def test_if_none_match_on_vread_is_304(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    response = client.get(f"/fhir/Patient/{pid}/_history/1", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304 and response.content == b""


def test_read_of_deleted_carries_the_deletion_etag(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    client.delete(f"/fhir/Patient/{pid}")
    response = client.get(f"/fhir/Patient/{pid}")
    outcome(response, 410)
    assert response.headers.get("etag") == 'W/"2"'
