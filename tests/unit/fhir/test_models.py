"""Resources built with the R4B models are valid R4 for the write path."""

import pytest

from server.fhir.base_validation import base_validator
from server.fhir.models import build, model_class


def test_built_resource_passes_base_validation() -> None:
    patient = build(
        "Patient",
        name=[{"family": "Rivera", "given": ["Ana"]}],
        gender="female",
        birthDate="1980-02-29",
    )
    assert patient["resourceType"] == "Patient"
    assert base_validator().validate(patient) == []


def test_unsupported_type_is_refused() -> None:
    with pytest.raises(KeyError):
        model_class("NotAResource")


def test_model_rejects_wrong_datatype() -> None:
    with pytest.raises(ValueError):
        build("Patient", birthDate="not a date")
