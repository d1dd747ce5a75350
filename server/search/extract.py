"""Index rows extracted from a resource at write time, in the same transaction as the write."""

from __future__ import annotations

from typing import Any


def token_rows(resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(param, system, code) rows for ``identifier``; missing parts are empty strings."""
    value = resource.get("identifier")
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    rows: list[tuple[str, str, str]] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            system = item.get("system")
            rows.append(("identifier", system if isinstance(system, str) else "", item["value"]))
    return rows
