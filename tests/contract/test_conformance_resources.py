"""Conformance resources (StructureDefinition, ValueSet, CodeSystem, ConceptMap,
SearchParameter, OperationDefinition) are served read-only from the server's definitions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import FHIR_JSON, TestClient, all_pages, outcome

CUSTOM_SP = "http://hl7.org/fhir/us/sdoh-clinicalcare/SearchParameter/Task-output-reference"
VALIDATE_OP = "http://calaim-fhir.org/fhir/OperationDefinition/Resource-validate"


def _search(client: TestClient, url: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in all_pages(client, url)]


def test_read_a_custom_search_parameter(client: TestClient) -> None:
    response = client.get("/fhir/SearchParameter/Task-output-reference")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == CUSTOM_SP
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert client.get("/fhir/SearchParameter/Task-output-reference/_history/1").status_code == 200
    outcome(client.get("/fhir/SearchParameter/Task-output-reference/_history/2"), 404)
    outcome(client.get("/fhir/SearchParameter/no-such-parameter"), 404)


def test_base_r4_definitions_are_served(client: TestClient) -> None:
    found = _search(
        client, "/fhir/SearchParameter?url=http://hl7.org/fhir/SearchParameter/individual-birthdate"
    )
    assert [r["code"] for r in found] == ["birthdate"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"url={CUSTOM_SP}", [CUSTOM_SP]),
        ("name=TaskOutputReference", [CUSTOM_SP]),
        ("status=active&_id=Task-output-reference", [CUSTOM_SP]),
        ("version=2.3.0&_id=Task-output-reference", [CUSTOM_SP]),
        ("version=9.9.9&_id=Task-output-reference", []),
    ],
)
def test_search_by_url_name_status_version(
    client: TestClient, query: str, expected: list[str] | None
) -> None:
    found = _search(client, f"/fhir/SearchParameter?{query}")
    if expected is not None:
        assert [r["url"] for r in found] == expected
    for resource in found:
        assert resource["resourceType"] == "SearchParameter"


def test_operation_definitions_are_searchable(client: TestClient) -> None:
    found = _search(client, f"/fhir/OperationDefinition?url={VALIDATE_OP}")
    assert [r["id"] for r in found] == ["Resource-validate"]


def test_paging_and_sort_over_definitions(client: TestClient) -> None:
    url = "/fhir/SearchParameter?base=Patient&_count=7&_sort=-code&_total=accurate"
    first = client.get(url).json()
    total = first["total"]
    assert total > 20
    entries = _search(client, url)
    codes = [r["code"] for r in entries]
    assert len(codes) == total == len({r["id"] for r in entries})
    assert codes == sorted(codes, reverse=True)
    # backwards from the last page reaches the first
    last = client.get(url).json()
    pages = 0
    while True:
        following = [link["url"] for link in last["link"] if link["relation"] == "next"]
        if not following:
            break
        last = client.get(following[0]).json()
        pages += 1
    previous = [link["url"] for link in last["link"] if link["relation"] == "previous"]
    assert previous and pages >= 2
    back = client.get(previous[0]).json()
    assert len(back["entry"]) == 7


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/fhir/StructureDefinition"),
        ("PUT", "/fhir/SearchParameter/Task-output-reference"),
        ("DELETE", "/fhir/SearchParameter/Task-output-reference"),
        ("PATCH", "/fhir/OperationDefinition/Resource-validate"),
        ("PUT", "/fhir/ValueSet?url=http://example.org/vs"),
        ("DELETE", "/fhir/CodeSystem?url=http://example.org/cs"),
    ],
)
def test_writes_are_refused_with_405(client: TestClient, method: str, path: str) -> None:
    body: Any = {"resourceType": path.split("/")[2].split("?")[0], "id": "Task-output-reference"}
    if method == "PATCH":
        body = [{"op": "replace", "path": "/status", "value": "retired"}]
    headers = {"Content-Type": "application/json-patch+json" if method == "PATCH" else FHIR_JSON}
    response = client.request(method, path, json=body, headers=headers)
    outcome(response, 405)
    assert client.get("/fhir/SearchParameter/Task-output-reference").json()["status"] == "active"


def test_a_transaction_writing_a_definition_fails_whole(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "ValueSet", "status": "draft"},
                "request": {"method": "POST", "url": "ValueSet"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers={"Content-Type": FHIR_JSON})
    body = outcome(response, 405)
    assert any("Bundle.entry[1]" in e for i in body["issue"] for e in i.get("expression", []))
    assert client.get("/fhir/Patient").json().get("total", 0) == 0 or not client.get(
        "/fhir/Patient"
    ).json().get("entry")


def test_capability_statement_lists_read_only_definitions(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    rest = statement["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    codes = {i["code"] for i in by_type["StructureDefinition"]["interaction"]}
    assert codes <= {"read", "vread", "history-instance", "history-type", "search-type"}
    assert "read" in codes and "search-type" in codes
    assert statement["implementationGuide"] == [
        "http://calaim-fhir.org/fhir/ImplementationGuide/calaim.fhir.ecm|0.1.0"
    ]
    ops = {o["name"]: o["definition"] for o in by_type["Patient"]["operation"]}
    assert ops["validate"] == VALIDATE_OP
    for resource in rest["resource"]:
        for op in resource.get("operation", []):
            if op["definition"].startswith("http://calaim-fhir.org/"):
                kind, id = op["definition"].rsplit("/", 2)[-2:]
                assert client.get(f"/fhir/{kind}/{id}").status_code == 200, op
