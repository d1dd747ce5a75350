"""The validation of one server configuration: conformance, compiled profiles, server rules.

Built once per ``Settings`` (start-up compiles every profile, so a definition that cannot be
compiled stops the server instead of being skipped). ``check`` is what every write and
``$validate`` call: base structure has already passed; it returns the profile findings.
References are resolved through a :data:`Lookup` the caller supplies (the store of the write's
unit, a transaction's entries first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from server.fhir.conformance import Conformance, conformance
from server.fhir.profile_validation import Findings, Validator
from server.fhir.profiles import ProfileSet, Resolve
from server.fhir.references import local_target
from server.ports import Reader
from server.search.required_profiles import Lookup, ProfileRules
from server.search.service import SearchService
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class Validation:
    conformance: Conformance
    profiles: ProfileSet
    validator: Validator
    rules: ProfileRules | None
    base: str

    def check(
        self,
        resource: dict[str, Any],
        *,
        lookup: Lookup | None = None,
        root: str | None = None,
        extra: Iterable[str] = (),
    ) -> Findings:
        required = self.rules.required(resource, lookup) if self.rules is not None else []
        resolve = self.resolver(lookup) if lookup is not None else None
        return self.validator.validate(
            resource, required=required, extra=extra, resolve=resolve, root=root
        )

    def resolver(self, lookup: Lookup) -> Resolve:
        """A reference string -> its target, for references to this server's resources."""

        def resolve(reference: str) -> dict[str, Any] | None:
            target = local_target(reference, self.base)
            return None if target is None else lookup(*target)

        return resolve


def reader_lookup(reader: Reader, view: Reader | None = None) -> Lookup:
    """Targets from a store reader (a deleted or unknown target: None); with ``view`` (the
    caller's view, when ``reader`` is a system reader), a target it hides is None too."""

    def lookup(type: str, id: str) -> dict[str, Any] | None:
        found = reader.read(type, id)
        if found is None or found.body is None:
            return None
        if view is not None and not view.visible(type, id):
            return None
        body: dict[str, Any] = orjson.loads(found.body)
        return body

    return lookup


def chained(first: Callable[[str, str], dict[str, Any] | None], then: Lookup) -> Lookup:
    """Look in ``first`` (a transaction's entries), then in ``then`` (the store)."""

    def lookup(type: str, id: str) -> dict[str, Any] | None:
        found = first(type, id)
        return found if found is not None else then(type, id)

    return lookup


def build_validation(settings: Settings, search: SearchService) -> Validation:
    """The validation of ``settings`` (compiles every profile: build it once; a bad profile
    stops start-up)."""
    definitions = conformance()
    structure = list(definitions.local("StructureDefinition"))  # the package's, US Core mirrors too
    profiles = ProfileSet(structure, definitions.terminology)
    validator = Validator(definitions, profiles, unknown_profile=settings.unknown_profile)
    rules = ProfileRules(structure, search) if settings.require_profiles else None
    return Validation(definitions, profiles, validator, rules, settings.fhir_base)
