"""Before/after figures of the write path: two checkouts measured in alternation (ABBAAB...,
so neither always runs first) in one window, each run on a fresh store.

Per run: a server (``serve_instrumented.py``, one process) on a fresh SQLite file (or a fresh
database of a PostgreSQL cluster), 1,000 ServiceRequests seeded, then create, update and read
(wrk, 16 connections, after a warm-up) and sequential 100-entry transactions. Besides the
client's figures it records the writers' lock hold per write and the server's event-loop lag
during each scenario. Prints a JSON line per run and a Markdown summary (median and range over
the rounds).

    .venv/bin/python bench/writes/ab.py --a /path/to/before --b . --rounds 3 \
        [--database postgresql://...] [--duration 8] [--transactions 100] [--out runs.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
PY = sys.executable
CONNECTIONS = 16
sys.path.insert(0, str(BENCH))

from report import parse_wrk  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, checkout: Path, database_url: str, work: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stats = work / "stats.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
        env["PYTHONPATH"] = str(checkout)
        self.log = open(work / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PY,
                str(BENCH / "writes" / "serve_instrumented.py"),
                "--database-url",
                database_url,
                "--port",
                str(self.port),
                "--stats",
                str(self.stats),
            ],
            cwd=checkout,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/fhir/metadata", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server not ready: {(work / 'server.log').read_text()[-2000:]}")

    def figures(self) -> dict[str, Any]:
        """The server's figures since the previous call."""
        before = self.stats.read_text().count("\n") if self.stats.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = self.stats.read_text().splitlines() if self.stats.exists() else []
            if len(lines) > before:
                return dict(json.loads(lines[-1]))
            time.sleep(0.05)
        raise RuntimeError("no figures from the server")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wrk(base: str, script: str, seconds: float, **env: str) -> dict[str, Any]:
    command = [
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(BENCH / script),
        base,
    ]
    out = subprocess.run(
        command,
        env={**os.environ, "BENCH_DIR": str(BENCH), **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def one_run(
    checkout: Path, database_url: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    server = Server(checkout, database_url, work)
    try:
        ids = work / "ids.txt"
        subprocess.run(
            [
                PY,
                str(BENCH / "seed.py"),
                "--url",
                f"{server.base}/fhir",
                "--count",
                "1000",
                "--ids",
                str(ids),
            ],
            check=True,
            capture_output=True,
        )
        lines = ids.read_text().splitlines()
        (work / "update-warm.txt").write_text("\n".join(lines[:CONNECTIONS]) + "\n")
        (work / "update.txt").write_text("\n".join(lines[CONNECTIONS : 2 * CONNECTIONS]) + "\n")
        body = str(BENCH / "data" / "servicerequest.json")
        out: dict[str, Any] = {}
        scenarios = [
            ("create", "create.lua", {"BENCH_BODY": body}, {"BENCH_BODY": body}),
            (
                "update",
                "update.lua",
                {"BENCH_BODY": body, "BENCH_IDS": str(work / "update-warm.txt")},
                {"BENCH_BODY": body, "BENCH_IDS": str(work / "update.txt")},
            ),
            ("read", "read.lua", {"BENCH_IDS": str(ids)}, {"BENCH_IDS": str(ids)}),
        ]
        for name, script, warm_env, env in scenarios:
            wrk(server.base, script, args.warmup, **warm_env)
            server.figures()
            load = os.getloadavg()[0]
            result = wrk(server.base, script, args.duration, **env)
            out[name] = {
                "rps": result["rps"],
                "p50_ms": result["latency_ms"]["p50"],
                "non_2xx": result["non_2xx"],
                "load": load,
                **server.figures(),
            }
        load = os.getloadavg()[0]
        tx = subprocess.run(
            [
                PY,
                str(BENCH / "transaction_timing.py"),
                "--url",
                f"{server.base}/fhir",
                "--requests",
                str(args.transactions),
                "--warmup",
                "10",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        timing = json.loads(tx)
        out["transaction"] = {
            "p50_ms": timing["latency_ms"]["p50"],
            "load": load,
            **server.figures(),
        }
        return out
    finally:
        server.stop()


def _database(cluster: str | None, work: Path) -> tuple[str, Any]:
    if cluster is None:
        return f"sqlite:///{work / 'bench.db'}", lambda: None
    name = f"calaim_ab_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = cluster.rsplit("/", 1)[0] + "/" + name

    def drop() -> None:
        with psycopg.connect(cluster, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    return url, drop


METRICS = [
    ("create", "rps", "create /s"),
    ("create", "p50_ms", "create p50 ms"),
    ("update", "rps", "update /s"),
    ("update", "p50_ms", "update p50 ms"),
    ("transaction", "p50_ms", "100-entry transaction p50 ms"),
    ("read", "rps", "read /s"),
    ("read", "p50_ms", "read p50 ms"),
    ("create", "work_us_per_write", "work under the lock per write, create (µs)"),
    ("update", "work_us_per_write", "work under the lock per write, update (µs)"),
    ("transaction", "work_us_per_write", "work under the lock per transaction (µs)"),
    ("create", "held_us_per_write", "lock held per write, create (µs)"),
    ("update", "held_us_per_write", "lock held per write, update (µs)"),
    ("transaction", "held_us_per_write", "lock held per transaction (µs)"),
    ("create", "lag_ms_p99", "event-loop lag p99 under create (ms)"),
    ("create", "lag_ms_max", "event-loop lag max under create (ms)"),
    ("transaction", "lag_ms_p99", "event-loop lag p99 under transactions (ms)"),
]


def summary(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| figure | before: median (range) | after: median (range) | after ÷ before |",
        "|---|---|---|---:|",
    ]
    for scenario, key, label in METRICS:
        cells = []
        medians = []
        for side in ("A", "B"):
            values = [r[scenario][key] for r in runs if r["side"] == side]
            median = statistics.median(values)
            medians.append(median)
            cells.append(f"{median:,.1f} ({min(values):,.1f}–{max(values):,.1f})")
        ratio = medians[1] / medians[0] if medians[0] else float("nan")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout measured as before")
    parser.add_argument("--b", type=Path, required=True, help="the checkout measured as after")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", help="a PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--transactions", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for round in range(args.rounds):
        pair = (("A", args.a), ("B", args.b))
        # alternate which goes first (ABBAAB...): what runs second in a round is not favoured
        for side, checkout in pair if round % 2 == 0 else pair[::-1]:
            with tempfile.TemporaryDirectory(prefix="calaim-ab-") as tmp:
                work = Path(tmp)
                url, drop = _database(args.database, work)
                try:
                    run = {
                        "side": side,
                        "round": round,
                        **one_run(checkout.resolve(), url, work, args),
                    }
                finally:
                    drop()
            runs.append(run)
            line = json.dumps(run)
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as fh:
                    fh.write(line + "\n")
    print(summary(runs))


if __name__ == "__main__":
    main()
