"""NDJSON import (``calaim-fhir import``): Synthea's bulk output or our own ``$export``, into a
store, through the server's write pipeline (validation, conditional references, program
rules) as the local operator.

**Two passes**, so references resolve whatever the file order and the cycles
(``Encounter.partOf``, ``Patient`` <-> ``RelatedPerson``):

1. every line without a conditional reference is stored under its own id (``PUT``
   semantics: a literal reference to a resource not stored yet is kept as it is, and
   resolves once that one is);
2. then the lines with conditional references (``Practitioner?identifier=...``, as bulk
   exports write them), in the order of their types' references, each resolved by the
   pipeline against what pass 1 stored; a line whose conditional reference matched nothing
   is tried again while a round still stores something (its target may be a pass-2 line).

Lines are written in units of ``batch`` (one transaction each); a unit that fails is written
again line by line, so one bad line is rejected alone with its reason.

**Resume**: after each unit the progress (lines done per file and pass) is saved in the state
file; an import run again with the same state file skips what is done (writes are ``PUT``
with ids, so a unit written twice changes nothing either).

**Summary**: the rejected lines (file, line, status, reason) and the literal references that
name no stored resource after the import (unresolved).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from server import loader
from server.bulk.ahead import Ahead, AheadRows, default_workers
from server.errors import FhirError
from server.fhir.resource_types import RESOURCE_TYPES
from server.loader import Unresolved
from server.settings import Settings

_CONDITIONAL = re.compile(rb'"reference"\s*:\s*"[A-Z][A-Za-z]+\?')
_REFERENCE = re.compile(rb'"reference"\s*:\s*"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})"')
_NO_MATCH = "matches no resource"
DEFAULT_BATCH = 500
_CHECK = 500
_LISTED = 1000  # unresolved references kept for the summary


@dataclass(frozen=True, slots=True)
class Rejected:
    file: str
    line: int
    status: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    lines: int = 0
    stored: int = 0
    skipped: int = 0  # done by an earlier run (resume)
    rejected: list[Rejected] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)
    unresolved_count: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class _Line:
    file: str
    number: int
    type: str
    id: str
    resource: dict[str, Any]


class Progress:
    """Callbacks for a progress display: ``start(pass, total)``, ``advance(n)``."""

    def __init__(
        self,
        start: Callable[[str, int], None] = lambda name, total: None,
        advance: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.start = start
        self.advance = advance


def state_path(files: Sequence[Path]) -> Path:
    """The default state file of an import of ``files``: in the current folder, named after
    a digest of the files' absolute paths."""
    digest = hashlib.sha256("\n".join(str(p.resolve()) for p in files).encode()).hexdigest()
    return Path(f".calaim-import-{digest[:16]}.json")


def _lines(path: Path, deferred: bool) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of the lines of one pass (``deferred``: with conditional
    references)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip() and bool(_CONDITIONAL.search(raw)) == deferred:
                yield number, raw


def _chunks(
    path: Path, deferred: bool, done: int, size: int, skipped: Callable[[], None]
) -> Iterator[list[tuple[int, bytes]]]:
    """The lines of one pass after line ``done`` (those up to it: ``skipped``), ``size`` at a
    time."""
    chunk: list[tuple[int, bytes]] = []
    for number, raw in _lines(path, deferred):
        if number <= done:
            skipped()
            continue
        chunk.append((number, raw))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _count(paths: Sequence[Path]) -> tuple[int, int]:
    first = second = 0
    for path in paths:
        with path.open("rb") as handle:
            for raw in handle:
                if raw.strip():
                    if _CONDITIONAL.search(raw):
                        second += 1
                    else:
                        first += 1
    return first, second


def _parse(file: str, number: int, raw: bytes) -> _Line | Rejected:
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected(file, number, 400, f"invalid JSON: {exc}")
    if not isinstance(resource, dict):
        return Rejected(file, number, 400, "not a JSON object")
    type, id = resource.get("resourceType"), resource.get("id")
    if not isinstance(type, str) or type not in RESOURCE_TYPES:
        return Rejected(file, number, 400, "no known resourceType")
    if not isinstance(id, str) or not id:
        return Rejected(file, number, 400, "no id: an imported resource keeps its own id")
    return _Line(file, number, type, id, resource)


class _State:
    """Lines done per (pass, file), saved atomically after every unit."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.done: dict[str, int] = {}
        self.retry: list[list[Any]] = []  # [file, line] of pass-2 lines waiting for a retry
        if path is not None and path.is_file():
            saved = orjson.loads(path.read_bytes())
            self.done = saved.get("done", {})
            self.retry = saved.get("retry", [])

    def get(self, step: str, file: str) -> int:
        return int(self.done.get(f"{step}:{file}", 0))

    def set(self, step: str, file: str, line: int) -> None:
        self.done[f"{step}:{file}"] = line
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(orjson.dumps({"done": self.done, "retry": self.retry}))
        os.replace(temporary, self.path)

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@asynccontextmanager
async def _application(settings: Settings, workers: int) -> AsyncIterator[_Application]:
    """The application's pipeline and the local operator's door on the store (lifespan
    run: opened, migrated, closed), with the index rows computed ahead by ``workers``
    processes (``ahead.py``)."""
    from server.app import create_app
    from server.auth.principal import LOCAL
    from server.services import build_services
    from server.store.authorized import AuthorizedRepository
    from server.store.sql.opening import open_store

    services = build_services(settings)
    store = open_store(settings, services.search)
    rows = AheadRows(store.rows)
    store.rows = rows
    pool = Ahead(settings, workers)
    try:
        app = create_app(settings, services=services, store=store)
        async with app.router.lifespan_context(app):
            state = app.state
            door = AuthorizedRepository(state.runner, LOCAL, None, (), state.definitions)
            yield _Application(state.pipeline, door, rows, pool)
    finally:
        pool.close()
        store.close()


@dataclass(slots=True)
class _Application:
    pipeline: Any
    repo: Any
    rows: AheadRows
    ahead: Ahead


async def run_import(
    paths: Sequence[Path],
    settings: Settings,
    *,
    batch: int = DEFAULT_BATCH,
    state_file: Path | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Import the NDJSON files ``paths`` (in the given order; pass 2 by type rank), the index
    rows of the next units computed by ``workers`` processes (default: ``default_workers``;
    0: none) while the writer stores the current one."""
    import time

    from server.auth.principal import LOCAL
    from server.writes.write import Write

    progress = progress or Progress()
    started = time.perf_counter()
    report = ImportReport()
    state = _State(state_file)
    ordered, _ = loader.order(list(paths))
    first, second = _count(paths)
    report.lines = first + second
    workers = default_workers(report.lines, batch) if workers is None else workers
    async with _application(settings, workers) as application:
        pipeline, repo = application.pipeline, application.repo

        def unit_of(lines: list[_Line]) -> Callable[[Any], None]:
            def write(unit: Any) -> None:
                writer = pipeline.in_unit(unit, LOCAL)
                for line in lines:
                    writer.write(Write("update", line.type, id=line.id, resource=line.resource))

            return write

        async def store(lines: list[_Line]) -> list[tuple[_Line, FhirError]]:
            """Write ``lines`` in one unit, or one by one if it fails: the failures."""
            if not lines:
                return []
            try:
                await repo.writing(unit_of(lines))
                return []
            except FhirError as exc:
                if len(lines) == 1:
                    return [(lines[0], exc)]
            failed: list[tuple[_Line, FhirError]] = []
            for line in lines:
                failed += await store([line])
            return failed

        async def flush(
            step: str, name: str, pending: list[_Line], last: int, retry: list[_Line] | None
        ) -> None:
            """Store ``pending`` (the lines of ``name`` up to line ``last``) and record it;
            with ``retry``, a line whose conditional reference matched nothing goes there."""
            failures = await store(pending)
            for line, exc in failures:
                text = str(exc)
                if retry is not None and _NO_MATCH in text:
                    retry.append(line)
                    state.retry.append([line.file, line.number])
                else:
                    report.rejected.append(Rejected(line.file, line.number, exc.status, text))
            report.stored += len(pending) - len(failures)
            state.set(step, name, last)
            progress.advance(len(pending))

        def skipped() -> None:
            report.skipped += 1
            progress.advance(1)

        async def one_pass(step: str, files: Sequence[Path], deferred: bool) -> list[_Line]:
            """Store the lines of one pass; the lines whose conditional reference matched
            nothing (tried again later); every other failure is rejected. The next units'
            index rows are computed ahead while a unit is stored."""
            retry: list[_Line] = []
            for path in files:
                name = str(path)
                chunks = _chunks(path, deferred, state.get(step, name), batch, skipped)
                async for chunk, computed in application.ahead.run(chunks):
                    pending: list[_Line] = []
                    for position, (number, raw) in enumerate(chunk):
                        parsed = _parse(name, number, raw)
                        if isinstance(parsed, Rejected):
                            report.rejected.append(parsed)
                            progress.advance(1)
                            continue
                        pending.append(parsed)
                        ready = None if computed is None else computed[position]
                        if ready is not None:  # compared with what is stored: its own copy
                            application.rows.offer(ready[0], ready[1], orjson.loads(raw), ready[2])
                    await flush(step, name, pending, chunk[-1][0], retry if deferred else None)
                    application.rows.clear()
            return retry

        progress.start("pass 1: resources under their ids", first)
        await one_pass("1", list(paths), False)
        progress.start("pass 2: conditional references", second)
        waiting = {(file, number) for file, number in state.retry}  # an earlier run's
        retry = await one_pass("2", ordered, True)
        waiting -= {(line.file, line.number) for line in retry}
        retry += _reread(waiting)
        while retry:  # a target of a conditional reference may itself be a pass-2 line
            again: list[tuple[_Line, FhirError]] = []
            for line in retry:
                again += await store([line])
            report.stored += len(retry) - len(again)
            if len(again) == len(retry):  # no progress: what is left is rejected
                report.rejected += [
                    Rejected(line.file, line.number, exc.status, str(exc)) for line, exc in again
                ]
                break
            retry = [line for line, _ in again]
        await _unresolved(paths, repo, report)
    state.finish()
    report.seconds = time.perf_counter() - started
    return report


def _reread(keys: set[tuple[str, int]]) -> list[_Line]:
    """The lines ``(file, line number)`` read again (pass-2 lines an interrupted run left
    waiting for a retry)."""
    out: list[_Line] = []
    for file in sorted({file for file, _ in keys}):
        wanted = {number for name, number in keys if name == file}
        with open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number in wanted:
                    parsed = _parse(file, number, raw)
                    if isinstance(parsed, _Line):
                        out.append(parsed)
    return out


async def _unresolved(paths: Sequence[Path], repo: Any, report: ImportReport) -> None:
    """The literal references of the imported lines that name no stored resource."""
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for path in paths:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                for match in _REFERENCE.finditer(raw):
                    key = (match.group(1).decode(), match.group(2).decode())
                    seen.setdefault(key, (str(path), number))
    keys = list(seen)
    for start in range(0, len(keys), _CHECK):
        chunk = keys[start : start + _CHECK]
        found = await repo.reading(lambda reader, chunk=chunk: reader.versions(chunk))
        for key in chunk:
            if key not in found:
                report.unresolved_count += 1
                if len(report.unresolved) < _LISTED:
                    file, line = seen[key]
                    report.unresolved.append(Unresolved(file, f"line {line}", f"{key[0]}/{key[1]}"))


def run(paths: Sequence[Path], settings: Settings, **options: Any) -> ImportReport:
    return asyncio.run(run_import(paths, settings, **options))
