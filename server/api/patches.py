"""The patch formats besides JSON Patch, each turned into a ``Patch`` the pipeline applies
(``Pipeline.patched``: type and id kept, base validation, then profiles, as for every write).

* **FHIRPath Patch** (R4 fhirpatch.html): a ``Parameters`` resource, sent as
  ``application/fhir+json`` (in a Bundle: the entry's resource is the Parameters);
  ``server/fhir/fhirpath_patch.py`` reads and applies it.
* **JSON Merge Patch** (RFC 7386): a JSON object, sent as ``application/merge-patch+json``, or
  as ``application/json`` (fhirpy's ``patch()``; a JSON array sent as ``application/json`` is a
  JSON Patch). ``null`` removes a member, objects merge, anything else replaces.

The format is named by the content type (``format_of``). A malformed document is 400; a
document that cannot be applied to the resource is 422; both point at the part at fault.
"""

from __future__ import annotations

from typing import Any, Literal

from server.errors import BadRequest, Unprocessable
from server.fhir import fhirpath_patch
from server.writes.write import Patch

PatchFormat = Literal["json-patch", "merge-patch", "fhirpath"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
MEDIA_TYPES = frozenset(
    {JSON_PATCH, MERGE_PATCH, "application/fhir+json", "application/json+fhir", "application/json"}
)


def format_of(media: str, body: Any) -> PatchFormat:
    """The patch format of a body of media type ``media`` (one of ``MEDIA_TYPES``)."""
    if media == JSON_PATCH:
        return "json-patch"
    if media == MERGE_PATCH:
        return "merge-patch"
    if media == "application/json":
        return "json-patch" if isinstance(body, list) else "merge-patch"
    return "fhirpath"


def fhirpath(body: Any, expression: str) -> Patch:
    """A FHIRPath Patch ``Parameters`` document as a ``Patch``."""
    try:
        operations = fhirpath_patch.operations(body)
    except fhirpath_patch.PatchInvalid as error:
        raise BadRequest(
            f"Invalid FHIRPath Patch: {error}", expression=_at(expression, error.expression)
        ) from error

    def apply(current: dict[str, Any]) -> dict[str, Any]:
        try:
            return fhirpath_patch.apply(current, operations)
        except fhirpath_patch.PatchFailed as error:
            raise Unprocessable(
                f"FHIRPath Patch could not be applied: {error}",
                expression=_at(expression, error.expression),
            ) from error

    return apply


def merge(body: Any, expression: str) -> Patch:
    """A JSON Merge Patch (RFC 7386) document as a ``Patch``."""
    if not isinstance(body, dict):
        raise BadRequest(
            "A JSON Merge Patch body must be a JSON object", expression=expression or None
        )

    def apply(current: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = _merged(current, body)
        return result

    return apply


def _merged(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out


def _at(prefix: str, expression: str) -> str:
    """An expression inside the patch document, under the request's own (a Bundle entry's)."""
    if not prefix:
        return expression
    return prefix + expression.removeprefix("Parameters")
