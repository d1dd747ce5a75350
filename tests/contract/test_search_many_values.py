"""Many comma-separated values in one parameter: searches, If-None-Exist, conditional delete
and POST ``_search`` answer up to ``MAX_VALUES`` values per parameter (and
``MAX_SEARCH_VALUES`` per search) on both stores, and 400 with an OperationOutcome beyond."""

from __future__ import annotations

from typing import Any

import pytest

from server.search.parse import MAX_SEARCH_VALUES, MAX_VALUES
from tests.support import FHIR_JSON, TestClient, create, expressions, outcome, patient

SYS = "urn:calaim:cin"


def _values(prefix: str, count: int, real: str) -> str:
    """``count`` values, the last one ``real`` (the one that matches)."""
    return ",".join([*(f"{prefix}{i}" for i in range(count - 1)), real])


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def _refused(body: dict[str, Any]) -> None:
    """The OperationOutcome of a conditional interaction refused for its number of values:
    the diagnostics say why, the expression names the parameter."""
    diagnostics = [i.get("diagnostics", "") for i in body["issue"]]
    assert any(f"'name' has {MAX_VALUES + 1} values" in d for d in diagnostics), body
    assert "name" in expressions(body), body


@pytest.fixture
def people(client: TestClient) -> dict[str, str]:
    """Two patients: their ids by family name."""
    made = {}
    for family, cin, born in (("Quill", "c-1", "1980-02-03"), ("Ember", "c-2", "1990-04-05")):
        made[family] = create(client, patient(family, identifier=(SYS, cin), birthDate=born))["id"]
    return made


@pytest.mark.parametrize(
    ("param", "prefix", "real", "who"),
    [
        ("name", "n", "quil", "Quill"),  # string: a range per value
        ("family:exact", "N", "Ember", "Ember"),  # exact string: IN lists
        ("identifier", f"{SYS}|x", f"{SYS}|c-2", "Ember"),  # token: one system's codes
        ("identifier", "x", "c-1", "Quill"),  # token without system
        ("birthdate", "1900-01-", "1980-02-03", "Quill"),  # date ranges
        ("_id", "none-", "{Ember}", "Ember"),
    ],
    ids=["string", "string-exact", "token-system", "token-code", "date", "id"],
)
@pytest.mark.parametrize("count", [500, MAX_VALUES])
def test_a_parameter_with_many_values_searches(
    client: TestClient,
    people: dict[str, str],
    param: str,
    prefix: str,
    real: str,
    who: str,
    count: int,
) -> None:
    real = real.format(**people)
    if param == "birthdate":  # valid dates that match nobody
        values = [f"19{i // 12 % 100:02d}-{i % 12 + 1:02d}" for i in range(count - 1)]
        query = ",".join([*values, real])
    else:
        query = _values(prefix, count, real)
    response = client.get("/fhir/Patient", params={param: query})
    assert response.status_code == 200, response.text[:500]
    assert _ids(response.json()) == {people[who]}


def test_post_search_with_many_values(client: TestClient, people: dict[str, str]) -> None:
    response = client.post(
        "/fhir/Patient/_search",
        data={"name": _values("n", 500, "ember")},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text[:500]
    assert _ids(response.json()) == {people["Ember"]}


def test_if_none_exist_with_many_values_finds_the_match(
    client: TestClient, people: dict[str, str]
) -> None:
    response = client.post(
        "/fhir/Patient",
        json=patient("Other", identifier=(SYS, "c-9")),
        headers={
            "Content-Type": FHIR_JSON,
            "If-None-Exist": "identifier=" + _values(f"{SYS}|x", 500, f"{SYS}|c-1"),
        },
    )
    assert response.status_code == 200, response.text[:500]
    assert people["Quill"] in response.headers["location"]


def test_conditional_delete_with_many_values(client: TestClient, people: dict[str, str]) -> None:
    response = client.delete("/fhir/Patient", params={"name": _values("n", 500, "quill")})
    assert response.status_code in (200, 204), response.text[:500]
    assert client.get(f"/fhir/Patient/{people['Quill']}").status_code == 410
    assert client.get(f"/fhir/Patient/{people['Ember']}").status_code == 200


def test_more_values_than_the_maximum_is_400(client: TestClient, people: dict[str, str]) -> None:
    too_many = _values("n", MAX_VALUES + 1, "quill")
    body = outcome(client.get("/fhir/Patient", params={"name": too_many}), 400)
    assert "name" in expressions(body)
    # the same limit guards conditional interactions and POST _search
    created = client.post(
        "/fhir/Patient",
        json=patient("Other"),
        headers={"Content-Type": FHIR_JSON, "If-None-Exist": f"name={too_many}"},
    )
    _refused(outcome(created, 400))
    searched = client.post(
        "/fhir/Patient/_search",
        data={"name": too_many},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "name" in expressions(outcome(searched, 400))
    _refused(outcome(client.delete("/fhir/Patient", params={"name": too_many}), 400))
    assert client.get(f"/fhir/Patient/{people['Quill']}").status_code == 200


def test_more_values_in_the_whole_search_than_the_maximum_is_400(
    client: TestClient, people: dict[str, str]
) -> None:
    per = MAX_VALUES
    params = [("name", _values(f"n{k}-", per, "quill")) for k in range(MAX_SEARCH_VALUES // per)]
    response = client.get("/fhir/Patient", params=params)
    assert response.status_code == 200, response.text[:500]
    assert _ids(response.json()) == {people["Quill"]}
    params.append(("identifier", "x"))
    body = outcome(client.get("/fhir/Patient", params=params), 400)
    assert "identifier" in expressions(body)
