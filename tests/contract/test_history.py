"""History: instance, type and system; newest first; _since, _at, _count and paging."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support import TestClient, all_pages, create, outcome, patient, put


def _version_of(entry: dict[str, Any]) -> tuple[str, str]:
    """(Type/id, version) of a history entry, from fullUrl and response.etag."""
    path = "/".join(entry["fullUrl"].split("/")[-2:])
    etag = entry["response"]["etag"]
    assert etag.startswith('W/"'), entry
    return path, etag[3:-1]


def _make_versions(client: TestClient) -> str:
    """Patient with versions 1 (create), 2 (update), 3 (delete); returns its id."""
    pid = create(client, patient("Hist"))["id"]
    assert put(client, {**patient("Hist2"), "id": pid}).status_code == 200
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)
    return pid


def test_instance_history_newest_first_with_a_delete_entry(client: TestClient) -> None:
    pid = _make_versions(client)
    response = client.get(f"/fhir/Patient/{pid}/_history")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    entries = bundle["entry"]
    assert [_version_of(e)[1] for e in entries] == ["3", "2", "1"]
    deletion, update, creation = entries
    assert deletion["request"]["method"] == "DELETE"
    assert "resource" not in deletion, "a delete entry has no resource"
    assert update["request"]["method"] == "PUT"
    assert update["resource"]["name"][0]["family"] == "Hist2"
    assert update["resource"]["meta"]["versionId"] == "2"
    assert creation["request"]["method"] == "POST"
    assert creation["resource"]["meta"]["versionId"] == "1"
    for entry in entries:
        assert entry["response"]["status"][:3] in ("200", "201", "204"), entry
        assert entry["response"]["lastModified"]


def test_instance_history_of_unknown_resource_is_404(client: TestClient) -> None:
    outcome(client.get("/fhir/Patient/nobody/_history"), 404)


def test_type_history_lists_only_that_type(client: TestClient) -> None:
    pid = _make_versions(client)
    org = create(client, {"resourceType": "Organization", "name": "Org"})
    patients = client.get("/fhir/Patient/_history").json()
    assert [_version_of(e) for e in patients["entry"]] == [
        (f"Patient/{pid}", "3"), (f"Patient/{pid}", "2"), (f"Patient/{pid}", "1")
    ]
    orgs = client.get("/fhir/Organization/_history").json()
    assert [_version_of(e) for e in orgs["entry"]] == [(f"Organization/{org['id']}", "1")]


def test_system_history_lists_everything_newest_first(client: TestClient) -> None:
    pid = _make_versions(client)
    org = create(client, {"resourceType": "Organization", "name": "Org"})
    bundle = client.get("/fhir/_history").json()
    assert bundle["type"] == "history"
    assert [_version_of(e) for e in bundle["entry"]] == [
        (f"Organization/{org['id']}", "1"),
        (f"Patient/{pid}", "3"), (f"Patient/{pid}", "2"), (f"Patient/{pid}", "1"),
    ]
    stamps = [e["response"]["lastModified"] for e in bundle["entry"]]
    assert stamps == sorted(stamps, reverse=True), "newest first"


def test_since_is_inclusive_and_filters_older_versions(client: TestClient) -> None:
    first = create(client, patient("Old"))
    second = create(client, patient("New"))
    since = second["meta"]["lastUpdated"]
    for url in ("/fhir/_history", "/fhir/Patient/_history"):
        bundle = client.get(url, params={"_since": since}).json()
        ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
        assert ids == [second["id"]], f"{url}?_since={since}: {ids}"
    earlier = client.get("/fhir/_history", params={"_since": first["meta"]["lastUpdated"]}).json()
    assert len(earlier["entry"]) == 2


def test_since_must_be_an_instant(client: TestClient) -> None:
    outcome(client.get("/fhir/_history", params={"_since": "not-a-date"}), 400)


def test_at_gives_the_version_current_at_that_moment(client: TestClient) -> None:
    created = create(client, patient("First"))
    pid = created["id"]
    updated = put(client, {**patient("Second"), "id": pid}).json()
    at_v1 = client.get(f"/fhir/Patient/{pid}/_history",
                       params={"_at": created["meta"]["lastUpdated"]}).json()
    assert [_version_of(e)[1] for e in at_v1.get("entry", [])] == ["1"], at_v1
    at_v2 = client.get(f"/fhir/Patient/{pid}/_history",
                       params={"_at": updated["meta"]["lastUpdated"]}).json()
    assert [_version_of(e)[1] for e in at_v2.get("entry", [])] == ["2"], at_v2
    before = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": "2000-01-01"}).json()
    assert not before.get("entry"), "nothing was current in 2000"


def test_count_and_next_links_list_every_version_exactly_once(client: TestClient) -> None:
    expected: list[tuple[str, str]] = []
    for n in range(5):
        pid = create(client, patient(f"P{n}"))["id"]
        expected.append((f"Patient/{pid}", "1"))
        for v in (2, 3):
            assert put(client, {**patient(f"P{n}v{v}"), "id": pid}).status_code == 200
            expected.append((f"Patient/{pid}", str(v)))
    for url in ("/fhir/_history?_count=4", "/fhir/Patient/_history?_count=4"):
        first = client.get(url).json()
        assert len(first["entry"]) == 4, "_count limits the page"
        seen = [_version_of(e) for e in all_pages(client, url)]
        duplicates = [k for k, n in Counter(seen).items() if n > 1]
        assert not duplicates, f"{url}: listed twice: {duplicates}"
        assert sorted(seen) == sorted(expected), f"{url}: missing {set(expected) - set(seen)}"
    instance = expected[0][0].split("/")[1]
    pages = all_pages(client, f"/fhir/Patient/{instance}/_history?_count=1")
    assert [_version_of(e)[1] for e in pages] == ["3", "2", "1"]


def test_paging_keeps_since_in_next_links(client: TestClient) -> None:
    old = create(client, patient("Old"))
    newer = [create(client, patient(f"N{n}")) for n in range(3)]
    since = newer[0]["meta"]["lastUpdated"]
    entries = all_pages(client, f"/fhir/_history?_count=1&_since={since}")
    ids = [e["resource"]["id"] for e in entries]
    assert old["id"] not in ids
    assert sorted(ids) == sorted(p["id"] for p in newer)


def test_unknown_history_parameter_is_400(client: TestClient) -> None:
    body = outcome(client.get("/fhir/_history", params={"_bogus": "1"}), 400)
    assert body["issue"][0].get("expression") == ["_bogus"]


def test_update_as_create_is_a_put_entry_with_201(client: TestClient) -> None:
    assert put(client, {**patient("X"), "id": "upc"}).status_code == 201
    entry = client.get("/fhir/Patient/upc/_history").json()["entry"][0]
    assert entry["request"] == {"method": "PUT", "url": "Patient/upc"}
    assert entry["response"]["status"].startswith("201")
