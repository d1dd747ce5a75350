"""One ``$export`` run: the job's work (``server/jobs.py``), writing NDJSON files.

**Consistent as of one sequence.** The kick-off pins the latest committed history sequence
and its ``lastUpdated`` stamp (``Snapshot``; stamps increase in commit order, so both name
the same moment). The export then reads, per type, the version of each resource that was
current at that moment (``HistoryQuery.at``: the latest version at or below it; a resource
deleted by then is left out; one created or changed after it is exported as it was, or not
at all) — whatever is written while it runs. ``transactionTime`` is that stamp.

**Gentle.** It reads in short keyset batches (``BATCH`` versions, newest sequence first, each
batch on a reader of its own): no read transaction outlives a batch, so SQLite's WAL can be
checkpointed while it runs, and memory stays flat (a batch at a time; files are appended).

**Through the door only.** Every batch is a type-level history read of the job's
``AuthorizedRepository`` (the principal that started it): the caller's narrowing is applied
inside each statement, and the door's per-resource decision behind it. A resource that was
visible at the snapshot but deleted since is not exported to a narrowed caller (the door
narrows on the current version, and a deleted resource satisfies no narrowing).

**Resumable.** Each finished type is recorded in the folder's ``state.json`` (after its files
are on disk); a worker that takes over a job whose worker died (``JobRunner.resume``) keeps
those, rewrites the type that was under way and goes on, at the same snapshot.

**Deletions since ``_since``.** With ``_since``, a resource whose version current at the
snapshot is a deletion made at or after it, and whose last version before the deletion the
export would have held (level, ``_typeFilter``, and read through the door: a caller narrowed by
member is told of no deletion, since the door cannot show that what it no longer holds was
visible), is listed in the manifest's ``deleted`` files: NDJSON lines of transaction Bundles of
``DELETE [type]/[id]`` entries (Bulk Data manifest ``deleted``), ``Deleted<Type>-<n>.ndjson``.

Filters: ``_since`` is part of each read (the version's ``lastUpdated`` at or after it);
Patient and Group level keep the versions whose compartment facts (``owners``, written with
each version) name one of the patients (any patient at Patient level without ``patient``);
``_typeFilter`` is evaluated on each version's own content (``server/search/match.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from server.bulk import files
from server.bulk.request import ExportRequest, type_filter
from server.errors import FhirError
from server.fhir.instant import format_instant
from server.fhir.outcome import Issue, operation_outcome
from server.jobs import JobCancelled, JobContext
from server.ports import HistoryQuery, Page, Reader, Version
from server.search.access_facts import split
from server.search.match import RowSource, compile_matcher
from server.search.parse import SearchContext
from server.search.query import Criteria

BATCH = 500
DELETED = "Deleted"  # the name of a type's deletions files: Deleted<Type>-<n>.ndjson
KIND = "export"
UNIT = "resources"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The moment an export reads as of: a history sequence and its ``lastUpdated`` stamp."""

    seq: int
    time: int


def snapshot(reader: Reader, now: int) -> Snapshot:
    """The latest committed version's sequence and stamp, read with the store's own reader
    (no resource of it reaches anyone); an empty store: sequence 0 at ``now``."""
    page = reader.history(HistoryQuery(count=1))
    if not page.items:
        return Snapshot(0, now)
    latest = page.items[0]
    return Snapshot(latest.position, latest.last_updated)


@dataclass(frozen=True)
class ExportJob:
    """Everything a worker needs to run (or resume) one export; ``record`` is what the job row
    keeps of it, ``from_record`` reads it back."""

    request: ExportRequest
    snapshot: Snapshot
    url: str  # the kick-off request URL
    base: str  # the FHIR base of the download URLs
    requires_token: bool
    ignored: tuple[str, ...] = ()

    def record(self, method: str) -> dict[str, Any]:
        return {
            "method": method,
            "url": self.url,
            "export": self.request.to_json(),
            "seq": self.snapshot.seq,
            "time": self.snapshot.time,
            "base": self.base,
            "requiresAccessToken": self.requires_token,
            "ignored": list(self.ignored),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ExportJob:
        return cls(
            ExportRequest.from_json(record["export"]),
            Snapshot(int(record["seq"]), int(record["time"])),
            record["url"],
            record["base"],
            bool(record["requiresAccessToken"]),
            tuple(record.get("ignored") or ()),
        )


class _Files:
    """The NDJSON files of one type: a new one past ``limit`` bytes."""

    def __init__(self, folder: Path, type: str, limit: int) -> None:
        self._folder, self._type, self._limit = folder, type, limit
        self.written: list[list[Any]] = []  # [file name, count]
        self._out: IO[bytes] | None = None
        self._size = 0
        for stale in folder.glob(f"{type}-*.ndjson"):  # a dead worker's partial attempt
            stale.unlink()

    @property
    def count(self) -> int:
        return sum(int(n) for _, n in self.written)

    def write(self, line: bytes) -> None:
        if self._out is None or (self._size and self._size + len(line) + 1 > self._limit):
            self.close()
            name = f"{self._type}-{len(self.written) + 1}.ndjson"
            self._out = open(self._folder / name, "wb")
            self.written.append([name, 0])
            self._size = 0
        self._out.write(line)
        self._out.write(b"\n")
        self._size += len(line) + 1
        self.written[-1][1] += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            self._out = None


class ExportWork:
    """The work of an export job (``JobRunner.submit`` / ``resume``)."""

    def __init__(
        self,
        job: ExportJob,
        folder: Path,
        file_bytes: int,
        context: SearchContext,
        indexer: RowSource,
        batch: int | None = None,
    ) -> None:
        self.job = job
        self.folder = folder
        self.file_bytes = file_bytes
        self.indexer = indexer
        self.batch = batch or BATCH
        request = job.request
        self.filters: dict[str, tuple[Criteria, ...]] = {
            type: type_filter(type, queries, context)
            for type, queries in request.type_filters.items()
        }
        self.owners: frozenset[str] | None = None
        if request.patients is not None:
            self.owners = frozenset(f"Patient/{id}" for id in request.patients)

    def __call__(self, ctx: JobContext) -> tuple[int, dict[str, Any]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = files.load_state(self.folder)
        finished: dict[str, list[list[Any]]] = state["types"]
        deleted: dict[str, list[list[Any]]] = state.setdefault("deleted", {})
        done = sum(int(n) for written in finished.values() for _, n in written)
        try:
            for type in self.job.request.types:
                if type in finished:
                    continue
                finished[type], deleted[type] = self._type(ctx, type, done)
                done += sum(int(n) for _, n in finished[type])
                files.save_state(self.folder, state)
            self._errors(state)
        except JobCancelled:
            files.remove(self.folder)
            raise
        ctx.progress(done, done)
        return 200, self.manifest(ctx.id, state)

    def _type(
        self, ctx: JobContext, type: str, done: int
    ) -> tuple[list[list[Any]], list[list[Any]]]:
        """The files of one type: its resources, and the Bundles of its deletions."""
        snap = self.job.snapshot
        out = _Files(self.folder, type, self.file_bytes)
        gone = _Files(self.folder, f"{DELETED}{type}", self.file_bytes)
        cursor = snap.seq + 1
        try:
            while True:
                ctx.check()
                query = HistoryQuery(
                    type=type,
                    at=(snap.time, snap.time + 1),
                    since=self.job.request.since,
                    count=self.batch,
                    before_seq=cursor,
                )
                page = self._read(ctx, query)
                deletions: list[str] = []
                for version in page.items:
                    if version.deleted:
                        if self._was_wanted(ctx, version):
                            deletions.append(f"{version.type}/{version.id}")
                    elif self._wanted(version):
                        assert version.body is not None
                        out.write(version.body)
                if deletions:
                    gone.write(orjson.dumps(_deletions(deletions)))
                if not page.has_more:
                    break
                if not page.items:
                    raise FhirError(f"The export of {type} could not go past a refused batch")
                cursor = page.items[-1].position
                ctx.progress(done + out.count)
        finally:
            out.close()
            gone.close()
        return out.written, gone.written

    def _was_wanted(self, ctx: JobContext, deletion: Version) -> bool:
        """Whether a resource deleted at or after ``_since`` goes in the ``deleted`` files:
        its last version before the deletion, read through the door, is one the export would
        have held."""
        if self.job.request.since is None or deletion.version < 2:
            return False
        before = ctx.read(
            lambda reader: reader.vread(deletion.type, deletion.id, deletion.version - 1)
        )
        return before is not None and not before.deleted and self._wanted(before)

    def _read(self, ctx: JobContext, query: HistoryQuery) -> Page:
        """One batch: a reader of its own (no read transaction outlives it)."""
        return ctx.read(lambda reader: reader.history(query))

    def _wanted(self, version: Version) -> bool:
        if version.deleted or version.body is None:
            return False
        level = self.job.request.level
        if level != "system":
            owners = split(version.owners)
            if not owners or (self.owners is not None and not owners & self.owners):
                return False
        criteria = self.filters.get(version.type)
        if criteria:
            resource = orjson.loads(version.body)
            return any(
                compile_matcher(c)(
                    version.type,
                    resource,
                    self.indexer,
                    id=version.id,
                    last_updated=version.last_updated,
                )
                for c in criteria
            )
        return True

    def _errors(self, state: dict[str, Any]) -> None:
        """The OperationOutcome file of the parameters a lenient kick-off ignored."""
        if not self.job.ignored or "errors" in state:
            return
        outcome = operation_outcome(
            [
                Issue("warning", "not-supported", f"Parameter '{name}' was ignored", name)
                for name in self.job.ignored
            ]
        )
        out = _Files(self.folder, "errors", self.file_bytes)
        out.write(orjson.dumps(outcome))
        out.close()
        state["errors"] = out.written
        files.save_state(self.folder, state)

    def manifest(self, job: str, state: dict[str, Any]) -> dict[str, Any]:
        """The Bulk Data manifest of the finished export."""
        base = f"{self.job.base}/_export/{job}"
        output: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for type in self.job.request.types:
            for name, count in state["types"].get(type, ()):
                output.append({"type": type, "url": f"{base}/{name}", "count": count})
            for name, count in state.get("deleted", {}).get(type, ()):
                deleted.append({"type": "Bundle", "url": f"{base}/{name}", "count": count})
        for name, count in state.get("errors", ()):
            errors.append({"type": "OperationOutcome", "url": f"{base}/{name}", "count": count})
        return {
            "transactionTime": format_instant(self.job.snapshot.time),
            "request": self.job.url,
            "requiresAccessToken": self.job.requires_token,
            "output": output,
            "deleted": deleted,
            "error": errors,
        }


def _deletions(references: list[str]) -> dict[str, Any]:
    """One line of a ``deleted`` file: a transaction Bundle of a ``DELETE`` entry per
    resource."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in references],
    }
