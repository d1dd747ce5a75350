"""Peak memory of the worst-case responses: a store of very large resources, read whole.

    .venv/bin/python bench/memory.py [--commit SHA] [--database-url URL] [--resources 20]
                                     [--megabytes 9] [--bound BYTES]

Starts ``calaim-fhir serve`` (one worker process) on a fresh SQLite store in a temp dir (or
an empty PostgreSQL database given by ``--database-url``), from this checkout or, with
``--commit``, from that commit's tree (``git archive``), and loads ``--resources`` Patients
with a ``text.div`` of ``--megabytes`` MB each, and as many Observations of the same size in
the first Patient's compartment. Then each scenario runs on a new server process: a few small
requests warm it up, its resident set is read (idle), its peak resident set is reset
(``/proc/PID/clear_refs``, Linux) and read back after the scenario's requests (``VmHWM``):
the figure is that peak less idle.

Scenarios (``_count=1000`` everywhere): one search ``GET Patient``; four such searches at
once; four histories ``GET Patient/_history``; four ``GET Patient/p0/$everything``; four
transactions of ``--resources`` reads ``GET Patient/pN``; four batches of the same reads;
and the four kinds (search, history, ``$everything``, transaction) at once.

Prints one JSON object: per scenario the peak above idle (MB), the response bytes and the
statuses.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>{}</p></div>'


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _text(size: int) -> dict[str, str]:
    return {"status": "generated", "div": DIV.format("x" * size)}


def _load(client: httpx.Client, count: int, size: int) -> None:
    for n in range(count):
        patient = {"resourceType": "Patient", "id": f"p{n}", "text": _text(size)}
        response = client.put(f"/Patient/p{n}", content=orjson.dumps(patient))
        assert response.status_code in (200, 201), response.text[:300]
        observation = {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"text": "note"},
            "subject": {"reference": "Patient/p0"},
            "text": _text(size),
        }
        response = client.put(f"/Observation/o{n}", content=orjson.dumps(observation))
        assert response.status_code in (200, 201), response.text[:300]


def _reads(kind: str, count: int) -> bytes:
    entries = [{"request": {"method": "GET", "url": f"Patient/p{n}"}} for n in range(count)]
    return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries})


def _request(base: str, what: str, count: int) -> tuple[int, int]:
    headers = {"Content-Type": "application/fhir+json"}
    with httpx.Client(base_url=base, timeout=600, headers=headers) as client:
        if what == "search":
            response = client.get("/Patient?_count=1000")
        elif what == "history":
            response = client.get("/Patient/_history?_count=1000")
        elif what == "everything":
            response = client.get("/Patient/p0/$everything?_count=1000")
        else:  # transaction, batch
            response = client.post("", content=_reads(what, count))
    return response.status_code, len(response.content)


def _scenario(pid: int, base: str, kinds: list[str], count: int) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=60) as client:  # warm: every path once, small
        client.get("/Patient?_count=1&_elements=id")
        client.get("/Patient/p0/_history?_count=1&_elements=id")
        client.get("/Patient/p0/$everything?_count=1")
    time.sleep(0.5)
    idle = _status(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts from now
    results: list[tuple[int, int]] = [(0, 0)] * len(kinds)

    def run(i: int, kind: str) -> None:
        results[i] = _request(base, kind, count)

    threads = [threading.Thread(target=run, args=(i, k)) for i, k in enumerate(kinds)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    peak = _status(pid, "VmHWM")
    return {
        "requests": kinds,
        "idle_mb": round(idle / 2**20, 1),
        "peak_above_idle_mb": round((peak - idle) / 2**20, 1),
        "statuses": [s for s, _ in results],
        "response_mb": [round(n / 2**20, 1) for _, n in results],
        "seconds": round(elapsed, 2),
    }


class _Server:
    """``calaim-fhir serve`` from ``source`` on ``url``, one worker process."""

    def __init__(self, source: Path, url: str, env: dict[str, str]) -> None:
        self.port = _port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from server.cli import main; main()", "serve"]
            + ["--port", str(self.port), "--database-url", url],
            cwd=source,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with httpx.Client(base_url=self.base, timeout=60) as client:
            for _ in range(600):
                try:
                    if client.get("/metadata?_elements=id").status_code == 200:
                        return
                except httpx.TransportError:
                    time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


SCENARIOS = {
    "search": ["search"],
    "search x4": ["search"] * 4,
    "history x4": ["history"] * 4,
    "$everything x4": ["everything"] * 4,
    "transaction x4": ["transaction"] * 4,
    "batch x4": ["batch"] * 4,
    "search, history, $everything, transaction": ["search", "history", "everything", "transaction"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", help="measure this commit's tree instead of the checkout")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--resources", type=int, default=20)
    parser.add_argument("--megabytes", type=float, default=9)
    parser.add_argument("--bound", type=int, help="CALAIM_FHIR_MAX_RESPONSE_BYTES")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = ROOT
        if args.commit:
            source = Path(tmp) / "source"
            source.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.commit], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": str(source)}
        if args.bound:
            env["CALAIM_FHIR_MAX_RESPONSE_BYTES"] = str(args.bound)
        url = args.database_url or f"sqlite:///{tmp}/memory.db"
        server = _Server(source, url, env)
        try:
            started = _status(server.process.pid, "VmRSS")
            headers = {"Content-Type": "application/fhir+json"}
            with httpx.Client(base_url=server.base, timeout=600, headers=headers) as client:
                load_start = time.perf_counter()
                _load(client, args.resources, int(args.megabytes * 1_000_000))
                loaded = time.perf_counter() - load_start
        finally:
            server.stop()
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        out: dict[str, Any] = {
            "commit": args.commit or head,
            "store": "postgresql" if args.database_url else "sqlite",
            "resources": f"{args.resources} Patients + {args.resources} Observations of "
            f"{args.megabytes} MB",
            "rss_after_start_mb": round(started / 2**20, 1),
            "load_seconds": round(loaded, 1),
            "scenarios": {},
        }
        for name, kinds in SCENARIOS.items():  # each in a new server process
            server = _Server(source, url, env)
            try:
                out["scenarios"][name] = _scenario(
                    server.process.pid, server.base, kinds, args.resources
                )
            finally:
                server.stop()
        out["load_average"] = os.getloadavg()
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
