"""JSON request bodies: parsed strictly.

``orjson`` parses (and refuses what is not JSON: 400). JSON itself lets an object repeat a
name, and every parser then keeps one of the values silently (orjson the last), so a client
and the server could read two different resources from one body: a repeated name is 400
too (RFC 8259 section 4: names SHOULD be unique; FHIR JSON never repeats one). The check is
a second pass by the standard library's C scanner with a hook per object (about 1 ms on a
100-entry transaction Bundle, bench/RESULTS.md); only on a duplicate does a slower pass
find where it is, for the issue's expression.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from server.errors import BadRequest

_BOM = b"\xef\xbb\xbf"


class _Duplicate(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


class _Marked(dict[str, Any]):
    """An object that repeated ``name`` (the locating pass)."""

    duplicate: str = ""


def _marked(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = _Marked(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                out.duplicate = name
                break
            seen.add(name)
    return out


_CHECK = json.JSONDecoder(object_pairs_hook=_unique)
_LOCATE = json.JSONDecoder(object_pairs_hook=_marked)


def _locate(value: Any, path: str) -> tuple[str, str] | None:
    """(where, name) of the first object in ``value`` that repeats a name."""
    if isinstance(value, _Marked):
        if value.duplicate:
            return path, value.duplicate
        for name, child in value.items():
            found = _locate(child, f"{path}.{name}" if path else name)
            if found:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = _locate(child, f"{path}[{index}]")
            if found:
                return found
    return None


def loads(body: bytes) -> Any:
    """Parse a JSON request body (a UTF-8 byte order mark is ignored); malformed JSON and an
    object that repeats a name are 400."""
    if body.startswith(_BOM):
        body = body[3:]
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from exc
    if isinstance(parsed, dict | list):
        text = body.decode("utf-8")  # valid: orjson has read it
        try:
            _CHECK.decode(text)
        except _Duplicate:
            tree = _LOCATE.decode(text)
            root = tree.get("resourceType") if isinstance(tree, dict) else None
            found = _locate(tree, root if isinstance(root, str) else "")
            where, name = found if found else ("", "?")
            raise BadRequest(
                f"The JSON object at {where or 'the top level'} repeats the name "
                f"'{name[:64]}'; names in a JSON object must be unique",
                expression=f"{where}.{name[:64]}" if where else name[:64],
            ) from None
    return parsed
