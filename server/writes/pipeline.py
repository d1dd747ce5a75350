"""The write pipeline: prepare outside the lock, then rules, store and events inside the unit.

``Pipeline.prepare`` takes a ``Write`` and a reader (or none, inside a unit) and returns a
``Prepared``: the write checked as far as it can be without the writers' lock. ``Pipeline.in_unit``
binds a unit and a principal into a ``Writer``, whose ``run`` finishes a prepared write:
conditional matching, ``If-Match``, the patch, validation again where what it read has changed,
the program rules, the store, and the derived writes of the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from server.auth.interactions import Interaction
from server.auth.principal import Principal
from server.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    InvalidResource,
    InvalidSearch,
    MultipleMatches,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from server.fhir.ids import new_id
from server.fhir.outcome import Issue
from server.ports import Method, Reader, Unit, UpdateMode, Version, WriteResult
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import Criteria, SearchQuery
from server.search.required_profiles import Lookup
from server.validation_service import Validation, reader_lookup
from server.writes import references
from server.writes.checks import Checked, Seen, Targets, check_base, check_profiles
from server.writes.rules import MAX_DEPTH, Change, RuleSet
from server.writes.write import Write, Written

_CONDITION = {
    "create": "If-None-Exist",
    "update": "Conditional update",
    "patch": "Conditional patch",
    "delete": "Conditional delete",
}


@dataclass(slots=True)
class Prepared:
    """A write checked outside the unit. ``resource``: what a create or update stores, base
    validated; ``checked``: its profile validation (None: to do inside the unit);
    ``patched``: a patch applied to the version ``base`` of its target, and its validation."""

    write: Write
    criteria: Criteria | None = None
    resource: dict[str, Any] | None = None
    checked: Checked | None = None
    base: Version | None = None
    patched: dict[str, Any] | None = None
    ruled_on: int | None = None  # the version the rules' prepare saw (0: absent; None: no prepare)
    # conditional references (``references.py``): those of the resource as sent (reference ->
    # path; None: not looked for yet), what they resolved to outside the unit, and the
    # resource as sent, before they were rewritten
    conditional: dict[str, str] | None = None
    resolved: dict[str, str] | None = None
    sent: dict[str, Any] | None = None


@dataclass(slots=True)
class Pipeline:
    """The stages every write goes through, for one server configuration."""

    validation: Validation
    rules: RuleSet
    search: SearchContext
    conditional_delete_multiple: bool = False
    targets: Targets = field(default_factory=Targets)  # recently read validation targets
    stats: dict[str, int] = field(default_factory=lambda: {"revalidated": 0})

    # -- prepare (outside the writers' lock) -------------------------------------------------

    def criteria(self, write: Write) -> Criteria | None:
        if write.condition is None:
            return None
        try:
            return parse_criteria_string(write.type, write.condition, self.search)
        except InvalidSearch as exc:
            where = exc.issues[0].expression if exc.issues else None
            raise BadRequest(f"{_CONDITION[write.interaction]}: {exc}", expression=where) from exc

    def prepare(self, write: Write, reader: Reader | None, view: Reader | None = None) -> Prepared:
        """Check ``write`` as far as possible before the unit. With a ``reader`` (a system
        reader outside the unit) profile validation and a patch by id happen here, their
        reads recorded; without one (inside a unit) they are left to ``Writer.run``.
        ``view``: the caller's view of ``reader``, by which conditional references match and
        reference targets are found (hidden ones answer as missing ones)."""
        self.rules.admit(write)
        prepared = Prepared(write)
        if write.interaction in ("create", "update"):
            resource = _resource(write)
            check_base(
                resource, write.expression, profiles=self._profile_issues(write, reader, view)
            )
            if write.interaction == "create":
                resource.pop("id", None)  # the server assigns the id (or the caller's ``id``)
            prepared.resource = resource
            if write.interaction == "create" and write.condition is None:
                implicit = self.rules.condition(write, resource)
                if implicit is not None:
                    write = prepared.write = replace(write, condition=implicit)
        prepared.criteria = self.criteria(write)
        if prepared.resource is not None:
            if reader is None and write.interaction == "create" and self.rules.prepares(write.type):
                # inside a unit (Bundle entries, operations' and derived writes): a create's
                # prepare needs no stored version, so it runs before the entry is validated
                prepared.resource = self.rules.prepare(write, prepared.resource, None)
                prepared.ruled_on = 0
            if reader is not None:
                resource = self._resolve(prepared, prepared.resource, _finder(view or reader))
                resource = prepared.resource = self._rules_prepare(prepared, resource, reader)
                seen = Seen(reader, self.targets, view)
                warnings = self.validate(resource, seen, write.expression)
                prepared.checked = Checked(warnings, seen)
        elif write.interaction == "patch" and reader is not None and write.id is not None:
            self._prepare_patch(prepared, reader, view)
        return prepared

    def _profile_issues(
        self, write: Write, reader: Reader | None, view: Reader | None
    ) -> Callable[[], list[Issue]] | None:
        """The profile issues of the body of ``write`` (read with ``reader``), for an answer
        that lists them with its base errors; None without a reader (inside the unit)."""
        if reader is None:
            return None
        return self._profiles_of(
            write.resource, Seen(reader, self.targets, view), write.expression
        )

    def _profiles_of(
        self, resource: Any, lookup: Lookup, expression: str
    ) -> Callable[[], list[Issue]]:
        def issues() -> list[Issue]:
            root = expression or None
            return self.validation.check(resource, lookup=lookup, root=root).issues

        return issues

    def with_profile_issues(
        self, write: Write, error: FhirError, reader: Reader, view: Reader | None = None
    ) -> FhirError:
        """``error``, which preparing ``write`` without a reader raised (a transaction entry),
        with the profile issues of its resource added when it is base validation's failure and
        the structure is still readable: the one answer a REST write gets."""
        if write.interaction not in ("create", "update") or not isinstance(write.resource, dict):
            return error
        profiles = self._profile_issues(write, reader, view)
        try:
            check_base(write.resource, write.expression, profiles=profiles)
        except FhirError as again:
            base = again.issues[: len(error.issues)]
            if base == error.issues and len(again.issues) > len(error.issues):
                again.headers = error.headers
                return again
        return error

    def _prepare_patch(self, prepared: Prepared, reader: Reader, view: Reader | None) -> None:
        """Apply the patch to the version stored now; a failure here is final (the request is
        answered from a state it saw), a success is kept if that version is still current."""
        write = prepared.write
        assert write.id is not None
        current = reader.read(write.type, write.id)
        if current is None or current.body is None:
            return  # 404 / 410 come from the unit, with the unit's view
        if write.if_match is not None and write.if_match != current.version:
            return  # 412 from the unit
        seen = Seen(reader, self.targets, view)
        patched = self._resolve(
            prepared, self.patched(write, current, seen), _finder(view or reader)
        )
        if self.rules.prepares(write.type):
            patched = self.rules.prepare(write, patched, current)
            prepared.ruled_on = current.version
        warnings = self.validate(patched, seen, "", after_patch=True)
        prepared.base, prepared.patched = current, patched
        prepared.checked = Checked(warnings, seen)

    def _rules_prepare(
        self, prepared: Prepared, resource: dict[str, Any], reader: Reader
    ) -> dict[str, Any]:
        """The rules' prepare of a create, or of an update by id, from the version stored now."""
        write = prepared.write
        if not self.rules.prepares(write.type):
            return resource
        if write.interaction == "create":  # conditional or not: nothing stored is its base
            stored = None
        elif write.id is not None:
            stored = reader.read(write.type, write.id)
        else:
            return resource
        prepared.ruled_on = 0 if stored is None else stored.version
        return self.rules.prepare(write, resource, stored)

    def _resolve(
        self, prepared: Prepared, resource: dict[str, Any], find: references.Find
    ) -> dict[str, Any]:
        """``resource`` with its conditional references resolved (through ``find``); what it
        found and resolved recorded in ``prepared``, so the unit can check them again."""
        prepared.sent, prepared.conditional = resource, references.found(resource)
        if not prepared.conditional:
            prepared.resolved = {}
            return resource
        root = prepared.write.expression or prepared.write.type
        prepared.resolved = references.resolve_all(prepared.conditional, self.search, find, root)
        resource = references.rewritten(resource, prepared.resolved)
        prepared.resource = resource
        return resource

    def patched(self, write: Write, current: Version, lookup: Lookup) -> dict[str, Any]:
        """The patched resource, which keeps its type and id and passes base validation (whose
        errors come with the profile issues, read through ``lookup``, when the structure is
        still readable)."""
        assert write.patch is not None and current.body is not None
        patched = write.patch(orjson.loads(current.body))
        if not isinstance(patched, dict) or patched.get("resourceType") != write.type:
            raise Unprocessable(
                "The patch must not change the resourceType", expression="resourceType"
            )
        if patched.get("id") != current.id:
            raise Unprocessable(
                "The patch must not change the resource id", expression=f"{write.type}.id"
            )
        check_base(patched, "", after_patch=True, profiles=self._profiles_of(patched, lookup, ""))
        return patched

    def validate(
        self,
        resource: dict[str, Any],
        lookup: Lookup,
        expression: str,
        *,
        after_patch: bool = False,
    ) -> list[Issue]:
        """Profile validation of what a write stores: 422 on errors; the warnings."""
        return check_profiles(
            self.validation,
            resource,
            lookup,
            root=expression or None,
            after_patch=after_patch,
        )

    # -- inside the unit ----------------------------------------------------------------------

    def in_unit(self, unit: Unit, principal: Principal) -> Writer:
        return Writer(self, unit, principal)


class Writer:
    """The pipeline bound to one unit and the principal it writes for."""

    def __init__(self, pipeline: Pipeline, unit: Unit, principal: Principal, depth: int = 0):
        self.pipeline = pipeline
        self.unit = unit
        self.principal = principal
        self.depth = depth
        self._system: Unit | None = None

    @property
    def system(self) -> Unit:
        """The unit unnarrowed by the principal: validation, rules and derived writes."""
        if self._system is None:
            self._system = self.unit.system()
        return self._system

    def write(self, write: Write) -> Written:
        """Prepare and run ``write`` inside the unit (operations, derived writes). An update by
        id gets the rules' ``prepare`` from the version stored now (the unit's: it cannot change
        before the write is stored), so their amendments are validated once, with the rest."""
        prepared = self.pipeline.prepare(write, None)
        pipeline = self.pipeline
        if (
            write.interaction == "update"
            and write.condition is None
            and write.id is not None
            and prepared.resource is not None
            and pipeline.rules.prepares(write.type)
        ):
            stored = self.system.read(write.type, write.id)
            prepared.resource = pipeline.rules.prepare(write, prepared.resource, stored)
            prepared.ruled_on = 0 if stored is None else stored.version
        return self.run(prepared)

    def run(self, prepared: Prepared) -> Written:
        write = prepared.write
        kind = write.interaction
        if kind == "create":
            return self._create(prepared)
        if kind == "update":
            return self._update(prepared)
        if kind == "patch":
            return self._patch(prepared)
        return self._delete(prepared)

    # -- the interactions ---------------------------------------------------------------------

    def _matches(self, criteria: Criteria, limit: int | None = 2) -> list[Version]:
        """The matches the caller may see (the unit is the door's: a hidden match is none)."""
        return self.unit.match(criteria, limit)

    def _refuse_hidden(self, write: Write, criteria: Criteria) -> None:
        """A conditional update, patch or delete whose criteria match only resources the caller
        may not see is refused (never an update-as-create beside them, never a silent no-op)."""
        if self.unit is not self.system and self.system.match(criteria, 1):
            raise Forbidden(
                f"Not permitted: {write.interaction} of the {write.type} matching '{criteria.key}'"
            )

    def _create(self, prepared: Prepared) -> Written:
        write, criteria = prepared.write, prepared.criteria
        if criteria is not None:
            matches = self._matches(criteria)
            if len(matches) > 1:
                raise MultipleMatches(
                    f"If-None-Exist criteria '{criteria.key}' match several resources"
                )
            if matches:
                return Written(write, WriteResult(matches[0], created=False, changed=False))
        return self._store(prepared, write.id or new_id(), None)

    def _update(self, prepared: Prepared) -> Written:
        write, criteria, resource = prepared.write, prepared.criteria, prepared.resource
        assert resource is not None
        if criteria is None:
            assert write.id is not None
            return self._store(prepared, write.id, self._current(write, write.id))
        matches = self._matches(criteria)
        if len(matches) > 1:
            raise MultipleMatches(f"Criteria '{criteria.key}' match several resources")
        if not matches:
            self._refuse_hidden(write, criteria)
        body_id = resource.get("id")
        if matches:
            match = matches[0]
            if body_id is not None and body_id != match.id:
                raise BadRequest(
                    f"The resource id '{body_id}' differs from the matching "
                    f"{write.type}/{match.id}",
                    expression=f"{write.type}.id",
                )
            return self._store(prepared, match.id, self._current(write, match.id))
        if write.if_match is not None:
            raise PreconditionFailed(f"If-Match given but criteria '{criteria.key}' match nothing")
        if isinstance(body_id, str):
            existing = self.unit.read(write.type, body_id)
            if existing is not None and not existing.deleted:
                raise Conflict(
                    f"No resource matches '{criteria.key}' but {write.type}/{body_id} exists",
                    expression=f"{write.type}.id",
                )
            return self._store(prepared, body_id, existing)
        return self._store(prepared, new_id(), None, assigned=True)

    def _patch(self, prepared: Prepared) -> Written:
        write, criteria = prepared.write, prepared.criteria
        id = write.id
        if criteria is not None:
            matches = self._matches(criteria)
            if not matches:
                self._refuse_hidden(write, criteria)
                raise NotFound(f"No {write.type} matches '{criteria.key}'")
            if len(matches) > 1:
                raise MultipleMatches(f"Criteria '{criteria.key}' match several resources")
            id = matches[0].id
        assert id is not None
        current = self.unit.target(write.type, id, Interaction.PATCH)
        if current is None:
            raise NotFound(f"{write.type}/{id} is not known")
        if current.deleted or current.body is None:
            raise Gone(f"{write.type}/{id} has been deleted")
        _check_match(current, write, id)
        base = prepared.base
        if base is None or base.version != current.version or base.id != id:
            prepared.patched = self.pipeline.patched(write, current, reader_lookup(self.system))
            prepared.checked = None
            prepared.ruled_on = None
            prepared.conditional = prepared.resolved = prepared.sent = None
        prepared.resource = prepared.patched
        return self._store(prepared, id, current, after_patch=True)

    def _delete(self, prepared: Prepared) -> Written:
        write, criteria = prepared.write, prepared.criteria
        if criteria is None:
            assert write.id is not None
            current = self._current(write, write.id)
            if current is None or current.deleted:
                return Written(write, WriteResult(current, changed=False))
            return self._store(prepared, write.id, current)
        multiple = self.pipeline.conditional_delete_multiple
        matches = self._matches(criteria, None if multiple else 2)
        if len(matches) > 1 and not multiple:
            raise MultipleMatches(f"Criteria '{criteria.key}' match several resources")
        if not matches:
            self._refuse_hidden(write, criteria)
        for match in matches:
            self._store(prepared, match.id, match)
        return Written(write, None, deleted=len(matches), criteria=criteria)

    def _current(self, write: Write, id: str) -> Version | None:
        interaction = Interaction.DELETE if write.interaction == "delete" else Interaction.UPDATE
        current = self.unit.target(write.type, id, interaction)
        _check_match(current, write, id)
        return current

    # -- validate, rules, store, derived writes -----------------------------------------------

    def _store(
        self,
        prepared: Prepared,
        id: str,
        stored: Version | None,
        *,
        after_patch: bool = False,
        assigned: bool = False,
    ) -> Written:
        write = prepared.write
        resource = prepared.resource
        warnings: list[Issue] = []
        if resource is not None:
            resource = self._references(prepared, resource)
            checked = prepared.checked
            stale = [] if checked is None else checked.changed(self.system)
            if checked is None or stale:
                if stale:
                    self.pipeline.stats["revalidated"] += 1
                    self.pipeline.targets.forget(stale)
                warnings = self.pipeline.validate(
                    resource,
                    reader_lookup(self.system, self.unit),
                    "" if after_patch else write.expression,
                    after_patch=after_patch,
                )
            else:
                warnings = checked.warnings
        stored_version = 0 if stored is None else stored.version
        ruled = self._rule(write, id, stored, resource, prepared.ruled_on == stored_version)
        if ruled.next is not None:  # amended by a rule: validated again before it is stored
            resource = ruled.next
            root = "" if after_patch else write.expression
            check_base(resource, root, after_patch=after_patch)
            warnings = self.pipeline.validate(
                resource, reader_lookup(self.system, self.unit), root, after_patch=after_patch
            )
        warnings = [*warnings, *ruled.warnings]
        unit, type = self.unit, write.type
        self.pipeline.targets.forget(((type, id),))  # its cached version ends here
        if resource is None:
            result = unit.delete(type, id)
        elif write.interaction == "create":
            result = unit.create(type, resource, id=id)
        else:
            patch = write.interaction == "patch"
            method: Method = "PATCH" if patch else "PUT"
            result = unit.update(type, id, resource, UpdateMode(method, assigned))
        for each in ruled.derived:
            self._derived(each)
        return Written(write, result, warnings=warnings)

    def _references(self, prepared: Prepared, resource: dict[str, Any]) -> dict[str, Any]:
        """``resource`` with its conditional references resolved by the unit's locked matches:
        as prepared when they resolve as they did outside the unit, else rewritten anew from
        the resource as sent and left to be validated again."""
        sent = prepared.sent if prepared.conditional is not None else None
        found = prepared.conditional if sent is not None else references.found(resource)
        if not found:
            return resource
        write = prepared.write
        root = write.expression or write.type
        resolved = references.resolve_all(found, self.pipeline.search, self.unit.match, root)
        if sent is not None and resolved == prepared.resolved:
            return resource
        prepared.checked = None
        prepared.ruled_on = None  # the rules' prepare saw other references: decided again here
        prepared.resource = references.rewritten(sent if sent is not None else resource, resolved)
        return prepared.resource

    def _rule(
        self,
        write: Write,
        id: str,
        stored: Version | None,
        resource: dict[str, Any] | None,
        prepared: bool,
    ) -> Ruled:
        ruled = Ruled()
        rules = self.pipeline.rules.of(write.type)
        if not rules:
            return ruled
        change = Change(
            self.principal,
            write.interaction,
            write.type,
            id,
            stored,
            resource,
            self.system,
            self.depth,
            write.expression,
            prepared,
        )
        for rule in rules:
            verdict = rule.check(change)
            if verdict.refusal is not None:
                raise verdict.refusal
            if verdict.next is not None:
                if resource is None:
                    raise FhirError(f"Rule {rule.name} amended a delete of {write.type}/{id}")
                change.next = ruled.next = verdict.next
            ruled.derived.extend(verdict.derived)
            ruled.warnings.extend(verdict.warnings)
        return ruled

    def _derived(self, write: Write) -> Written:
        if self.depth + 1 > MAX_DEPTH:
            raise FhirError(
                f"Program rules derived writes more than {MAX_DEPTH} levels deep"
                f" (at {write.type}); nothing was written"
            )
        principal = write.principal or self.principal
        return Writer(self.pipeline, self.system, principal, self.depth + 1).write(write)


@dataclass(slots=True)
class Ruled:
    """What the rules made of one write: the amended resource (None: as proposed), their
    warnings and the writes they derive."""

    next: dict[str, Any] | None = None
    warnings: list[Issue] = field(default_factory=list)
    derived: list[Write] = field(default_factory=list)


def _finder(reader: Reader) -> references.Find:
    def find(criteria: Criteria) -> list[Version]:
        return reader.search(SearchQuery(criteria, count=2)).items

    return find


def _resource(write: Write) -> dict[str, Any]:
    """The body of a create or update as a resource of the write's type (and, for an update
    by id, with that id)."""
    body, type = write.resource, write.type
    root = write.expression or type
    if not isinstance(body, dict):
        raise InvalidResource("The body must be a JSON object (a FHIR resource)", expression=root)
    body_type = body.get("resourceType")
    if body_type != type:
        raise BadRequest(
            f"The body's resourceType '{str(body_type)[:64]}' does not match the URL type '{type}'",
            expression=f"{root}.resourceType" if write.expression else "resourceType",
        )
    by_id = write.interaction == "update" and write.condition is None and write.id is not None
    if by_id and body.get("id") != write.id:
        got = body.get("id")
        raise BadRequest(
            f"The body's id '{str(got)[:64]}' does not match the URL id '{write.id}'"
            if got is not None
            else f"The body has no id; the URL id is '{write.id}'",
            expression=f"{root}.id",
        )
    return body


def _check_match(current: Version | None, write: Write, id: str) -> None:
    if write.if_match is not None and (current is None or current.version != write.if_match):
        have = "does not exist" if current is None else f"is at version {current.version}"
        raise PreconditionFailed(
            f"If-Match expected version {write.if_match} of {write.type}/{id}, which {have}"
        )


def through(
    pipeline: Pipeline,
    principal: Principal,
    writes: Callable[[Callable[[Unit], Any]], Any],
    *,
    system: bool = False,
) -> Callable[[Write], Written]:
    """A ``Write`` -> ``Written`` function for code that writes one unit at a time through
    ``writes`` (a worker thread's group-commit writes): each write is prepared and run inside
    its own unit. ``system``: written by the server on the principal's behalf
    (``Unit.on_behalf``: refused if the principal may not make such a write at all, else
    unnarrowed; the unit's origin still names the request), for a record an operation keeps
    of its own run."""

    def write(each: Write) -> Written:
        def run(unit: Unit) -> Written:
            if system:
                unit = unit.on_behalf(Interaction(each.interaction), each.type)
            return pipeline.in_unit(unit, principal).write(each)

        result: Written = writes(run)
        return result

    return write
