"""The query time budget (``query_budget_ms``): a search the database runs longer than it is
stopped and answered ``too-costly``, on both stores; the connection is left as it was."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import orjson

from tests.support import TestClient, logged, outcome

# :contains cannot use an index, the sort and the total read every match: tens of ms on
# 2,000 Patients, against a budget of 1 ms
COSTLY = "/fhir/Patient?given:contains=q&_sort=-given&_total=accurate&_count=5"


def _load(client: TestClient, patients: int) -> None:
    for start in range(0, patients, 500):
        entries = [
            {
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": f"f{n}", "given": [f"g{k}q{n}" for k in range(5)]}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
            for n in range(start, start + 500)
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = client.post(
            "/fhir", content=orjson.dumps(bundle), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text[:300]


def test_a_search_past_its_budget_is_too_costly(
    client: TestClient,
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    _load(client, 2000)
    assert client.get(COSTLY).json()["total"] == 2000  # the default budget is ample
    with make_client(query_budget_ms=1) as tight:
        with logged("calaim_fhir.store") as log:
            response = tight.get(COSTLY)
        issue = outcome(response, 400)["issue"][0]
        assert issue["code"] == "too-costly" and "1 ms" in issue["diagnostics"]
        assert any("query budget" in line for line in log.messages)
        # POST _search and a conditional create's search are searches too
        posted = tight.post(
            "/fhir/Patient/_search",
            content="given:contains=q&_sort=-given&_total=accurate",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert outcome(posted, 400)["issue"][0]["code"] == "too-costly"
        # what does not search is not budgeted, and the connections are left without it
        pid = client.get("/fhir/Patient?_count=1").json()["entry"][0]["resource"]["id"]
        assert tight.get(f"/fhir/Patient/{pid}").status_code == 200
        _load(tight, 500)
    assert client.get(COSTLY).json()["total"] == 2500


def test_no_budget_lets_a_costly_search_run(
    client: TestClient, make_client: Callable[..., AbstractContextManager[TestClient]]
) -> None:
    _load(client, 500)
    with make_client(query_budget_ms=0) as unbounded:
        assert unbounded.get(COSTLY).json()["total"] == 500
