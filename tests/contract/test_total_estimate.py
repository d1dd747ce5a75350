"""``Bundle.total``. ``_total=estimate``: from the database's statistics where it keeps them
(PostgreSQL, for a caller who may see everything), the exact count otherwise (SQLite keeps
none). Without ``_total`` (``CALAIM_FHIR_DEFAULT_TOTAL=auto``): the exact count when counting
is cheap, the estimate where counting would read every match of a broad search, and no total
where the store keeps no estimate."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from tests.support import TestClient

CODES = "urn:test:parity"
BROAD = 1_100  # more than a probe's bound (1,000 index entries): counting them is "slow"


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
    none = client.get("/fhir/Basic?_total=none&_count=5").json()
    assert "total" not in none


def _coded(client: TestClient) -> None:
    """BROAD Basics: half ``even``, half ``odd``, and 5 of them also ``rare``."""
    for start in (0, BROAD // 2):
        entries = [
            {
                "resource": {
                    "resourceType": "Basic",
                    "code": {"coding": [{"system": CODES, "code": "even" if i % 2 else "odd"}]
                             + ([{"system": CODES, "code": "rare"}] if i < 5 else [])},
                },
                "request": {"method": "POST", "url": "Basic"},
            }
            for i in range(start, start + BROAD // 2)
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        assert client.post("/fhir", json=bundle).status_code == 200


def _analyze(database_url: str) -> None:
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # what autovacuum does on its own on a live store


def _total(client: TestClient, query: str, **headers: str) -> int | None:
    response = client.get(f"/fhir/Basic?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "searchset"
    total = body.get("total")
    return None if total is None else int(total)


def test_every_search_has_a_total_when_counting_is_cheap(client: TestClient) -> None:
    _basics(client, 200)
    page = client.get("/fhir/Basic?_count=5").json()
    assert page["total"] == 200 and len(page["entry"]) == 5  # a type of fewer than 1,000
    assert _total(client, "code:text=even") == 100
    assert _total(client, "code:text=nothing") == 0
    # the next page too, and the self link does not claim a _total the client did not send
    following = client.get(next(x["url"] for x in page["link"] if x["relation"] == "next"))
    assert following.json()["total"] == 200
    assert "_total" not in next(x["url"] for x in page["link"] if x["relation"] == "self")


def test_a_broad_search_is_estimated_or_left_uncounted(client: TestClient, database_url: str
                                                       ) -> None:
    _coded(client)
    _analyze(database_url)
    # narrow clauses count exactly, whatever the size of the type
    assert _total(client, f"code={CODES}|rare") == 5
    assert _total(client, f"code={CODES}|rare&_lastUpdated=gt2000-01-01") == 5
    assert _total(client, f"code={CODES}|even") == BROAD // 2  # 550 entries: under the bound
    # broad: every clause (or the type) holds 1,000 or more
    for broad in ("_count=5", "_lastUpdated=gt2000-01-01&_count=5",
                  f"code={CODES}|even,{CODES}|odd&_count=5"):
        total = _total(client, broad)
        if database_url.startswith("sqlite"):
            assert total is None, broad  # no statistics: no total rather than a slow page
        else:
            assert total is not None and abs(total - BROAD) <= BROAD // 10, (broad, total)
        assert _total(client, f"{broad}&_total=accurate") == BROAD
        assert _total(client, f"{broad}&_total=none") is None
    assert _total(client, "_count=0") == BROAD  # a page of nothing asks how many: exact
    assert _total(client, "_summary=count") == BROAD


def test_fhirpy_total_method_leaves_the_default_total_alone(client: TestClient) -> None:
    _basics(client, 30)
    lenient = {"Prefer": "handling=lenient"}
    assert _total(client, "_count=2&_totalMethod=count", **lenient) == 30
    assert _total(client, "_count=0&_totalMethod=count", **lenient) == 30
    refused = client.get("/fhir/Basic?_count=2&_totalMethod=count")
    assert refused.status_code == 400


def test_the_default_total_is_a_setting(
    client: TestClient, make_client: Callable[..., AbstractContextManager[TestClient]],
    database_url: str,
) -> None:
    _coded(client)
    _analyze(database_url)
    with make_client(default_total="accurate") as exact:
        assert _total(exact, "_count=5") == BROAD
        assert _total(exact, "_count=5&_total=none") is None
    with make_client(default_total="none") as uncounted:
        assert _total(uncounted, f"code={CODES}|rare") is None
        assert _total(uncounted, f"code={CODES}|rare&_total=accurate") == 5
        assert _total(uncounted, "_count=0") == BROAD


def test_the_capability_statement_says_how_searches_are_counted(
    client: TestClient, make_client: Callable[..., AbstractContextManager[TestClient]]
) -> None:
    statement: dict[str, Any] = client.get("/fhir/metadata").json()
    text = statement["rest"][0]["documentation"]
    assert "Every other search carries the exact count when counting is cheap" in text
    with make_client(default_total="none") as uncounted:
        text = uncounted.get("/fhir/metadata").json()["rest"][0]["documentation"]
        assert "Other searches carry no total." in text
