"""Date ranges stored inverted (a Period whose end precedes its start) are found by the same
rules as any other on both stores: the search plans read them apart from the ordered ranges
(``store/sql/query.py``), and must not lose them."""

from __future__ import annotations

import pytest

from tests.support import TestClient, create


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("date=2024-03", {"inverted", "ordered"}),  # eq: both within March
        ("date=eq2024-03", {"inverted", "ordered"}),
        # eq is "stored low >= search low and stored high <= search high": the inverted range
        # [03-10, 03-03) meets both for 03-05, the ordered one does not
        ("date=2024-03-05", {"inverted"}),
        ("date=le2024-03-31", {"inverted", "ordered"}),
        ("date=ge2024-03-01", {"inverted", "ordered"}),
        ("date=2024", {"inverted", "ordered"}),
        ("date=2023", set()),
        ("date=ne2024-03", set()),
    ],
)
def test_inverted_periods_match_like_any_other(
    client: TestClient, query: str, found: set[str]
) -> None:
    ids = {}
    for name, start, end in (
        ("inverted", "2024-03-10", "2024-03-02"),
        ("ordered", "2024-03-02", "2024-03-10"),
    ):
        body = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "FLD"},
            "period": {"start": start, "end": end},
        }
        ids[create(client, body)["id"]] = name
    response = client.get(f"/fhir/Encounter?{query}")
    assert response.status_code == 200, response.text
    got = {ids[e["resource"]["id"]] for e in response.json().get("entry", [])}
    assert got == found
