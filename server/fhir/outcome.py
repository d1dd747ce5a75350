"""OperationOutcome building and the one JSON-pointer -> FHIRPath converter."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_INDEX = re.compile(r"^\d+$")


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and where (a FHIRPath expression)."""

    severity: str  # fatal | error | warning | information
    code: str  # OperationOutcome issue-type code: structure, required, value, invalid, ...
    diagnostics: str
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = [self.expression]
        return out


def pointer_to_fhirpath(root: str, pointer: str | Iterable[str | int]) -> str:
    """Convert a JSON pointer (``/name/0/given/1``) or a path sequence into FHIRPath.

    ``pointer_to_fhirpath("Patient", "/name/0/given/1") == "Patient.name[0].given[1]"``.
    """
    if isinstance(pointer, str):
        parts: list[str] = (
            [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
            if pointer
            else []
        )
    else:
        parts = [str(p) for p in pointer]
    out = root
    for part in parts:
        if _INDEX.match(part):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    return operation_outcome([Issue("information", code, diagnostics)])
