"""Authentication's cost: read and search throughput with ``--auth smart`` against auth off,
interleaved (ABAB… in one window, both servers on one SQLite store), and the token
verification and per-request client check, in process.

    .venv/bin/python bench/auth/run.py [--rounds 3] [--duration 5s] [--count 1000]

Prints Markdown for bench/RESULTS.md. Everything listens on 127.0.0.1; data in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.auth.partners import Partner, token_form  # noqa: E402
from tests.cli.conftest import free_port  # noqa: E402

CLI = str(ROOT / ".venv" / "bin" / "calaim-fhir")


def serve(database_url: str, port: int, auth: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--database-url", database_url, "--auth", auth],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on {port} did not start: {log.read_text()}")


def wrk(url: str, mode: str, ids: Path, duration: str, token: str = "") -> dict[str, Any]:
    env = {**os.environ, "BENCH_DIR": str(ROOT / "bench"), "BENCH_IDS": str(ids),
           "BENCH_MODE": mode, "BENCH_TOKEN": token}
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{duration}", "--latency", "-s",
         str(ROOT / "bench" / "read.lua"), url],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    data: dict[str, Any] = json.loads(line[len("BENCH_JSON "):])
    return data


def micro(tmp: Path) -> dict[str, float]:
    """Token verification (first sight, cached) and the client status check, µs."""
    from server.auth.clients import Client, new_client
    from server.auth.keys import SigningKeys
    from server.auth.scopes import ScopeSet
    from server.auth.tokens import Verifier, issue
    from server.search.service import build_search_service
    from server.settings import Settings
    from server.store.sql.opening import open_store

    settings = Settings(database_url=f"sqlite:///{tmp / 'micro.db'}")
    repo = open_store(settings, build_search_service(settings))
    keys = SigningKeys(repo.auth)
    keys.ensure()
    row = new_client(name="bench", organization=None, role="admin", scope="system/*.rs",
                     jwks={"keys": [Partner("RS384").jwk]})
    repo.auth.add_client(row)
    client = Client.of(row)
    base = "http://127.0.0.1/fhir"
    verifier = Verifier(keys, base)
    now = time.time()
    tokens = [issue(keys, client, ScopeSet.of("system/*.rs"), base=base, now=now, lifetime=300)
              for _ in range(2000)]
    cold, warm, status = [], [], []
    for token in tokens:
        t = time.perf_counter_ns()
        verifier.verify(token, now)
        cold.append((time.perf_counter_ns() - t) / 1000)
    for token in tokens:
        t = time.perf_counter_ns()
        verifier.verify(token, now)
        warm.append((time.perf_counter_ns() - t) / 1000)
    for _ in range(2000):
        t = time.perf_counter_ns()
        repo.auth.active(row.client_id)
        status.append((time.perf_counter_ns() - t) / 1000)
    repo.close()

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1]

    return {"cold_p50": q(cold, 50), "cold_p99": q(cold, 99), "warm_p50": q(warm, 50),
            "warm_p99": q(warm, 99), "status_p50": q(status, 50), "status_p99": q(status, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        database_url = f"sqlite:///{tmp / 'bench.db'}"
        off_port, on_port = free_port(), free_port()
        off = serve(database_url, off_port, "off", tmp / "off.log")
        try:
            ids = tmp / "ids.txt"
            subprocess.run([sys.executable, str(ROOT / "bench" / "seed.py"), "--url",
                            f"http://127.0.0.1:{off_port}/fhir", "--count", str(args.count),
                            "--ids", str(ids)], check=True)
            partner = Partner("RS384")
            partner.register(database_url, tmp, scope="system/*.rs", role="admin")
            on = serve(database_url, on_port, "smart", tmp / "on.log")
            try:
                token_url = f"http://127.0.0.1:{on_port}/fhir/auth/token"

                def token() -> str:
                    answer = httpx.post(token_url, data=token_form(
                        partner.assertion(token_url, jti=uuid.uuid4().hex), "system/*.rs"))
                    answer.raise_for_status()
                    return str(answer.json()["access_token"])

                results: dict[tuple[str, str], list[dict[str, Any]]] = {}
                started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
                load = [os.getloadavg()[0]]
                for round in range(args.rounds):
                    for mode in ("read", "search"):
                        order = ("off", "on") if round % 2 == 0 else ("on", "off")
                        for which in order:
                            port = off_port if which == "off" else on_port
                            url = f"http://127.0.0.1:{port}"
                            tok = token() if which == "on" else ""
                            wrk(url, mode, ids, "1s", tok)  # warm-up
                            results.setdefault((mode, which), []).append(
                                wrk(url, mode, ids, args.duration, tok))
                    load.append(os.getloadavg()[0])
                ended = time.strftime("%H:%M", time.gmtime())
            finally:
                on.terminate()
                on.wait(timeout=15)
        finally:
            off.terminate()
            off.wait(timeout=15)
        figures = micro(tmp)
    print(f"Window {started}–{ended} UTC, load average (1 min) {min(load):.1f}–{max(load):.1f}; "
          f"{args.rounds} rounds, wrk -t1 -c16 -d{args.duration}, order alternating.\n")
    print("| scenario | auth off req/s | auth smart req/s | change | p50 off / smart (ms) "
          "| errors |")
    print("|---|---|---|---|---|---|")
    for mode in ("read", "search"):
        rate = {}
        p50 = {}
        errors = 0
        for which in ("off", "on"):
            runs = results[(mode, which)]
            rate[which] = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in runs)
            p50[which] = statistics.median(r["latency_us"]["p50"] for r in runs) / 1000
            errors += sum(sum(r.get("errors", {}).values()) for r in runs)
        change = (rate["on"] - rate["off"]) / rate["off"] * 100
        print(f"| {mode} | {rate['off']:.0f} | {rate['on']:.0f} | {change:+.1f} % | "
              f"{p50['off']:.2f} / {p50['on']:.2f} | {errors} |")
    print("\nIn process (2,000 tokens, RS256 2048-bit, SQLite):\n")
    print("| step | p50 µs | p99 µs |")
    print("|---|---|---|")
    print(f"| verify a token first seen (signature, claims) | {figures['cold_p50']:.1f} | "
          f"{figures['cold_p99']:.1f} |")
    print(f"| verify a token seen before (cached) | {figures['warm_p50']:.1f} | "
          f"{figures['warm_p99']:.1f} |")
    print(f"| client status check (primary key) | {figures['status_p50']:.1f} | "
          f"{figures['status_p99']:.1f} |")


if __name__ == "__main__":
    main()
