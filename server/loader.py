"""Loading FHIR data (files and folders of JSON / NDJSON) into a server.

What each input becomes:

* a transaction or batch Bundle: POSTed as it is to the base URL;
* any other Bundle (collection, searchset, ...) and every NDJSON file: batch Bundles of at most
  ``batch_size`` entries, each resource PUT to ``[type]/[id]`` (POSTed to ``[type]`` when it
  has no id);
* any other resource: PUT to ``[type]/[id]``, or POST to ``[type]`` without an id.

NDJSON files are loaded in the order of their types' references (``order``): the file of
Organizations before the file of Practitioners that name them, Practitioners before
Encounters, the lines of a file with several types likewise, so the conditional references
bulk exports write (``Practitioner?identifier=...``) find their targets; the server resolves
them in every batch entry. After the load, every literal reference (``Type/id``) of the
resources loaded that names neither a loaded resource nor one the server has is reported in
``LoadReport.unresolved``, as are entries rejected because a conditional reference matched
nothing.

The target is a running server (HTTP through httpx) or, with ``direct``, the application
itself built from ``create_app`` and called in-process through httpx's ASGI transport: the same
routes, validation, transactions and ``AuthorizedRepository`` as a running server, without a
socket. Files named ``*.expected.json`` are expected-result sidecars and are never loaded.

This module has no command-line or terminal code; ``server.cli`` drives it and draws progress
through the ``Progress`` callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import httpx
import orjson

DEFAULT_URL = "http://127.0.0.1:8080/fhir"
DEFAULT_BATCH_SIZE = 100
SIDECAR_SUFFIX = ".expected.json"
INVALID_FOLDER = "invalid"
DATA_SUFFIXES = (".json", ".ndjson")
_FHIR_JSON = "application/fhir+json"
_HEADERS = {"Content-Type": _FHIR_JSON, "Accept": _FHIR_JSON}
_ENTRY_EXPRESSION = re.compile(r"^Bundle\.entry\[(\d+)\]")
_BATCH_RESOURCE = re.compile(r"^Bundle\.entry\[\d+\]\.resource")
_POSITION = re.compile(r"(\d+)\D*$")
_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_REFERENCE_TYPE = re.compile(rb'"reference"\s*:\s*"([A-Z][A-Za-z]+)[/?]')
_LITERAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_CHECK_CHUNK = 50
T = TypeVar("T")
_REFERENCE = re.compile(rb'"reference":"([^"]+)"')
_CONDITIONAL_FAILED = re.compile(r"Conditional reference '([^']*)' matches")


# -- inputs ----------------------------------------------------------------------------------


def is_sidecar(path: Path) -> bool:
    return path.name.endswith(SIDECAR_SUFFIX)


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """The data files named by ``paths``: files as given, folders searched recursively for
    ``*.json`` and ``*.ndjson`` (sorted) except inside folders named ``invalid`` (examples that
    fail on purpose; name such a file directly to send it); ``*.expected.json`` sidecars are
    always left out. Raises ``FileNotFoundError`` for a path that does not exist."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.endswith(DATA_SUFFIXES)
                and INVALID_FOLDER not in p.relative_to(path).parts[:-1]
            )
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"No such file or folder: {path}")
        for file in found:
            key = file.resolve()
            if not is_sidecar(file) and key not in seen:
                seen.add(key)
                out.append(file)
    return out


def _ranks(graph: dict[T, set[T]], first: Callable[[T], Any]) -> dict[T, int]:
    """A rank for every node: the nodes it depends on first (by ``first`` among those ready);
    a cycle is broken at its node that comes ``first``."""
    remaining = {node: deps - {node} for node, deps in graph.items()}
    ranks: dict[T, int] = {}
    while remaining:
        ready = [node for node, deps in remaining.items() if deps <= ranks.keys()]
        chosen = min(ready or remaining, key=first)
        ranks[chosen] = len(ranks)
        del remaining[chosen]
    return ranks


def order(files: Sequence[Path]) -> tuple[list[Path], dict[str, int]]:
    """``files`` with the NDJSON ones (in the places they had) ordered so that a file comes
    after the files holding the types it references, and the rank of every type those files
    hold (the lines of a file follow it)."""
    holds: dict[Path, set[str]] = {}
    refers: dict[Path, set[str]] = {}
    types: dict[str, set[str]] = {}  # each type -> the types its lines reference
    for path in files:
        if not path.name.endswith(".ndjson"):
            continue
        holds[path], refers[path] = set(), set()
        with path.open("rb") as handle:
            for line in handle:
                found = _TYPE.search(line)
                if found is None:
                    continue
                type = found.group(1).decode()
                named = {m.group(1).decode() for m in _REFERENCE_TYPE.finditer(line)}
                holds[path].add(type)
                refers[path] |= named
                types.setdefault(type, set()).update(named)
    type_ranks = _ranks({t: refs & types.keys() for t, refs in types.items()}, lambda t: t)
    graph = {
        path: {other for other in holds if other != path and refers[path] & holds[other]}
        for path in holds
    }
    file_ranks = _ranks(graph, files.index)
    ndjson = iter(sorted(holds, key=file_ranks.__getitem__))
    return [next(ndjson) if path in holds else path for path in files], type_ranks


def read_ndjson(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, parsed value, error)`` for every non-blank line of an NDJSON file."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line), None
            except orjson.JSONDecodeError as exc:
                yield number, None, f"invalid JSON: {exc}"


def read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return orjson.loads(path.read_bytes()), None
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one entry: ``entry`` names it inside its file (``-`` for a file that
    is one resource, ``entry[3]`` in a Bundle, ``line 12`` in NDJSON); ``status`` is the HTTP
    status (``None`` when nothing could be sent)."""

    file: str
    entry: str
    status: int | None
    diagnostics: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A reference that names no resource: where it was first seen and the reference."""

    file: str
    entry: str
    reference: str


@dataclass(slots=True)
class LoadReport:
    files: int = 0
    requests: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def statuses(self, file: str | Path) -> list[int | None]:
        """The statuses of one file's entries, in the file's order."""
        return [o.status for o in self.outcomes if o.file == str(file)]


@dataclass(slots=True)
class Progress:
    """Callbacks the caller may set to follow a load."""

    file_done: Callable[[Path], None] = lambda path: None
    request_done: Callable[[], None] = lambda: None


# -- what a file becomes ---------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    """One HTTP request, and the labels of the file entries its answer reports on."""

    method: str
    url: str  # relative to the FHIR base; "" is the base itself
    body: Any
    labels: list[str]
    kind: str  # "resource" | "batch" | "transaction"


def _resource_request(resource: dict[str, Any]) -> tuple[str, str]:
    type, id = resource["resourceType"], resource.get("id")
    if isinstance(id, str) and id:
        return "PUT", f"{type}/{id}"
    return "POST", str(type)


def _is_resource(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and isinstance(value.get("resourceType"), str)


def _batches(items: Sequence[tuple[str, dict[str, Any]]], size: int) -> Iterator[_Request]:
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        entries = []
        for _, resource in chunk:
            method, url = _resource_request(resource)
            entries.append({"resource": resource, "request": {"method": method, "url": url}})
        body = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        yield _Request("POST", "", body, [label for label, _ in chunk], "batch")


def plan(
    path: Path, batch_size: int = DEFAULT_BATCH_SIZE, ranks: dict[str, int] | None = None
) -> tuple[list[_Request], list[Outcome]]:
    """The requests that load ``path``, and the entries that cannot be sent at all; the lines
    of an NDJSON file in the order of their types' ``ranks``."""
    name = str(path)
    local: list[Outcome] = []
    items: list[tuple[str, dict[str, Any]]] = []
    if path.name.endswith(".ndjson"):
        for number, value, error in read_ndjson(path):
            label = f"line {number}"
            if error is not None:
                local.append(Outcome(name, label, None, error))
            elif not _is_resource(value):
                local.append(Outcome(name, label, None, "not a FHIR resource (no resourceType)"))
            else:
                items.append((label, value))
        if ranks:
            items.sort(key=lambda item: ranks.get(item[1]["resourceType"], -1))
        return list(_batches(items, batch_size)), local
    value, error = read_json(path)
    if error is not None:
        return [], [Outcome(name, "-", None, error)]
    if not _is_resource(value):
        return [], [Outcome(name, "-", None, "not a FHIR resource (no resourceType)")]
    if value["resourceType"] == "Bundle":
        kind = value.get("type")
        entries = value.get("entry")
        entries = entries if isinstance(entries, list) else []
        if kind in ("transaction", "batch"):
            labels = [f"entry[{i}]" for i in range(len(entries))]
            return [_Request("POST", "", value, labels, str(kind))], local
        for index, entry in enumerate(entries):
            label = f"entry[{index}]"
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if _is_resource(resource):
                items.append((label, resource))
            else:
                local.append(Outcome(name, label, None, "the entry has no resource"))
        return list(_batches(items, batch_size)), local
    method, url = _resource_request(value)
    return [_Request(method, url, value, ["-"], "resource")], local


# -- answers ---------------------------------------------------------------------------------


def _status(line: Any) -> int | None:
    if isinstance(line, int):
        return line
    if isinstance(line, str) and line[:3].isdigit():
        return int(line[:3])
    return None


def first_diagnostics(outcome: Any) -> str:
    """``expression: diagnostics`` of the first issue of an OperationOutcome."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = outcome.get("issue")
    if not isinstance(issues, list) or not issues or not isinstance(issues[0], dict):
        return ""
    issue = issues[0]
    text = str(issue.get("diagnostics") or issue.get("code") or "")
    expression = issue.get("expression")
    if isinstance(expression, list) and expression:
        text = f"{expression[0]}: {text}"
    more = len(issues) - 1
    return f"{text} (+{more} more)" if more > 0 else text


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None


def _read_answer(file: str, request: _Request, response: httpx.Response) -> list[Outcome]:
    body = _json(response)
    status = response.status_code
    if request.kind == "resource":
        diagnostics = "" if 200 <= status < 300 else first_diagnostics(body) or response.text[:200]
        return [Outcome(file, request.labels[0], status, diagnostics)]
    if not 200 <= status < 300:
        diagnostics = first_diagnostics(body) or response.text[:200]
        if request.kind == "transaction":
            # the whole transaction failed; point at the entry the server blames, if any
            label = "transaction"
            issues = body.get("issue") if isinstance(body, dict) else None
            if isinstance(issues, list) and issues and isinstance(issues[0], dict):
                expression = (issues[0].get("expression") or [""])[0]
                match = _ENTRY_EXPRESSION.match(str(expression))
                if match:
                    label = f"transaction entry[{match.group(1)}]"
            return [Outcome(file, label, status, diagnostics)]
        return [Outcome(file, label, status, diagnostics) for label in request.labels]
    entries = body.get("entry") if isinstance(body, dict) else None
    if not isinstance(entries, list) or len(entries) != len(request.labels):
        return [
            Outcome(file, label, None, "the response Bundle does not match the request")
            for label in request.labels
        ]
    out = []
    sent = request.body.get("entry", []) if request.kind == "batch" else []
    for index, (label, entry) in enumerate(zip(request.labels, entries, strict=True)):
        reply = entry.get("response") if isinstance(entry, dict) else None
        reply = reply if isinstance(reply, dict) else {}
        code = _status(reply.get("status"))
        diagnostics = ""
        if code is None or not 200 <= code < 300:
            diagnostics = first_diagnostics(reply.get("outcome"))
            if index < len(sent):
                # the batch Bundle is the loader's, not the file's: locate issues in the resource
                type = str(sent[index]["resource"]["resourceType"])
                diagnostics = _BATCH_RESOURCE.sub(type, diagnostics, count=1)
        out.append(Outcome(file, label, code, diagnostics))
    return out


def _position(outcome: Outcome) -> int:
    """Where an entry is in its file (line number, entry index), for reporting in file order."""
    match = _POSITION.search(outcome.entry)
    return int(match.group(1)) if match else -1


# -- targets ---------------------------------------------------------------------------------


@asynccontextmanager
async def http_target(
    url: str = DEFAULT_URL, *, timeout: float = 120.0, auth: httpx.Auth | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the running server whose FHIR base is ``url``; ``auth`` authenticates
    its requests (``server/smart_client.py``) when the server has authentication on."""
    async with httpx.AsyncClient(
        base_url=url.rstrip("/") + "/", timeout=timeout, headers=_HEADERS, auth=auth
    ) as client:
        yield client


@asynccontextmanager
async def direct_target(
    database_url: str | None = None, *, log_requests: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the application itself, serving the store at ``database_url`` (default:
    the settings' default) in-process: the lifespan runs (store opened and migrated), every
    request goes through the full ASGI application."""
    from server.app import create_app
    from server.settings import Settings

    # in-process, as the local operator: no authentication, a loopback transport
    settings = (
        Settings(database_url=database_url, auth="off") if database_url else Settings(auth="off")
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    request_log = logging.getLogger("calaim_fhir.request")
    async with app.router.lifespan_context(app):
        # a line per request is the server's business, not a bulk load's
        level = request_log.level
        if not log_requests:
            request_log.setLevel(logging.WARNING)
        try:
            # the application's routes are under /fhir whatever the base URL says
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1/fhir/", headers=_HEADERS
            ) as client:
                yield client
        finally:
            request_log.setLevel(level)


# -- loading ---------------------------------------------------------------------------------


class Unreachable(Exception):
    """No server answers at the target URL: the load stops at the first request."""

    def __init__(self, url: Any, error: Exception) -> None:
        super().__init__(
            f"No FHIR server answers at {str(url).rstrip('/')} ({error}). Start one with "
            "`calaim-fhir serve`, pass its base URL with --url (or CALAIM_FHIR_BASE_URL), "
            "or load straight into a store with --direct."
        )


class Unauthenticated(Exception):
    """The server wants an access token (401): the load stops at the first request."""

    def __init__(self, url: Any) -> None:
        super().__init__(
            f"The server at {str(url).rstrip('/')} requires an access token (401): give "
            "--client-id and --private-key of a registered client (calaim-fhir client add), "
            "or --token."
        )


async def load_files(
    client: httpx.AsyncClient,
    files: Sequence[Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> LoadReport:
    """Load ``files`` (already discovered) one after another through ``client``."""
    progress = progress or Progress()
    report = LoadReport()
    files, ranks = order(files)
    loaded: set[str] = set()
    referenced: dict[str, Unresolved] = {}
    for path in files:
        requests, outcomes = plan(path, batch_size, ranks)
        for request in requests:
            try:
                response = await client.request(
                    request.method,
                    request.url,
                    content=orjson.dumps(request.body),
                    headers={"Prefer": "return=minimal"},
                )
            except httpx.ConnectError as exc:
                raise Unreachable(client.base_url, exc) from exc
            except httpx.HTTPError as exc:
                outcomes.extend(
                    Outcome(str(path), label, None, f"request failed: {exc}")
                    for label in request.labels
                )
            else:
                if response.status_code == 401:
                    raise Unauthenticated(client.base_url)
                answers = _read_answer(str(path), request, response)
                _references(request, answers, loaded, referenced)
                outcomes.extend(answers)
            report.requests += 1
            progress.request_done()
        report.outcomes.extend(sorted(outcomes, key=_position))
        report.files += 1
        progress.file_done(path)
    missing = {ref: seen for ref, seen in referenced.items() if ref not in loaded}
    report.unresolved = [
        Unresolved(o.file, o.entry, m.group(1))
        for o in report.outcomes
        if (m := _CONDITIONAL_FAILED.search(o.diagnostics)) is not None
    ]
    report.unresolved += [missing[ref] for ref in await _absent(client, sorted(missing))]
    return report


def _references(
    request: _Request,
    answers: list[Outcome],
    loaded: set[str],
    referenced: dict[str, Unresolved],
) -> None:
    """Record the identities and the literal references of the resources a request loaded."""
    if request.kind == "batch":
        resources = [entry["resource"] for entry in request.body["entry"]]
    elif request.kind == "resource":
        resources = [request.body]
    else:
        return  # a transaction: its references are the server's to resolve, all or nothing
    for answer, resource in zip(answers, resources, strict=False):
        if not answer.ok:
            continue
        id = resource.get("id")
        if isinstance(id, str):
            loaded.add(f"{resource['resourceType']}/{id}")
        for match in _REFERENCE.finditer(orjson.dumps(resource)):
            reference = match.group(1).decode()
            if _LITERAL.match(reference) and reference not in referenced:
                referenced[reference] = Unresolved(answer.file, answer.entry, reference)


async def _absent(client: httpx.AsyncClient, references: list[str]) -> list[str]:
    """Those of ``references`` (``Type/id``) the server has no resource for."""
    by_type: dict[str, list[str]] = {}
    for reference in references:
        type, _, id = reference.partition("/")
        by_type.setdefault(type, []).append(id)
    absent: list[str] = []
    for type, ids in by_type.items():
        for start in range(0, len(ids), _CHECK_CHUNK):
            chunk = ids[start : start + _CHECK_CHUNK]
            try:
                response = await client.get(
                    type, params={"_id": ",".join(chunk), "_count": str(len(chunk))}
                )
                body = _json(response) if response.status_code == 200 else None
            except httpx.HTTPError:
                body = None
            entries = body.get("entry", []) if isinstance(body, dict) else []
            found = {e.get("resource", {}).get("id") for e in entries if isinstance(e, dict)}
            absent += [f"{type}/{id}" for id in chunk if id not in found]
    return absent


def load(
    paths: Iterable[str | Path],
    *,
    url: str = DEFAULT_URL,
    direct: bool = False,
    database_url: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    auth: httpx.Auth | None = None,
) -> LoadReport:
    """Load files and folders into a running server (``url``, its requests authenticated by
    ``auth`` if given) or, with ``direct``, into the store at ``database_url`` through the
    in-process application."""
    files = discover(paths)

    async def run() -> LoadReport:
        target = direct_target(database_url) if direct else http_target(url, auth=auth)
        async with target as client:
            return await load_files(client, files, batch_size=batch_size, progress=progress)

    return asyncio.run(run())


# -- validation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileIssue:
    file: str
    severity: str
    expression: str
    diagnostics: str

    @property
    def is_error(self) -> bool:
        return self.severity in ("error", "fatal")


def validate_file(path: Path) -> list[FileIssue]:
    """Base-validate a resource or Bundle file, or every line of an NDJSON file."""
    from server.fhir.base_validation import base_validator

    validator = base_validator()
    name = str(path)
    if path.name.endswith(".ndjson"):
        out = []
        for number, value, error in read_ndjson(path):
            where = f"line {number}"
            if error is not None:
                out.append(FileIssue(name, "error", where, error))
                continue
            for issue in validator.validate(value):
                expression = f"{where}: {issue.expression}" if issue.expression else where
                out.append(FileIssue(name, issue.severity, expression, issue.diagnostics))
        return out
    value, error = read_json(path)
    if error is not None:
        return [FileIssue(name, "error", "-", error)]
    return [
        FileIssue(name, i.severity, i.expression or "-", i.diagnostics)
        for i in validator.validate(value)
    ]
