"""Every URL the server writes starts with the configured base URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.support import TestClient, patient

EXTERNAL = "https://fhir.example.org/r4"


@pytest.fixture(params=[EXTERNAL, EXTERNAL + "/"])
def external(request: pytest.FixtureRequest,
             make_client: Callable[..., AbstractContextManager[TestClient]]
             ) -> Iterator[TestClient]:
    with make_client(base_url=request.param) as client:
        yield client


def _urls(node: Any) -> list[str]:
    """Every fullUrl and link url in a JSON document."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "fullUrl" and isinstance(value, str):
                found.append(value)
            elif key == "link" and isinstance(value, list):
                found.extend(link["url"] for link in value if isinstance(link, dict)
                             and "url" in link and "relation" in link)
            else:
                found.extend(_urls(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_urls(item))
    return found


def test_all_written_urls_start_with_the_base_url(external: TestClient) -> None:
    created = external.post("/fhir/Patient", json=patient("A"))
    assert created.status_code == 201
    pid = created.json()["id"]
    assert created.headers["location"] == f"{EXTERNAL}/Patient/{pid}/_history/1"
    updated = external.put(f"/fhir/Patient/{pid}", json={**patient("B"), "id": pid})
    assert updated.headers["location"].startswith(EXTERNAL + "/Patient/")
    for _ in range(3):
        external.post("/fhir/Patient", json=patient("C"))
    documents = [
        external.get("/fhir/Patient", params={"_count": "2"}).json(),
        external.get("/fhir/Patient/_history", params={"_count": "2"}).json(),
        external.get("/fhir/_history", params={"_count": "2"}).json(),
        external.get(f"/fhir/Patient/{pid}/_history", params={"_count": "1"}).json(),
        external.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient("T"), "request": {"method": "POST", "url": "Patient"}},
        ]}).json(),
        external.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": patient("T"), "request": {"method": "POST", "url": "Patient"}},
        ]}).json(),
    ]
    for document in documents:
        urls = _urls(document)
        assert urls, document
        wrong = [u for u in urls if not u.startswith(EXTERNAL + "/")]
        assert not wrong, f"URLs outside {EXTERNAL}: {wrong}"
        assert not [u for u in urls if "//" in u[len("https://"):]], urls
    statement = external.get("/fhir/metadata").json()
    assert statement["implementation"]["url"] == EXTERNAL
