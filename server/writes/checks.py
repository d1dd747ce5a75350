"""Validation of the resources a write stores: base structure, then profiles.

Profile validation reads the targets of references (``Validation.check``'s lookup). Run
outside the writers' lock, it reads through a ``Seen``, which remembers the version of every
target it read; inside the unit ``Seen.unchanged`` reads them again (the unit keeps what it
read, so the rules and the store read them for free) and a changed target means the unit
validates again. A verdict therefore always holds for the data as the unit commits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import InvalidResource, Unprocessable
from server.fhir.outcome import Issue
from server.fhir.validation import base_validator
from server.fhir.validator import Findings
from server.search.profile_rules import Lookup
from server.store.base import Reader
from server.validating import Validation

Key = tuple[str, str]


class Seen:
    """A lookup of reference targets through ``reader`` that records the version of each
    target it read (None: not stored)."""

    __slots__ = ("_reader", "read")

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self.read: dict[Key, int | None] = {}

    def __call__(self, type: str, id: str) -> dict[str, Any] | None:
        found = self._reader.read(type, id)
        self.read[(type, id)] = None if found is None else found.version
        if found is None or found.body is None:
            return None
        body: dict[str, Any] = orjson.loads(found.body)
        return body

    def unchanged(self, reader: Reader) -> bool:
        """Whether every target read is still at the version seen (one statement)."""
        if not self.read:
            return True
        now = reader.versions(list(self.read))
        return all(now.get(key) == version for key, version in self.read.items())


@dataclass(slots=True)
class Checked:
    """A resource's profile validation: its warnings, and what it read outside the unit
    (None: validated inside the unit, nothing to re-check)."""

    warnings: list[Issue]
    seen: Seen | None = None

    def holds(self, reader: Reader) -> bool:
        return self.seen is None or self.seen.unchanged(reader)


def check_base(resource: Any, expression: str, *, after_patch: bool = False) -> None:
    """Base structure (R4 JSON schema and the rules it misses): 400, or 422 after a patch."""
    issues = base_validator().validate(resource, expression_root=expression or None)
    if not issues:
        return
    if after_patch:
        raise Unprocessable(issues=_after_patch(issues))
    raise InvalidResource(issues=issues)


def check_profiles(
    validation: Validation,
    resource: dict[str, Any],
    lookup: Lookup,
    *,
    root: str | None = None,
    after_patch: bool = False,
) -> list[Issue]:
    """Profile validation: 422 on errors; the warnings."""
    findings: Findings = validation.check(resource, lookup=lookup, root=root)
    if findings.errors:
        issues = findings.issues
        raise Unprocessable(issues=_after_patch(issues) if after_patch else issues)
    return findings.warnings


def _after_patch(issues: list[Issue]) -> list[Issue]:
    return [
        Issue(i.severity, i.code, f"After patching: {i.diagnostics}", i.expression) for i in issues
    ]
