"""Served throughput of reads and creates (wrk, 16 connections, one thread), variants measured
in alternation (the order reversed every other round) in one window, each run on a fresh copy
of one prepared store (``prepare.py``).

A variant is ``label=checkout:server:workers``: the code of ``checkout`` served by ``uvicorn``
(the CLI's options: uvloop, the limited httptools protocol of ``server/serving.py``, no access
log) or ``granian`` (its ASGI interface, uvloop), with that many worker processes. Scenarios:

- ``read-on``: GET one of p1's Observations with the ECM provider's token; ``auth=smart``,
  ``access_relationships`` on (care relationships, consent), read audit ``batch``;
- ``read-off``: the same reads with ``auth=off`` and read audit off;
- ``create``: POST ``bench/data/servicerequest.json`` (~1.5 KB) with ``auth=off``.

Each scenario runs after a warm-up of the same. The request log goes to a file. Besides wrk's
rate, the CPU time of the server's processes (``/proc``, the workers included) per request
served: the steadier figure on a shared machine. Prints a JSON line per run and a Markdown
table: medians (min–max) per variant and scenario, each against the first variant, and the
1-minute load average before the runs.

    .venv/bin/python bench/edge/served.py --variant base=/tmp/base:uvicorn:1 \\
        --variant edge=.:uvicorn:1 [--rounds 3] [--duration 8] [--warmup 2] \\
        [--scenarios read-on,read-off,create] [--out runs.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parents[1]
PY = sys.executable
BASE_URL = "http://127.0.0.1:8080"  # the tokens' audience; the port served does not matter
sys.path.insert(0, str(BENCH))

from report import parse_wrk  # noqa: E402
from writes.ab import free_port  # noqa: E402

MODES = {
    "on": {
        "CALAIM_FHIR_AUTH": "smart",
        "CALAIM_FHIR_ACCESS_RELATIONSHIPS": "true",
        "CALAIM_FHIR_AUDIT_READS": "batch",
    },
    "off": {"CALAIM_FHIR_AUTH": "off", "CALAIM_FHIR_AUDIT_READS": "off"},
}
SCENARIO_MODE = {"read-on": "on", "read-off": "off", "create": "off"}


def serve(checkout: Path, server: str, workers: int, mode: str, db: Path, log: Path) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
    env.update(
        PYTHONPATH=str(checkout),
        CALAIM_FHIR_DATABASE_URL=f"sqlite:///{db}",
        CALAIM_FHIR_BASE_URL=BASE_URL,
        **MODES[mode],
    )
    common = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if server == "uvicorn":
        command = [
            PY, "-m", "uvicorn", "--factory", "server.app:create_app", *common,
            "--loop", "uvloop", "--http", "server.serving:LimitedHttpTools",
            "--no-access-log", "--log-level", "warning", "--no-server-header",
        ]  # fmt: skip
    elif server == "granian":
        command = [
            str(Path(PY).parent / "granian"), "--interface", "asgi", "--factory", *common,
            "--loop", "uvloop", "--log-level", "warning", "server.app:create_app",
        ]  # fmt: skip
    else:
        raise SystemExit(f"unknown server {server!r}")
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(command, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/fhir/metadata", timeout=2).status_code == 200:
                return proc, out, base
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server not ready: {log.read_text()[-2000:]}")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its descendants (the workers)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def stop(proc: Any, out: Any) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out.close()


def wrk(base: str, script: str, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    command = ["wrk", "-t1", "-c16", f"-d{seconds:g}s", "--latency", "-s", script, base]
    out = subprocess.run(
        command, env={**os.environ, "BENCH_DIR": str(BENCH), **env},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return parse_wrk(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--scenarios", default="read-on,read-off,create")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-edge-served-"))
    variants = []
    prepared: dict[Path, Path] = {}
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        checkout, server, workers = rest.rsplit(":", 2)
        path = Path(checkout).resolve()
        if path not in prepared:  # one store per checkout, made by its own code
            folder = work / f"prepared-{len(prepared)}"
            folder.mkdir()
            subprocess.run(
                [PY, str(BENCH / "edge" / "prepare.py"), "--out", str(folder),
                 "--base-url", BASE_URL],
                env={**os.environ, "PYTHONPATH": str(path)}, check=True, capture_output=True,
            )  # fmt: skip
            prepared[path] = folder
        variants.append((label, path, server, int(workers)))
    body = str(BENCH / "data" / "servicerequest.json")
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else list(reversed(variants))
            for label, checkout, server, workers in order:
                folder = prepared[checkout]
                env_of = {
                    "read-on": {
                        "BENCH_PATHS": str(folder / "paths.txt"),
                        "BENCH_TOKEN": (folder / "token.txt").read_text(),
                    },
                    "read-off": {"BENCH_PATHS": str(folder / "paths.txt")},
                    "create": {"BENCH_BODY": body},
                }
                for mode in ("on", "off"):
                    wanted = [s for s in scenarios if SCENARIO_MODE[s] == mode]
                    if not wanted:
                        continue
                    run_dir = work / f"run-{r}-{label}-{mode}"
                    run_dir.mkdir()
                    db = run_dir / "store.db"
                    shutil.copy(folder / "store.db", db)
                    proc, out, base = serve(checkout, server, workers, mode, db, run_dir / "log")
                    try:
                        for scenario in wanted:
                            script = str(
                                BENCH / ("create.lua" if scenario == "create" else "access/get.lua")
                            )
                            wrk(base, script, args.warmup, env_of[scenario])
                            load = os.getloadavg()[0]
                            cpu = tree_cpu(proc.pid)
                            result = wrk(base, script, args.duration, env_of[scenario])
                            cpu = tree_cpu(proc.pid) - cpu
                            served = result["rps"] * args.duration
                            run = {
                                "round": r, "variant": label, "server": server,
                                "workers": workers, "scenario": scenario,
                                "rps": result["rps"], "p50_ms": result["latency_ms"]["p50"],
                                "non_2xx": result["non_2xx"], "load": load,
                                "cpu_us": round(cpu / served * 1e6, 1) if served else None,
                            }  # fmt: skip
                            runs.append(run)
                            print(json.dumps(run), flush=True)
                            if args.out:
                                with args.out.open("a") as f:
                                    f.write(json.dumps(run) + "\n")
                    finally:
                        stop(proc, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = variants[0][0]
    print()
    print(
        f"| scenario | variant | req/s median (min–max) | ÷ {first} "
        f"| server CPU µs/request median (min–max) | {first} ÷ | load |"
    )
    print("|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        ref = statistics.median(
            x["rps"] for x in runs if x["scenario"] == scenario and x["variant"] == first
        )
        ref_cpu = statistics.median(
            x["cpu_us"] for x in runs if x["scenario"] == scenario and x["variant"] == first
        )
        for label, *_ in variants:
            mine = [x for x in runs if x["scenario"] == scenario and x["variant"] == label]
            rps = [x["rps"] for x in mine]
            cpus = [x["cpu_us"] for x in mine]
            loads = [x["load"] for x in mine]
            med, med_cpu = statistics.median(rps), statistics.median(cpus)
            print(
                f"| {scenario} | {label} | {med:,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) "
                f"| {med / ref:.2f} | {med_cpu:,.0f} ({min(cpus):,.0f}–{max(cpus):,.0f}) "
                f"| {ref_cpu / med_cpu:.2f} | {min(loads):.1f}–{max(loads):.1f} |"
            )


if __name__ == "__main__":
    main()
