"""Search: _id, identifier token forms, _lastUpdated prefixes, _count paging, errors."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.support import BASE, TestClient, all_pages, create, outcome, patient

SYS = "urn:calaim:cin"
OTHER = "urn:other"


def _ids(client: TestClient, params: dict[str, str] | list[tuple[str, str]]) -> list[str]:
    response = client.get("/fhir/Patient", params=params)
    assert response.status_code == 200, f"{params}: {response.status_code} {response.text}"
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_search_by_id(client: TestClient) -> None:
    a, b, _ = (create(client, patient(n)) for n in "ABC")
    assert _ids(client, {"_id": a["id"]}) == [a["id"]]
    assert sorted(_ids(client, {"_id": f"{a['id']},{b['id']}"})) == sorted([a["id"], b["id"]])
    assert _ids(client, {"_id": "nobody"}) == []


def test_search_entries_have_full_url_and_match_mode(client: TestClient) -> None:
    a = create(client, patient("A"))
    bundle = client.get("/fhir/Patient", params={"_id": a["id"]}).json()
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{BASE}/Patient/{a['id']}"
    assert entry["search"]["mode"] == "match"
    assert entry["resource"] == a
    assert any(link["relation"] == "self" for link in bundle["link"])


@pytest.fixture
def identified(client: TestClient) -> dict[str, str]:
    """Patients with identifiers: sys|1, other|1, (no system)|1, sys|2."""
    made = {
        "sys1": create(client, patient("S1", identifier=(SYS, "1"))),
        "other1": create(client, patient("O1", identifier=(OTHER, "1"))),
        "nosys1": create(client, {**patient("N1"), "identifier": [{"value": "1"}]}),
        "sys2": create(client, patient("S2", identifier=(SYS, "2"))),
    }
    create(client, patient("None"))
    return {k: v["id"] for k, v in made.items()}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{SYS}|1", ["sys1"]),
        ("|1", ["nosys1"]),
        (f"{SYS}|", ["sys1", "sys2"]),
        ("1", ["sys1", "other1", "nosys1"]),
        (f"{SYS}|1,{OTHER}|1", ["sys1", "other1"]),
        (f"{SYS}|3", []),
    ],
)
def test_search_by_identifier_token_forms(
    client: TestClient, identified: dict[str, str], value: str, expected: list[str]
) -> None:
    got = sorted(_ids(client, {"identifier": value}))
    assert got == sorted(identified[k] for k in expected), f"identifier={value}"


def test_search_identifier_and_id_combine_with_and(client: TestClient,
                                                   identified: dict[str, str]) -> None:
    got = _ids(client, [("identifier", f"{SYS}|"), ("_id", identified["sys2"])])
    assert got == [identified["sys2"]]


def test_search_excludes_deleted_resources(client: TestClient) -> None:
    a = create(client, patient("A", identifier=(SYS, "del")))
    client.delete(f"/fhir/Patient/{a['id']}")
    assert _ids(client, {"identifier": f"{SYS}|del"}) == []
    assert _ids(client, {"_id": a["id"]}) == []


def test_search_sees_updated_identifiers(client: TestClient) -> None:
    a = create(client, patient("A", identifier=(SYS, "before")))
    client.put(f"/fhir/Patient/{a['id']}",
               json={**patient("A", identifier=(SYS, "after")), "id": a["id"]})
    assert _ids(client, {"identifier": f"{SYS}|before"}) == []
    assert _ids(client, {"identifier": f"{SYS}|after"}) == [a["id"]]


def test_search_last_updated_prefixes(client: TestClient) -> None:
    a, b, c = (create(client, patient(n)) for n in "ABC")
    stamp = b["meta"]["lastUpdated"]
    cases: dict[str, list[dict[str, Any]]] = {
        f"gt{stamp}": [c],
        f"ge{stamp}": [b, c],
        f"lt{stamp}": [a],
        f"le{stamp}": [a, b],
        f"eq{stamp}": [b],
        stamp: [b],
        f"ne{stamp}": [a, c],
        "gt2000-01-01": [a, b, c],
        "lt2000-01-01": [],
    }
    for value, expected in cases.items():
        got = sorted(_ids(client, {"_lastUpdated": value}))
        assert got == sorted(r["id"] for r in expected), f"_lastUpdated={value}"
    window = _ids(client, [("_lastUpdated", f"ge{a['meta']['lastUpdated']}"),
                           ("_lastUpdated", f"lt{c['meta']['lastUpdated']}")])
    assert sorted(window) == sorted([a["id"], b["id"]])


def test_search_last_updated_invalid_value_is_400(client: TestClient) -> None:
    outcome(client.get("/fhir/Patient", params={"_lastUpdated": "gtyesterday"}), 400)
    outcome(client.get("/fhir/Patient", params={"_lastUpdated": "xx2020-01-01"}), 400)


def test_count_and_next_links_return_each_resource_exactly_once(client: TestClient) -> None:
    made = [create(client, patient(f"P{n}"))["id"] for n in range(7)]
    first = client.get("/fhir/Patient", params={"_count": "3"}).json()
    assert len(first["entry"]) == 3
    ids = [e["resource"]["id"] for e in all_pages(client, "/fhir/Patient?_count=3")]
    assert not [k for k, n in Counter(ids).items() if n > 1], f"duplicates in {ids}"
    assert sorted(ids) == sorted(made)
    with_criteria = all_pages(client, "/fhir/Patient?_count=2&_lastUpdated=gt2000-01-01")
    assert sorted(e["resource"]["id"] for e in with_criteria) == sorted(made)


def test_paging_survives_updates_between_pages(client: TestClient) -> None:
    made = [create(client, patient(f"P{n}"))["id"] for n in range(4)]
    page = client.get("/fhir/Patient", params={"_count": "2"}).json()
    seen = [e["resource"]["id"] for e in page["entry"]]
    for pid in seen:
        client.put(f"/fhir/Patient/{pid}", json={**patient("changed"), "id": pid})
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    seen += [e["resource"]["id"] for e in all_pages(client, next_url)]
    assert sorted(seen) == sorted(made)


def test_unknown_search_parameter_is_400_operation_outcome(client: TestClient) -> None:
    body = outcome(client.get("/fhir/Patient", params={"bogus": "1"}), 400)
    assert "bogus" in str(body["issue"][0].get("expression", [])), body
    outcome(client.get("/fhir/Patient", params={"identifier:sounds-like": "1"}), 400)
    outcome(client.get("/fhir/Patient", params={"_count": "-1"}), 400)
    outcome(client.get("/fhir/Patient", params={"_sort": "bogus"}), 400)


def test_search_via_post_form(client: TestClient) -> None:
    a = create(client, patient("A"))
    response = client.post("/fhir/Patient/_search", content=f"_id={a['id']}",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [a["id"]]
