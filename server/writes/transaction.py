"""Transaction Bundles through the pipeline (R4 http.html#transaction).

Every entry is prepared first (``Pipeline.prepare``: admission, base validation, criteria).
Then, outside the writers' lock, a ``Plan`` is made against a reader: the id every POST/PUT
entry will have (new ids, ``ifNoneExist`` matches, conditional updates), references to
``fullUrl``s and conditional references rewritten on copies of the resources, and every
resource profile-validated with the transaction's own entries as the first reference targets,
the reads of stored targets recorded.

Inside the unit the entries run in the spec's order (DELETE, POST, PUT/PATCH, GET). After the
deletes, identities and conditional references are resolved again with the unit's locked
matches; when they come out as the plan had them and no target read has changed, the plan's
rewritten and validated resources are stored as they are; otherwise they are rewritten and
validated again in the unit. Any failure rolls the whole unit back (``EntryFailed`` names the
entry). An operation call that writes (``Entry.call``) runs with the GETs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from server.errors import (
    BadRequest,
    FhirError,
    MultipleMatches,
    Unprocessable,
)
from server.fhir.ids import new_id
from server.fhir.outcome import Issue
from server.ports import Reader, Version, WriteResult
from server.search.query import Criteria, ReferenceClause, SearchQuery
from server.validation_service import chained, reader_lookup
from server.writes import references
from server.writes.checks import Checked, Seen
from server.writes.pipeline import Pipeline, Prepared, Writer
from server.writes.write import Write, Written

_ORDER = {"delete": 0, "create": 1, "update": 2, "patch": 2}
_READ_ORDER = 3
Find = Callable[[Criteria], list[Version]]


class EntryFailed(Exception):
    def __init__(self, index: int, error: FhirError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


@dataclass(slots=True)
class Entry:
    """One entry of a transaction: a write (``prepared``), a read the edge runs (``read``,
    called with the unit's reader) or an operation call that writes (``call``, called with
    the unit's writer, after the writes, in entry order with the reads); the result of a read
    or a call is returned as it is."""

    index: int
    full_url: str | None
    prepared: Prepared | None = None
    read: Callable[[Reader], Any] | None = None
    call: Callable[[Writer], Any] | None = None
    original: dict[str, Any] | None = None  # the resource as sent (before rewriting)

    @property
    def write(self) -> Write | None:
        return None if self.prepared is None else self.prepared.write

    @property
    def order(self) -> int:
        write = self.write
        return _READ_ORDER if write is None else _ORDER[write.interaction]


@dataclass(slots=True)
class Identities:
    """How the entries' identities resolved: the ``Type/id`` of each POST/PUT entry, the POSTs
    whose ``ifNoneExist`` matched (nothing written) and each ``fullUrl``'s ``Type/id``."""

    targets: dict[int, str] = field(default_factory=dict)
    existing: set[int] = field(default_factory=set)
    mapping: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)  # conditional ones, as resolved


@dataclass(slots=True)
class Plan:
    """The entries resolved, rewritten and validated outside the unit."""

    identities: Identities
    resources: dict[int, dict[str, Any]]
    warnings: dict[int, list[Issue]]
    seen: Seen
    fresh: dict[int, str]  # the new ids it chose, which the unit reuses
    rewriter: _Rewriter  # to restore the resources as sent, should the unit see otherwise
    spent: bool = False  # undone by a unit that saw otherwise: a rerun resolves anew


def _identity(write: Write) -> str | None:
    if write.interaction in ("update", "patch", "delete") and write.id and write.condition is None:
        return f"{write.type}/{write.id}"
    return None


def check_overlaps(entries: list[Entry], targets: dict[int, str] | None = None) -> None:
    """No two entries change the same resource; no two POST/PUT entries share a fullUrl."""
    seen: dict[str, int] = {}
    urls: dict[str, int] = {}
    for entry in entries:
        write = entry.write
        if write is None:
            continue
        identity = (targets or {}).get(entry.index) or _identity(write)
        if identity is not None:
            if identity in seen:
                raise EntryFailed(
                    entry.index,
                    BadRequest(
                        f"Entries {seen[identity]} and {entry.index} both change {identity}"
                    ),
                )
            seen[identity] = entry.index
        if entry.full_url and write.interaction in ("create", "update"):
            if entry.full_url in urls:
                raise EntryFailed(
                    entry.index,
                    BadRequest(
                        f"Entries {urls[entry.full_url]} and {entry.index} share fullUrl "
                        f"'{entry.full_url[:80]}'"
                    ),
                )
            urls[entry.full_url] = entry.index


def _resolve(
    entries: list[Entry],
    find: Find,
    fresh: Callable[[int], str],
    parse: Callable[[Write], Criteria | None] | None = None,
) -> Identities:
    """Decide the id every POST/PUT entry will have; map each fullUrl to ``Type/id``. A
    condition that names the fullUrl of an earlier entry (``focus=urn:uuid:…``) searches for
    the id that entry resolved to (parsed again with ``parse``); when it requires a reference to
    an entry created here under a new id, nothing stored can match it and nothing is searched."""
    out = Identities()
    minted: set[str] = set()  # the new ids of this transaction's creates
    for entry in entries:
        prepared = entry.prepared
        if prepared is None or prepared.write.interaction not in ("create", "update"):
            continue
        write, criteria = prepared.write, prepared.criteria
        try:
            if criteria is not None and parse is not None and write.condition:
                criteria = _with_entries(write, out.mapping, parse) or criteria
            if criteria is not None:
                matches = [] if _requires(criteria, minted) else find(criteria)
                if len(matches) > 1:
                    raise MultipleMatches(f"'{criteria.key}' matches several resources")
                body_id = (prepared.resource or {}).get("id")
                if write.interaction == "create":
                    if matches:
                        out.existing.add(entry.index)
                    id = matches[0].id if matches else fresh(entry.index)
                    if not matches:
                        minted.add(id)
                elif matches:
                    if body_id is not None and body_id != matches[0].id:
                        raise BadRequest(
                            f"The resource id '{body_id}' differs from the match",
                            expression=f"{write.type}.id",
                        )
                    id = matches[0].id
                else:
                    id = body_id if isinstance(body_id, str) else fresh(entry.index)
            elif write.interaction == "create":
                id = fresh(entry.index)
                minted.add(id)
            else:
                assert write.id is not None
                id = write.id
        except FhirError as error:
            raise EntryFailed(entry.index, error) from error
        target = out.targets[entry.index] = f"{write.type}/{id}"
        if entry.full_url:
            out.mapping[entry.full_url] = target
    return out


def _requires(criteria: Criteria, minted: set[str]) -> bool:
    """Whether ``criteria`` require (a plain reference clause, ANDed with the rest) a reference
    to one of the ``minted`` ids: new, never stored, so no stored resource refers to them."""
    return bool(minted) and any(
        isinstance(clause, ReferenceClause)
        and clause.values
        and all(v.url is None and v.id in minted for v in clause.values)
        for clause in criteria.clauses
    )


def _with_entries(
    write: Write, mapping: dict[str, str], parse: Callable[[Write], Criteria | None]
) -> Criteria | None:
    """The criteria of ``write`` with the fullUrls of earlier entries replaced by the ids they
    resolved to (None: it names none)."""
    condition = write.condition or ""
    named = [url for url in mapping if url in condition]
    if not named:
        return None
    for url in sorted(named, key=len, reverse=True):
        condition = condition.replace(url, mapping[url])
    return parse(replace(write, condition=condition))


class _Rewriter:
    """Rewrites references to entries' fullUrls and conditional references (which it resolves
    with ``find`` and records), in place, keeping what it replaced so that ``undo`` restores
    the resources as sent."""

    def __init__(self, pipeline: Pipeline, identities: Identities, find: Find) -> None:
        self._pipeline = pipeline
        self._identities = identities
        self._find = find
        self.replaced: list[tuple[Any, Any, str]] = []  # (node, key, the value as sent)

    def rewrite(self, resource: dict[str, Any], index: int) -> None:
        """Iteratively (a resource may nest deeper than Python's recursion limit)."""
        stack: list[Any] = [resource]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(value, str):
                    if key == "reference":
                        target = self._target(value, index)
                        if target != value:
                            self.replaced.append((node, key, value))
                            node[key] = target
                elif isinstance(value, dict | list):
                    stack.append(value)

    def undo(self) -> None:
        for node, key, value in reversed(self.replaced):
            node[key] = value
        self.replaced.clear()

    def _target(self, reference: str, index: int) -> str:
        mapping = self._identities.mapping
        if reference in mapping:
            return mapping[reference]
        if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
            raise EntryFailed(
                index,
                BadRequest(f"Reference '{reference[:80]}' names no entry of this transaction"),
            )
        if references.conditional(reference) is None:
            return reference
        try:
            target = references.resolve(reference, self._pipeline.search, self._find)
        except FhirError as error:
            raise EntryFailed(index, error) from error
        self._identities.references[reference] = target
        return target


def _rewritten(
    pipeline: Pipeline, entries: list[Entry], identities: Identities, find: Find
) -> tuple[dict[int, dict[str, Any]], _Rewriter]:
    """Every resource a POST/PUT entry writes, its references rewritten in place; the
    rewriter, which can undo that."""
    rewriter = _Rewriter(pipeline, identities, find)
    out: dict[int, dict[str, Any]] = {}
    try:
        for entry in entries:
            resource = entry.original
            if resource is None or entry.index in identities.existing:
                continue
            rewriter.rewrite(resource, entry.index)
            out[entry.index] = resource
    except BaseException:
        rewriter.undo()
        raise
    return out, rewriter


def _prepare_creates(
    pipeline: Pipeline,
    entries: list[Entry],
    identities: Identities,
    resources: dict[int, dict[str, Any]],
    read: Callable[[str, str], Version | None],
) -> None:
    """A PUT entry that creates its resource (nothing stored under its id) gets the rules'
    ``prepare`` of a create before it is validated, as a POST entry does (``Pipeline.prepare``):
    the server's own elements (a referral's received time) are filled in the same way."""
    for entry in entries:
        prepared = entry.prepared
        if prepared is None or entry.index not in resources:
            continue
        write = prepared.write
        if write.interaction != "update" or not pipeline.rules.prepares(write.type):
            continue
        type, _, id = identities.targets[entry.index].partition("/")
        stored = read(type, id)
        if stored is None or stored.body is None:
            resources[entry.index] = pipeline.rules.prepare(write, resources[entry.index], None)


def _validate(
    pipeline: Pipeline,
    entries: list[Entry],
    identities: Identities,
    resources: dict[int, dict[str, Any]],
    lookup: Callable[[str, str], dict[str, Any] | None],
) -> dict[int, list[Issue]]:
    """Profile validation of every resource the transaction writes, references resolved to the
    transaction's own entries first; every entry's errors together fail the transaction (422).
    Returns each entry's warnings."""
    written: dict[tuple[str, str], dict[str, Any]] = {}
    for index, resource in resources.items():
        type, _, id = identities.targets[index].partition("/")
        written[(type, id)] = resource
    targets = chained(lambda type, id: written.get((type, id)), lookup)
    errors: list[Issue] = []
    first: int | None = None
    warnings: dict[int, list[Issue]] = {}
    for entry in entries:
        if entry.index not in resources:
            continue
        root = f"Bundle.entry[{entry.index}].resource"
        findings = pipeline.validation.check(resources[entry.index], lookup=targets, root=root)
        if findings.errors:
            errors += findings.issues
            first = entry.index if first is None else first
        elif findings.warnings:
            warnings[entry.index] = findings.warnings
    if first is not None:
        raise EntryFailed(first, Unprocessable(issues=errors))
    return warnings


def plan(
    pipeline: Pipeline, entries: list[Entry], reader: Reader, view: Reader | None = None
) -> Plan | None:
    """The transaction resolved, rewritten and validated against ``reader`` (outside the
    unit); None when that fails: the unit then does it all and answers with its own view.
    ``view``: the caller's view of ``reader``: conditional matches and reference targets go
    by it (a hidden one is no match, a hidden target a missing one)."""
    searcher = view or reader

    def find(criteria: Criteria) -> list[Version]:
        return searcher.search(SearchQuery(criteria, count=2)).items

    fresh: dict[int, str] = {}

    def new(index: int) -> str:
        return fresh.setdefault(index, new_id())

    try:
        identities = _resolve(entries, find, new, pipeline.criteria)
        resources, rewriter = _rewritten(pipeline, entries, identities, find)
    except (EntryFailed, FhirError):
        return None
    seen = Seen(reader, pipeline.targets, view)
    try:
        _prepare_creates(pipeline, entries, identities, resources, reader.read)
        warnings = _validate(pipeline, entries, identities, resources, seen)
    except (EntryFailed, FhirError):
        rewriter.undo()
        return None
    return Plan(identities, resources, warnings, seen, fresh, rewriter)


def run(writer: Writer, entries: list[Entry], planned: Plan | None) -> list[Written | Any]:
    """Run the transaction in ``writer``'s unit: one result per entry, in entry order (a
    ``Written`` for a write, whatever ``Entry.read`` returned for a read)."""
    unit = writer.unit
    ordered = sorted(entries, key=lambda e: e.order)
    results: dict[int, Written | Any] = {}
    # DELETEs first: the identities and matches of the later entries see the data without them
    deletes = [e for e in ordered if e.order == 0]
    for entry in deletes:
        results[entry.index] = _run(writer, entry)
    chosen = planned.fresh if planned is not None else {}

    def fresh(index: int) -> str:
        return chosen.get(index) or new_id()

    identities = _resolve(entries, unit.match, fresh, writer.pipeline.criteria)
    check_overlaps(entries, identities.targets)
    rewriter: _Rewriter | None = None
    if planned is not None and not planned.spent and _same(
        planned, identities, unit.match, writer
    ):
        resources, warnings = planned.resources, planned.warnings
        identities = planned.identities
    else:
        if planned is not None and not planned.spent:
            writer.pipeline.stats["revalidated"] += 1
            planned.rewriter.undo()
            planned.spent = True
        resources, rewriter = _rewritten(writer.pipeline, entries, identities, unit.match)
    try:
        if rewriter is not None:
            _prepare_creates(writer.pipeline, entries, identities, resources, unit.read)
            warnings = _validate(
                writer.pipeline,
                entries,
                identities,
                resources,
                reader_lookup(writer.system, writer.unit),
            )
        _run_writes(writer, ordered[len(deletes) :], identities, resources, warnings, results)
    except BaseException:
        if rewriter is not None:  # the unit rolls back: a rerun starts from what was sent
            rewriter.undo()
        raise
    return [results[entry.index] for entry in entries]


def _run_writes(
    writer: Writer,
    ordered: list[Entry],
    identities: Identities,
    resources: dict[int, dict[str, Any]],
    warnings: dict[int, list[Issue]],
    results: dict[int, Written | Any],
) -> None:
    """The entries after the DELETEs, in the spec's order, into ``results``."""
    unit = writer.unit
    for entry in ordered:
        prepared = entry.prepared
        if prepared is None:
            call, read = entry.call, entry.read
            if call is not None:
                results[entry.index] = _checked(entry, lambda call=call: call(writer))  # type: ignore[misc]
                continue
            assert read is not None
            results[entry.index] = _checked(entry, lambda read=read: read(unit))  # type: ignore[misc]
            continue
        target = identities.targets.get(entry.index)
        if target is not None:
            _, _, id = target.partition("/")
            write = prepared.write
            if entry.index in identities.existing:
                current = unit.read(write.type, id)
                results[entry.index] = Written(
                    write, WriteResult(current, created=False, changed=False)
                )
                continue
            # an identity resolved: the entry runs as a write by id, already validated
            prepared = Prepared(
                Write(
                    write.interaction,
                    write.type,
                    id=id,
                    resource=resources[entry.index],
                    if_match=write.if_match,
                    expression=write.expression,
                ),
                resource=resources[entry.index],
                checked=Checked(warnings.get(entry.index, [])),
                # its conditional references were resolved with the unit's locked matches
                # above: nothing left for the writer to look for
                conditional={},
                resolved={},
                sent=resources[entry.index],
            )
        results[entry.index] = _checked(entry, lambda p=prepared: writer.run(p))  # type: ignore[misc]


def _same(planned: Plan, identities: Identities, find: Find, writer: Writer) -> bool:
    """Whether the unit resolves everything as the plan did and the plan's reads still hold."""
    ids = planned.identities
    if ids.targets != identities.targets or ids.existing != identities.existing:
        return False
    for reference, target in ids.references.items():
        try:
            if references.resolve(reference, writer.pipeline.search, find) != target:
                return False
        except FhirError:
            return False
    stale = planned.seen.changed(writer.system)
    writer.pipeline.targets.forget(stale)
    return not stale


def _run(writer: Writer, entry: Entry) -> Written:
    prepared = entry.prepared
    assert prepared is not None
    written: Written = _checked(entry, lambda: writer.run(prepared))
    return written


def _checked(entry: Entry, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except FhirError as error:
        raise EntryFailed(entry.index, error) from error
