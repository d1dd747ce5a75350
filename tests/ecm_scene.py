"""What the ECM assignment tests share: the answer of a request that must succeed, the example
resources, a CodeableConcept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "resources"


def ok(response: Any, status: int | tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    """The JSON body of a response with ``status`` (the body's start in the failure)."""
    wanted = (status,) if isinstance(status, int) else status
    assert response.status_code in wanted, f"{response.status_code} {response.text[:1500]}"
    body: dict[str, Any] = response.json()
    return body


def example(name: str) -> dict[str, Any]:
    """A fresh copy of ``examples/resources/<name>.json``."""
    body: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return body


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}
