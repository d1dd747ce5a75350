"""The resources of ``examples/`` as test data (valid and invalid ones, bundles and their
entries), and a sample of them with one resource per distinct shape."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import orjson

EXAMPLES = Path(__file__).parents[1] / "examples"


@cache
def example_resources() -> tuple[dict[str, Any], ...]:
    """Every resource of ``examples/``: each file's resource, and each entry of a Bundle."""
    out: list[dict[str, Any]] = []

    def add(item: Any) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
            return
        if item["resourceType"] == "Bundle":
            for entry in item.get("entry") or []:
                add(entry.get("resource") if isinstance(entry, dict) else None)
        out.append(item)

    for path in sorted(EXAMPLES.rglob("*.json")):
        if not path.name.endswith(".expected.json"):
            add(orjson.loads(path.read_bytes()))
    return tuple(out)


def _paths(value: Any, prefix: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            out.add(f"{prefix}.{key}")
            _paths(item, f"{prefix}.{key}", out)
    elif isinstance(value, list):
        for item in value:
            _paths(item, prefix, out)


def one_per_shape(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first resource of each (type, set of element paths present): the examples that
    exercise different elements, for checks too slow to run on every one."""
    seen: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
    for resource in resources:
        paths: set[str] = set()
        _paths(resource, "", paths)
        seen.setdefault((resource["resourceType"], frozenset(paths)), resource)
    return list(seen.values())
