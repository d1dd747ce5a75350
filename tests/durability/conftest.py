"""Real server subprocesses for the durability and concurrency tests.

Every server is started with ``start_new_session=True`` (its own process group, which holds
the uvicorn supervisor and any workers) and is SIGKILLed as a group by the fixture finalizer,
whatever the test did. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("calaim-fhir")
FHIR_JSON = "application/fhir+json"
STARTUP_TIMEOUT = 30.0
STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``calaim-fhir serve`` process group on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        *,
        faults: str = "",
        workers: int = 1,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.faults = faults
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.log_path = log_dir / f"server-{self.port}-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
        if faults:
            env["CALAIM_FHIR_FAULTS"] = faults
        for key, value in (settings or {}).items():  # further settings: CALAIM_FHIR_<KEY>
            env[f"CALAIM_FHIR_{key.upper()}"] = value
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--database-url", database_url, "--workers", str(workers)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise AssertionError(
                        f"server exited with {self.proc.returncode} during start-up "
                        f"(faults={self.faults!r}):\n{self.log()}"
                    )
                try:
                    if client.get(f"{self.base}/metadata").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit status once the process is gone (a fault ``kill`` ends it on its own)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"server still running after {timeout}s:\n{self.log()}") from exc

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the leader. Safe to call twice."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        if not self._log.closed:
            self._log.close()

    def client(self, timeout: float = 15.0) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout,
                            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(url, faults="", workers=1, ready=True, settings=None)``: a running
    server; every server this fixture started is SIGKILLed (process group) at teardown, even
    on failure. ``settings``: further settings (``{"subscription_poll_seconds": "0.1"}``)."""
    servers: list[Server] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)

    def start(
        url: str,
        *,
        faults: str = "",
        workers: int = 1,
        ready: bool = True,
        settings: dict[str, str] | None = None,
    ) -> Server:
        server = Server(url, log_dir, faults=faults, workers=workers, settings=settings)
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """The store under test: ``sqlite`` or ``postgresql``."""
    return str(request.param)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, store: str, tmp_path: Path) -> str:
    """A fresh, empty database of the store under test."""
    if store == "sqlite":
        return f"sqlite:///{tmp_path / 'fhir.db'}"
    return str(request.getfixturevalue("fresh_pg_database"))


# -- direct database checks (independent of the server) ---------------------------------------


def sql_rows(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):], timeout=10)
        try:
            return [tuple(r) for r in conn.execute(statement, params).fetchall()]
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as pg:
        return [tuple(r) for r in pg.execute(statement.replace("?", "%s"), params).fetchall()]


def store_consistency(url: str) -> dict[str, int]:
    """Counts that must agree in a consistent store; asserts the invariants between them."""
    resources = sql_rows(url, "SELECT count(*) FROM resource")[0][0]
    history = sql_rows(url, "SELECT count(*) FROM resource_history")[0][0]
    versions = sql_rows(url, "SELECT coalesce(sum(version), 0) FROM resource")[0][0]
    # every current row has exactly versions 1..version in history, and its current version
    # row is the history row it points at
    gaps = sql_rows(
        url,
        "SELECT r.rtype, r.id, r.version, count(h.seq), max(h.version) FROM resource r"
        " LEFT JOIN resource_history h ON h.rtype = r.rtype AND h.id = r.id"
        " GROUP BY r.rtype, r.id, r.version"
        " HAVING count(h.seq) <> r.version OR max(h.version) <> r.version",
    )
    assert gaps == [], f"history does not match current rows: {gaps[:10]}"
    orphans = sql_rows(
        url,
        "SELECT h.rtype, h.id FROM resource_history h LEFT JOIN resource r"
        " ON r.rtype = h.rtype AND r.id = h.id WHERE r.id IS NULL",
    )
    assert orphans == [], f"history rows without a current row: {orphans[:10]}"
    mismatched = sql_rows(
        url,
        "SELECT r.rtype, r.id FROM resource r JOIN resource_history h"
        " ON h.seq = r.seq WHERE h.rtype <> r.rtype OR h.id <> r.id OR h.version <> r.version",
    )
    assert mismatched == [], f"current rows pointing at the wrong history row: {mismatched[:10]}"
    assert history == versions
    outbox_matches_history(url)
    return {"resources": int(resources), "history": int(history)}


def outbox_matches_history(url: str) -> None:
    """Exactly one outbox event per committed version, in the order the versions were
    committed (the history's order), with the version each one replaced."""
    versions = sql_rows(url, "SELECT rtype, id, version FROM resource_history ORDER BY seq")
    events = sql_rows(url, "SELECT rtype, id, version, previous FROM outbox ORDER BY seq")
    assert [e[:3] for e in events] == versions, (
        f"outbox differs from history: {len(events)} events, {len(versions)} versions"
    )
    wrong = [e for e in events if e[3] != (None if e[2] == 1 else e[2] - 1)]
    assert wrong == [], f"events with the wrong previous version: {wrong[:10]}"


def sqlite_integrity(url: str) -> None:
    """``PRAGMA integrity_check`` on the file (call it only while no server is running)."""
    assert url.startswith("sqlite:///")
    conn = sqlite3.connect(url[len("sqlite:///"):], timeout=10)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    assert result == [("ok",)], f"integrity_check: {result}"


# -- FHIR helpers ----------------------------------------------------------------------------


def patient(value: str, counter: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": value}],
        "extension": [{"url": "urn:test:counter", "valueInteger": counter}],
    }
    body.update(extra)
    return body


def counter_of(resource: dict[str, Any]) -> int:
    for ext in resource.get("extension", []):
        if ext.get("url") == "urn:test:counter":
            return int(ext["valueInteger"])
    raise AssertionError(f"no counter in {resource}")


def digest(resource: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def etag_version(response: httpx.Response) -> int:
    etag = response.headers.get("etag", "")
    assert etag.startswith('W/"') and etag.endswith('"'), f"bad ETag {etag!r}"
    return int(etag[3:-1])


def search_ids(client: httpx.Client, query: str) -> list[str]:
    response = client.get(f"/Patient?{query}&_count=100")
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]
