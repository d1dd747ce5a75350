"""``_total=estimate``: from the database's statistics where it keeps them (PostgreSQL, for a
caller who may see everything), the exact count otherwise (SQLite keeps none)."""

from __future__ import annotations

import psycopg

from tests.support import TestClient


def _basics(client: TestClient, n: int) -> None:
    entries = [
        {
            "resource": {"resourceType": "Basic", "code": {"text": "even" if i % 2 else "odd"}},
            "request": {"method": "POST", "url": "Basic"},
        }
        for i in range(n)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert client.post("/fhir", json=bundle).status_code == 200


def test_an_estimated_total(client: TestClient, database_url: str) -> None:
    _basics(client, 200)
    exact = client.get("/fhir/Basic?_total=accurate&_count=5").json()
    assert exact["total"] == 200 and len(exact["entry"]) == 5
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # what autovacuum does on its own on a live store
    estimated = client.get("/fhir/Basic?_total=estimate&_count=5").json()
    assert len(estimated["entry"]) == 5  # the page itself is never estimated
    if database_url.startswith("sqlite"):
        assert estimated["total"] == 200
    else:  # the planner's figure from the statistics: close, not necessarily exact
        assert abs(estimated["total"] - 200) <= 20, estimated["total"]
    none = client.get("/fhir/Basic?_count=5").json()
    assert "total" not in none
