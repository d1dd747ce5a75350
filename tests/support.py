"""Shared helpers for the HTTP-level tests: apps on a given store, databases, FHIR assertions.

Starlette's ``TestClient`` warns (``StarletteDeprecationWarning``) when it is imported with
``httpx`` installed; pyproject turns warnings into errors, so the import is wrapped here, and
only that warning, only at import, is silenced.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r".*`httpx` with `starlette\.testclient` is deprecated.*"
    )
    from fastapi.testclient import TestClient

from starlette.requests import Request

from server.app import create_app
from server.auth.policy import Policy
from server.auth.principal import LOCAL, Principal
from server.settings import Settings
from server.writes.rules import Rule

__all__ = ["TestClient"]

#: The base URL the apps write: the TestClient's own host, so Bundle links can be followed.
BASE = "http://testserver/fhir"
FHIR_JSON = "application/fhir+json"
TABLES = (
    "resource",
    "resource_history",
    "access_grant",
    "search_token",
    "search_string",
    "search_reference",
    "search_date",
    "search_number",
    "search_quantity",
    "search_uri",
    "async_job",
    "outbox",
    "outbox_consumer",
    "audit_event",
    "audit_ref",
)


# -- databases ---------------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@contextmanager
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A new, empty database in the test cluster (for a whole module); dropped afterwards."""
    name = f"calaim_c_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(postgres_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def clear_store(database_url: str) -> None:
    """Empty the data tables (the schema and the clock stay)."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :], timeout=10)
        try:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.commit()
        finally:
            conn.close()
    else:
        with psycopg.connect(database_url, connect_timeout=10) as pg:  # one transaction
            for table in TABLES:
                pg.execute(f"DELETE FROM {table}")


# -- apps ---------------------------------------------------------------------------------------


@contextmanager
def fhir_client(
    database_url: str,
    *,
    rules: Sequence[Rule] = (),
    principals: Callable[[Request], Principal] | None = None,
    policies: Sequence[Policy] = (),
    **overrides: Any,
) -> Iterator[TestClient]:
    """A TestClient for ``create_app`` on ``database_url``; the lifespan runs (store opened,
    migrated, closed). ``rules``: program rules added to the server's own; ``principals``: who
    each request's caller is (default: the local operator; see ``Acting``); ``policies``: the
    access policies of the app (``server/auth/policy.py``); ``overrides`` are further Settings
    fields (``max_body_bytes``, ...)."""
    values: dict[str, Any] = {"database_url": database_url, "base_url": BASE, "auth": "off"}
    values.update(overrides)
    app = create_app(Settings(**values), rules=rules, principals=principals, policies=policies)
    with TestClient(Loopback(app), raise_server_exceptions=False) as client:
        yield client


class Loopback:
    """The in-process test transport as what it is, a loopback connection: the ASGI
    ``client`` and ``server`` addresses become 127.0.0.1 (the TestClient names them
    ``testclient``/``testserver``, which a server with authentication off refuses).
    ``app`` is the wrapped application."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {
                **scope,
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", scope["server"][1] if scope.get("server") else 80),
            }
        await self.app(scope, receive, send)


@contextmanager
def extra_operations(monkeypatch: Any, *added: Any) -> Iterator[None]:
    """The server's operations plus ``added`` (``server.operations.registry.Operation``s, e.g.
    from ``defined_operation``),
    for the router and the CapabilityStatement, until the block ends."""
    from server.api import metadata
    from server.operations import registry

    real = registry.operations

    def table() -> list[Any]:
        return [*real(), *added]

    monkeypatch.setattr(registry, "operations", table)
    monkeypatch.setattr(metadata, "operations", table)
    metadata._statement.cache_clear()
    try:
        yield
    finally:
        metadata._statement.cache_clear()


def defined_operation(
    code: str,
    run: Any,
    *,
    resource: tuple[str, ...] = (),
    system: bool = False,
    type: bool = False,
    instance: bool = False,
    affects_state: bool = False,
    parameters: tuple[tuple[str, str], ...] = (),
    **behaviour: Any,
) -> Any:
    """An operation defined by an OperationDefinition built here (``code`` on ``resource``
    at the given levels; ``parameters``: ``(name, type)`` inputs, each 0..1), run by ``run``
    (``behaviour``: the other fields of ``server.operations.call.Implementation``)."""
    from server.operations.registry import Operation

    id = "-".join(["test", code, *resource])
    spec = {
        "resourceType": "OperationDefinition",
        "id": id,
        "url": f"http://example.org/fhir/OperationDefinition/{id}",
        "name": code,
        "status": "active",
        "kind": "operation",
        "code": code,
        "resource": list(resource),
        "system": system,
        "type": type,
        "instance": instance,
        "affectsState": affects_state,
        "parameter": [
            {"name": name, "use": "in", "min": 0, "max": "1", "type": kind}
            for name, kind in parameters
        ],
    }
    return Operation.of(spec, run, **behaviour)


class Acting:
    """A principal resolver for ``fhir_client(principals=...)``: every request is made by the
    principal set last (``as_(principal)``); the local operator by default."""

    def __init__(self) -> None:
        self.principal = LOCAL

    def as_(self, principal: Principal) -> None:
        self.principal = principal

    def __call__(self, request: Request) -> Principal:
        return self.principal


# -- resources ----------------------------------------------------------------------------------


def patient(
    family: str = "Doe", *, identifier: tuple[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
    if identifier is not None:
        body["identifier"] = [{"system": identifier[0], "value": identifier[1]}]
    body.update(extra)
    return body


def observation(subject: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
    }
    if subject is not None:
        body["subject"] = {"reference": subject}
    body.update(extra)
    return body


def create(client: TestClient, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    """POST ``resource``; asserts 201 and returns the stored resource."""
    response = client.post(
        f"/fhir/{resource['resourceType']}",
        json=resource,
        headers={"Content-Type": FHIR_JSON, **headers},
    )
    assert response.status_code == 201, f"create failed: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


def put(client: TestClient, resource: dict[str, Any], **headers: str) -> Any:
    return client.put(
        f"/fhir/{resource['resourceType']}/{resource['id']}",
        json=resource,
        headers={"Content-Type": FHIR_JSON, **headers},
    )


# -- assertions ---------------------------------------------------------------------------------


def outcome(response: Any, status: int | tuple[int, ...] | None = None) -> dict[str, Any]:
    """Asserts the response is an OperationOutcome (with ``status``) and returns it."""
    if status is not None:
        wanted = (status,) if isinstance(status, int) else status
        assert response.status_code in wanted, (
            f"expected {wanted}, got {response.status_code}: {response.text[:800]}"
        )
    try:
        body = response.json()
    except ValueError as exc:  # pragma: no cover - a failure message
        raise AssertionError(
            f"{response.status_code} body is not JSON: {response.text[:300]!r}"
        ) from exc
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", (
        f"{response.status_code} body is not an OperationOutcome: {response.text[:500]}"
    )
    assert body.get("issue"), f"OperationOutcome without issues: {body}"
    return body


def expressions(body: dict[str, Any]) -> list[str]:
    return [e for issue in body.get("issue", []) for e in issue.get("expression", [])]


def etag_version(response: Any) -> int:
    etag = response.headers.get("etag")
    assert etag and etag.startswith('W/"') and etag.endswith('"'), f"bad ETag {etag!r}"
    return int(etag[3:-1])


def all_pages(
    client: TestClient, url: str, *, limit: int = 200, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every entry of a Bundle and of the Bundles its ``next`` links lead to."""
    entries: list[dict[str, Any]] = []
    seen_urls: set[str] = set()
    next_url: str | None = url
    while next_url is not None:
        assert next_url not in seen_urls, f"paging loops back to {next_url}"
        assert len(seen_urls) < limit, "too many pages"
        seen_urls.add(next_url)
        response = client.get(next_url, headers=headers)
        assert response.status_code == 200, f"{next_url}: {response.status_code} {response.text}"
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle", bundle
        entries.extend(bundle.get("entry", []))
        next_url = next(
            (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None
        )
    return entries


def history_total(client: TestClient) -> int:
    """How many versions the whole system history lists (all pages)."""
    return len(all_pages(client, "/fhir/_history?_count=1000"))


class LogLines(logging.Handler):
    """The messages a logger emits while attached (``logged``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def logged(name: str) -> Iterator[LogLines]:
    """Collect what the logger ``name`` emits inside the block."""
    lines = LogLines()
    logger = logging.getLogger(name)
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


def example_directory_bundle(excluding: frozenset[str]) -> dict[str, Any]:
    """A transaction PUTting every ``examples/resources`` resource whose type is not in
    ``excluding`` (the shared directory and records a workflow example path builds on)."""
    root = Path(__file__).resolve().parents[1] / "examples" / "resources"
    entries = []
    for path in sorted(root.glob("*.json")):
        resource = json.loads(path.read_text())
        if resource["resourceType"] not in excluding:
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
