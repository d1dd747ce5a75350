"""The only import point of fhir.resources (its R4B subpackage; the top level is R5).

The models are for *building* resources in Python code. The write path never uses them: it
validates JSON with ``server.fhir.base_validation`` and stores the exact JSON. In R4B only
``Extension.value[x]`` differs from R4 for the types this server supports (R4B adds
``valueCodeableReference`` and ``valueRatioRange``), so a model built here and dumped with
``to_json`` is valid R4 unless it uses those two.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource

from server.fhir.resource_types import is_supported

__all__ = ["Resource", "build", "model_class"]


def model_class(resource_type: str) -> type[Resource]:
    """The R4B model class of a supported resource type."""
    if not is_supported(resource_type):
        raise KeyError(f"{resource_type} is not a supported resource type")
    cls = get_fhir_model_class(resource_type)
    assert issubclass(cls, Resource)
    return cls


def build(resource_type: str, **fields: Any) -> dict[str, Any]:
    """A resource built and checked by its model, returned as plain JSON data."""
    model = model_class(resource_type)(**fields)
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["resourceType"] = resource_type
    return data
