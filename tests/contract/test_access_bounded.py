"""The access door and the byte bound together: a restricted caller's included resources are
narrowed before the byte bound counts them, and ``_include:iterate``'s hop-limit note speaks
only of resources the caller may see.

The label policy (``tests/access_scene.py``): the caller sees only resources labelled
``urn:test:access|shared``. Expectations written by hand below.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.access_scene import LABEL, policy_apps
from tests.support import TestClient, put

BOUND = 64 * 1024
DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>{}</p></div>'


def _resource(type: str, id: str, labelled: bool, **fields: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": type, "id": id, **fields}
    if labelled:
        resource["meta"] = {"security": [LABEL]}
    return resource


def _observation(id: str, labelled: bool, size: int) -> dict[str, Any]:
    return _resource(
        "Observation",
        id,
        labelled,
        status="final",
        code={"text": "weight"},
        subject={"reference": "Patient/b1"},
        text={"status": "generated", "div": DIV.format("x" * size)},
    )


@pytest.fixture(scope="module")
def apps(database_url: str) -> Iterator[dict[str, TestClient]]:
    with policy_apps(database_url, max_response_bytes=BOUND) as apps:
        operator = apps["operator"]
        scene = [
            _resource("Patient", "b1", True, name=[{"family": "Bounded"}]),
            # hidden and large first (insertion order), then two small visible ones
            *(_observation(f"big{n}", False, 40_000) for n in range(3)),
            _observation("small1", True, 1_000),
            _observation("small2", True, 1_000),
        ]
        # Organizations c0 -> c1 -> ... -> c5 (partOf); c0..c4 visible, c5 hidden
        for n in reversed(range(6)):
            fields: dict[str, Any] = {"name": f"c{n}"}
            if n < 5:
                fields["partOf"] = {"reference": f"Organization/c{n + 1}"}
            scene.append(_resource("Organization", f"c{n}", n < 5, **fields))
        for resource in scene:
            response = put(operator, resource)
            assert response.status_code == 201, response.text[:300]
        yield apps


def _keys(bundle: dict[str, Any], mode: str) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    ]


def _issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        issue
        for entry in bundle.get("entry", [])
        if entry.get("search", {}).get("mode") == "outcome"
        for issue in entry["resource"]["issue"]
    ]


def test_hidden_resources_take_no_room_from_the_bound(apps: dict[str, TestClient]) -> None:
    url = "/fhir/Patient?_id=b1&_revinclude=Observation:subject"
    response = apps["label"].get(url)
    assert response.status_code == 200 and len(response.content) <= BOUND
    bundle = response.json()
    assert _keys(bundle, "match") == ["Patient/b1"]
    assert sorted(_keys(bundle, "include")) == ["Observation/small1", "Observation/small2"]
    assert _issues(bundle) == []  # nothing visible was left out
    # the operator sees the large ones too: they cannot all fit, so the answer says so
    operator = apps["operator"].get(url)
    assert operator.status_code == 200 and len(operator.content) <= BOUND
    warning = next(i for i in _issues(operator.json()) if i["severity"] == "warning")
    assert warning["code"] == "too-costly"


def test_hop_limit_note_speaks_only_of_visible_resources(apps: dict[str, TestClient]) -> None:
    url = "/fhir/Organization?_id=c0&_include:iterate=Organization:partof"
    expected = [f"Organization/c{n}" for n in range(1, 5)]
    operator = apps["operator"].get(url).json()
    assert _keys(operator, "include") == expected
    assert [i["expression"] for i in _issues(operator)] == [["_include:iterate"]]
    # the fifth hop would add only c5, which the caller may not see: no note
    label = apps["label"].get(url).json()
    assert _keys(label, "include") == expected
    assert _issues(label) == []
