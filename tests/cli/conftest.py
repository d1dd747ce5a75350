"""Helpers for the command-line tests: the installed ``calaim-fhir`` command and a server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# the two member-onboarding bundles: a known data set (2 members, 1 shared plan, 14 entries)
ONBOARDING = [
    str(EXAMPLES / "bundles" / "ecm-member-onboarding.json"),
    str(EXAMPLES / "bundles" / "ecm-second-member.json"),
]


def command() -> list[str]:
    """The ``calaim-fhir`` entry point of the interpreter running the tests."""
    script = Path(sys.executable).with_name("calaim-fhir")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from server.cli import main; main()"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class Server:
    base: str  # the FHIR base URL, http://127.0.0.1:PORT/fhir
    database_url: str
    log: Path  # what the command printed
    port: int
    pid: int = 0  # the server process


@contextmanager
def running(
    args: list[str], log_path: Path, probe: str, *, env: dict[str, str] | None = None,
    cwd: Path | None = None, timeout: float = 30,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (``args``) until the block ends, once ``probe`` answers below 500;
    its output goes to ``log_path``. The environment: this one without ``CALAIM_FHIR_*``,
    plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
    log = log_path.open("wb")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env={**clean, **(env or {})},
        cwd=cwd or log_path.parent,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.flush()
                output = log_path.read_text(errors="replace")
                pytest.fail(f"the server exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(probe, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer {probe} within {timeout:.0f} s")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``calaim-fhir serve`` on a free port and a tmp SQLite file; stopped afterwards."""
    with serve(tmp_path) as running_server:
        yield running_server


@contextmanager
def serve(tmp_path: Path, **settings: str) -> Iterator[Server]:
    """``calaim-fhir serve`` on a free port and a tmp SQLite file, with ``settings`` as
    ``CALAIM_FHIR_*`` environment variables; stopped afterwards."""
    port = free_port()
    database_url = sqlite_url(tmp_path / "served.db")
    base = f"http://127.0.0.1:{port}/fhir"
    args = [*command(), "serve", "--port", str(port), "--database-url", database_url]
    env = {f"CALAIM_FHIR_{k.upper()}": v for k, v in settings.items()}
    with running(args, tmp_path / "server.log", f"{base}/metadata", env=env) as process:
        yield Server(base, database_url, tmp_path / "server.log", port, process.pid)
