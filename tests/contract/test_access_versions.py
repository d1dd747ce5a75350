"""Access policies on versions: history narrowed inside its statement, deletions told apart.

Each version is judged by its own access facts (labels, compartment owners) and the resource
by its current ones, both as clauses of the history statement, so a history page holds
``_count`` visible versions whatever entered or left the view. A deletion keeps the facts of
the version it deletes: a caller who could see the resource reads 410 Gone, any other the
404 of a resource that never existed.

The changes below (made by the operator on top of ``tests/access_scene.py``'s scene) and
every expectation are written by hand:

* o5 (p1, unlabelled) gains the label: v2 labelled, still p1's;
* o7 (p2, unlabelled) moves to p1 with the label: v2 enters both views;
* o3 (p1, labelled) moves to p2 without the label: it leaves both views, its history too;
* o2 (p1, labelled), o6 (p2, labelled) and o8 (p2, unlabelled) are deleted (v2).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.access_scene import LABEL, policy_apps, seed
from tests.support import TestClient, all_pages, clear_store

HISTORY = {
    "label": {"o1/1", "o2/1", "o2/2", "o5/2", "o6/1", "o6/2", "o7/2"},
    "compartment": {"o1/1", "o2/1", "o2/2", "o4/1", "o5/1", "o5/2", "o7/2"},
}
# read of each changed resource: 200, 410 (gone, and the caller could see it) or 404
READS = {
    "label": {"o2": 410, "o3": 404, "o5": 200, "o6": 410, "o7": 200, "o8": 404},
    "compartment": {"o2": 410, "o3": 404, "o5": 200, "o6": 404, "o7": 200, "o8": 404},
}


@pytest.fixture(scope="module")
def apps(database_url: str) -> Iterator[dict[str, TestClient]]:
    with policy_apps(database_url) as apps:
        clear_store(database_url)
        seed(apps["operator"])
        _change(apps["operator"])
        yield apps


@pytest.fixture(params=["label", "compartment"])
def policy(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _observation(id: str, subject: str, labelled: bool) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        **({"meta": {"security": [LABEL]}} if labelled else {}),
        "status": "amended",
        "code": {"coding": [{"system": "urn:test:codes", "code": "c-any"}]},
        "subject": {"reference": f"Patient/{subject}"},
    }


def _change(operator: TestClient) -> None:
    for id, subject, labelled in (("o5", "p1", True), ("o7", "p1", True), ("o3", "p2", False)):
        response = operator.put(f"/fhir/Observation/{id}", json=_observation(id, subject, labelled))
        assert response.status_code == 200, response.text
    for id in ("o2", "o6", "o8"):
        assert operator.delete(f"/fhir/Observation/{id}").status_code in (200, 204)


def _versions(entries: list[dict[str, Any]]) -> list[str]:
    return [
        e["fullUrl"].split("/")[-1] + "/" + e["response"]["etag"].split('"')[1] for e in entries
    ]


def _pages(client: TestClient, url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        bundle = client.get(next_url).json()
        pages.append(_versions(bundle.get("entry", [])))
        next_url = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
    return pages


@pytest.mark.parametrize("count", [1, 2, 3])
def test_type_history_pages_are_full_and_list_every_visible_version(
    apps: dict[str, TestClient], policy: str, count: int
) -> None:
    pages = _pages(apps[policy], f"/fhir/Observation/_history?_count={count}")
    listed = [v for page in pages for v in page]
    assert sorted(listed) == sorted(HISTORY[policy])
    assert len(listed) == len(set(listed))
    assert all(len(page) == count for page in pages[:-1]), pages
    assert 1 <= len(pages[-1]) <= count, pages


def test_system_history_lists_the_same_visible_versions(
    apps: dict[str, TestClient], policy: str
) -> None:
    pages = _pages(apps[policy], "/fhir/_history?_count=2")
    observations = [v for page in pages for v in page if v[0] == "o" and v[1].isdigit()]
    assert sorted(observations) == sorted(HISTORY[policy])
    assert all(len(page) == 2 for page in pages[:-1]), pages


def test_instance_history_and_vread_go_by_each_version(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    for id in ("o2", "o3", "o5", "o6", "o7"):
        expected = sorted(v for v in HISTORY[policy] if v.split("/")[0] == id)
        response = client.get(f"/fhir/Observation/{id}/_history")
        if not expected:
            assert response.status_code == 404, (id, response.text)
            continue
        assert sorted(_versions(all_pages(client, f"/fhir/Observation/{id}/_history"))) == (
            expected
        ), id
        for version in (1, 2):
            got = client.get(f"/fhir/Observation/{id}/_history/{version}")
            if f"{id}/{version}" not in HISTORY[policy]:
                assert got.status_code == 404, (id, version, got.text)
            elif f"{id}/{version}" in ("o2/2", "o6/2"):
                assert got.status_code == 410, (id, version, got.text)
            else:
                assert got.status_code == 200, (id, version, got.text)


def test_a_deleted_resource_is_gone_for_who_could_see_it_and_missing_for_the_others(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    missing = client.get("/fhir/Observation/never")
    for id, status in READS[policy].items():
        response = client.get(f"/fhir/Observation/{id}")
        assert response.status_code == status, (id, response.text)
        if status == 404:  # told exactly what a resource that never existed is told
            assert response.text.replace(id, "X") == missing.text.replace("never", "X")


def test_the_operator_sees_every_deletion_as_gone(apps: dict[str, TestClient]) -> None:
    for id in ("o2", "o6", "o8"):
        assert apps["operator"].get(f"/fhir/Observation/{id}").status_code == 410
