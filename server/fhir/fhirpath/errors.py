"""The errors of the FHIRPath engine: both are ``ValueError``s raised while compiling."""

from __future__ import annotations


class FhirPathError(ValueError):
    """An expression outside what the engine (or the caller's subset) supports, naming an
    element no possible type has, or not FHIRPath at all."""


class FhirPathSyntaxError(FhirPathError):
    """Text that is not a FHIRPath expression."""
