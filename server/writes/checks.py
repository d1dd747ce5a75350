"""Validation of the resources a write stores: base structure, then profiles.

Profile validation reads the targets of references (``Validation.check``'s lookup). Run
outside the writers' lock, it reads through a ``Seen``, which remembers the version of every
target it used; inside the unit ``Seen.unchanged`` checks those versions again (one
statement) and a changed target means the unit validates again. A verdict therefore always
holds for the data as the unit commits it.

Because the unit checks every version used, the targets may come from ``Targets``, a small
per-process cache of recently read targets (members, organisations and practitioners are
named by write after write): a stale entry costs a validation inside the unit, never a wrong
verdict. The pipeline drops an entry when it writes that resource.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import InvalidResource, Unprocessable
from server.fhir.base_validation import base_validator
from server.fhir.outcome import Issue
from server.fhir.profile_validation import Findings
from server.ports import Reader, Version
from server.search.required_profiles import Lookup
from server.validation_service import Validation

Key = tuple[str, str]


class Targets:
    """The current versions of recently read reference targets (None: not stored), least
    recently used dropped first: at most ``size`` of them and ``max_bytes`` of bodies; a body
    larger than ``max_body`` is never kept. Shared by the threads that prepare writes."""

    def __init__(
        self, size: int = 4096, max_bytes: int = 16 << 20, max_body: int = 256 << 10
    ) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._max_body = max_body
        self._bytes = 0
        self._entries: OrderedDict[Key, Version | None] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, reader: Reader, type: str, id: str) -> Version | None:
        key = (type, id)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        found = reader.read(type, id)
        size = 0 if found is None or found.body is None else len(found.body)
        if size > self._max_body:
            return found
        with self._lock:
            self._drop(key)
            self._entries[key] = found
            self._bytes += size
            while len(self._entries) > self._size or self._bytes > self._max_bytes:
                self._drop(next(iter(self._entries)))
        return found

    def forget(self, keys: Any) -> None:
        with self._lock:
            for key in keys:
                self._drop(key)

    def _drop(self, key: Key) -> None:
        found = self._entries.pop(key, None)
        if found is not None and found.body is not None:
            self._bytes -= len(found.body)


class Seen:
    """A lookup of reference targets (through ``targets`` when given, else ``reader``) that
    records the version of each target it used (None: not stored). With ``view`` (the
    caller's view of the system reader ``reader``), a target the caller may not see answers
    as a missing one (its version is still recorded: a change re-checks the verdict)."""

    __slots__ = ("_reader", "_targets", "_view", "read")

    def __init__(
        self, reader: Reader, targets: Targets | None = None, view: Reader | None = None
    ) -> None:
        self._reader = reader
        self._targets = targets
        self._view = view
        self.read: dict[Key, int | None] = {}

    def __call__(self, type: str, id: str) -> dict[str, Any] | None:
        if self._targets is not None:
            found = self._targets.read(self._reader, type, id)
        else:
            found = self._reader.read(type, id)
        self.read[(type, id)] = None if found is None else found.version
        if found is None or found.body is None:
            return None
        if self._view is not None and not self._view.visible(type, id):
            return None
        body: dict[str, Any] = orjson.loads(found.body)
        return body

    def changed(self, reader: Reader) -> list[Key]:
        """The targets used that are no longer at the version seen (one statement)."""
        if not self.read:
            return []
        now = reader.versions(list(self.read))
        return [key for key, version in self.read.items() if now.get(key) != version]


@dataclass(slots=True)
class Checked:
    """A resource's profile validation: its warnings, and what it read outside the unit
    (None: validated inside the unit, nothing to re-check)."""

    warnings: list[Issue]
    seen: Seen | None = None

    def changed(self, reader: Reader) -> list[Key]:
        """The targets it used that have changed since (then the verdict must be redone)."""
        return [] if self.seen is None else self.seen.changed(reader)


def readable(issues: list[Issue]) -> bool:
    """Whether a resource with these base issues still has the structure profile validation
    reads: every element known and of its datatype (no ``structure`` error), only values
    wrong (a code outside its required ValueSet, a malformed date, a missing element)."""
    return not any(i.code == "structure" and i.severity in ("error", "fatal") for i in issues)


def check_base(
    resource: Any,
    expression: str,
    *,
    after_patch: bool = False,
    profiles: Callable[[], list[Issue]] | None = None,
) -> None:
    """Base structure (R4 JSON schema and the rules it misses): 400, or 422 after a patch or
    when only invariants (the narrative rules) fail. With ``profiles`` (profile validation's
    issues), a resource whose base errors leave it ``readable`` is answered with its profile
    issues too, in one outcome."""
    issues = base_validator().validate(resource, expression_root=expression or None)
    if not issues:
        return
    invariants_only = all(issue.code == "invariant" for issue in issues)
    if profiles is not None and readable(issues):
        issues = [*issues, *profiles()]
    if invariants_only:
        raise Unprocessable(issues=_after_patch(issues) if after_patch else issues)
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
