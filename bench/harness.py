"""What the benchmark drivers share: the server under test, ports, percentiles, command lines."""

from __future__ import annotations

import asyncio
import http.client
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "calaim-fhir"
ACCEPT = {"Accept": "application/fhir+json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when it is empty)."""
    if not ordered:
        return None
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def stats(times: list[float]) -> dict[str, Any]:
    """n, percentiles, min, max and mean (ms) of a list of timings."""
    ordered = sorted(times)
    return {
        "n": len(times),
        "p50_ms": round(percentile(ordered, 50) or 0, 2),
        "p95_ms": round(percentile(ordered, 95) or 0, 2),
        "p99_ms": round(percentile(ordered, 99) or 0, 2),
        "min_ms": round(ordered[0], 2),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def shown(cmd: list[str]) -> str:
    """A command line as a user would type it from the repository root."""
    return " ".join(shlex.quote(c) for c in cmd).replace(str(ROOT) + "/", "")


class Server:
    """``calaim-fhir serve`` on a free port; its log (stderr) goes to a file."""

    def __init__(self, database_url: str, workers: int, logdir: Path) -> None:
        self.database_url = database_url
        self.workers = workers
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.command = ""

    def start(self) -> float:
        """Start the server; the seconds until it answered ``/fhir/metadata``."""
        self.port = free_port()
        cmd = [
            str(CLI),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            "--workers",
            str(self.workers),
        ]
        self.command = shown(cmd)
        self.starts += 1
        logfile = (self.logdir / f"server-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, cwd=ROOT)
        started = time.monotonic()
        deadline = started + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited; log: {logfile.name}")
            try:  # any HTTP answer: the application is up (uvicorn answers after start-up)
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/fhir/metadata", headers=ACCEPT)
                status = conn.getresponse().status
                conn.close()
                if status != 200:
                    print(
                        f"bench: GET /fhir/metadata answered {status} (see {logfile.name})",
                        file=sys.stderr,
                    )
                return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready after 120 s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, 20)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def asgi_call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, bytes]:
    """One request through an ASGI application in this event loop, no server and no client:
    (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # no disconnect while the answer is written
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)
