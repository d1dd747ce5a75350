"""Deeply nested resources: refused with 400 when they cannot be stored, never a 5xx."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.support import TestClient, history_total

FHIR = {"Content-Type": "application/fhir+json"}


def _nested(depth: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "v"}
    for _ in range(depth):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return {"resourceType": "Patient", "extension": [extension]}


def _body(value: Any) -> bytes:
    # orjson and the standard library stop at a nesting limit: build deep text by hand
    return orjson.dumps(value) if _depth(value) < 200 else _encode(value).encode()


def _depth(value: Any) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        depth = max(depth, level)
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        )
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return depth


def _encode(value: Any) -> str:
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and item.startswith("\0"):
            parts.append(item[1:])
        elif isinstance(item, dict):
            parts.append("{")
            pieces: list[Any] = []
            for i, (key, child) in enumerate(item.items()):
                pieces.append("\0" + ("," if i else "") + orjson.dumps(key).decode() + ":")
                pieces.append(child)
            pieces.append("\0}")
            stack.extend(reversed(pieces))
        elif isinstance(item, list):
            parts.append("[")
            pieces = []
            for i, child in enumerate(item):
                if i:
                    pieces.append("\0,")
                pieces.append(child)
            pieces.append("\0]")
            stack.extend(reversed(pieces))
        else:
            parts.append(orjson.dumps(item).decode())
    return "".join(parts)


@pytest.mark.parametrize("depth", [50, 300, 600, 1500])
def test_nesting_is_stored_or_refused_cleanly(client: TestClient, depth: int) -> None:
    before = history_total(client)
    resource = _nested(depth)
    created = client.post("/fhir/Patient", content=_body(resource), headers=FHIR)
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": resource, "request": {"method": "POST", "url": "Patient"}}],
    }
    bundled = client.post("/fhir", content=_body(transaction), headers=FHIR)
    for response in (created, bundled):
        assert response.status_code < 500, response.text[:300]
        if depth == 50:
            assert response.status_code in (200, 201)
        else:
            assert response.status_code == 400
            assert response.json()["resourceType"] == "OperationOutcome"
    if depth > 50:
        assert history_total(client) == before
