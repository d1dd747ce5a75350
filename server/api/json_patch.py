"""JSON Patch (RFC 6902) documents: checked whole before anything is read, applied one
operation at a time so a failure names the operation that failed.

A document that is not a well-formed patch (not an array of objects, an unknown ``op``, a
missing member, a ``path`` or ``from`` that is not a JSON Pointer per RFC 6901, such as
``a`` or ``/x~9``) is 400 wherever it arrives: a PATCH request or a Bundle entry, and
before the target is looked up. A well-formed patch that cannot be applied to the resource
(a missing location, a failed ``test``) is 422.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from server.errors import BadRequest, Unprocessable
from server.writes.write import Patch

# the members each operation needs besides ``op`` and ``path`` (RFC 6902 section 4)
_MEMBERS: dict[str, tuple[str, ...]] = {
    "add": ("value",),
    "remove": (),
    "replace": ("value",),
    "move": ("from",),
    "copy": ("from",),
    "test": ("value",),
}
_POINTERS = ("path", "from")


def _where(where: str, index: int, member: str | None = None) -> str:
    """The expression of an operation (or one of its members) of the patch document at
    ``where``; a Bundle entry's patch is base64 inside its Binary, so its issues point at
    the Binary's data."""
    if where:
        return where
    return f"[{index}]" if member is None else f"[{index}].{member}"


def _checked(operation: Any, index: int, where: str) -> dict[str, Any]:
    if not isinstance(operation, dict):
        raise BadRequest(
            f"Operation {index} of the JSON Patch is not an object", expression=_where(where, index)
        )
    op = operation.get("op")
    if not isinstance(op, str) or op not in _MEMBERS:
        raise BadRequest(
            f"Operation {index}: 'op' must be one of {', '.join(_MEMBERS)}",
            expression=_where(where, index, "op"),
        )
    for member in ("path", *_MEMBERS[op]):
        if member not in operation:
            raise BadRequest(
                f"Operation {index} ({op}) needs a '{member}' member",
                expression=_where(where, index, member),
            )
    for member in _POINTERS:
        if member not in operation:
            continue
        pointer = operation[member]
        problem = None
        if not isinstance(pointer, str):
            problem = "is not a string"
        else:
            try:
                jsonpointer.JsonPointer(pointer)
            except jsonpointer.JsonPointerException as exc:
                problem = str(exc)
        if problem is not None:
            raise BadRequest(
                f"Operation {index}: '{member}' is not a JSON Pointer ({problem})",
                expression=_where(where, index, member),
            )
    return operation


def parse(body: Any, where: str = "") -> Patch:
    """The patch document ``body`` as a ``Patch``; ``where`` is the expression of the document
    in its request (empty for a PATCH request's body)."""
    if not isinstance(body, list):
        raise BadRequest(
            "A JSON Patch body must be an array of operations", expression=where or None
        )
    steps = []
    for index, operation in enumerate(body):
        checked = _checked(operation, index, where)
        try:
            steps.append(jsonpatch.JsonPatch([checked]))
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise BadRequest(
                f"Operation {index} of the JSON Patch is malformed: {exc}",
                expression=_where(where, index),
            ) from exc

    def apply(current: dict[str, Any]) -> dict[str, Any]:
        """Apply to ``current`` (a fresh copy the caller owns: changed in place)."""
        result: Any = current
        for index, step in enumerate(steps):
            try:
                result = step.apply(result, in_place=True)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise Unprocessable(
                    f"JSON Patch operation {index} (test) failed: {exc}",
                    expression=_where(where, index, "path"),
                ) from exc
            except (
                jsonpatch.JsonPatchException,
                jsonpointer.JsonPointerException,
                TypeError,
                KeyError,
                IndexError,
                ValueError,
            ) as exc:
                raise Unprocessable(
                    f"JSON Patch operation {index} could not be applied: {exc}",
                    expression=_where(where, index, "path"),
                ) from exc
        if not isinstance(result, dict):
            raise Unprocessable(
                "The JSON Patch must leave a resource (a JSON object)", expression=where or None
            )
        return result

    return apply
