"""Collect one bench/run's raw outputs into bench/out/results-<time>.json (and latest.json)
and regenerate bench/RESULTS.md.

    .venv/bin/python bench/report.py --raw RAWDIR [--pg-version V]   # what bench/run does
    .venv/bin/python bench/report.py --from bench/out/latest.json      # only RESULTS.md

RAWDIR holds, per scenario NAME: NAME.cmd (the exact command), and NAME.txt (wrk output,
ending with the BENCH_JSON line of bench/common.lua) or NAME.json (transaction_timing.py).
Also servers.txt (how each server was started), fsync.json, and machine facts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

KEPT_FROM = "## Search (issue"
HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

TARGETS = {"create": 1500.0, "read": 4000.0, "update": 1200.0, "transaction_p50_ms": 30.0,
           "floor_ratio": 0.55, "pg_ratio": 0.7}
KINDS = ("create", "read", "update", "transaction")


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - facts are best effort
        return ""


def machine(raw: Path, pg_version: str | None) -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    disk = sh(f"df -hT {raw} | tail -n 1")
    dev = disk.split()[0] if disk else ""
    rotational = ""
    name = os.path.basename(dev)
    rota = Path(f"/sys/block/{name}/queue/rotational")
    if rota.exists():
        rotational = "rotational" if rota.read_text().strip() == "1" else "non-rotational"
    return {
        "nproc": os.cpu_count(),
        "nproc_cmd": sh("nproc"),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "disk": disk + (f" ({rotational} per /sys/block; virtual disk)" if rotational else ""),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version,
        "wrk": sh("wrk -v 2>&1 | head -n 1").split(" [")[0],
        "packages": sh(f"{sys.executable} -m pip list 2>/dev/null | grep -iE "
                       "'^(fastapi|starlette|uvicorn|uvloop|httptools|psycopg|orjson) '"
                       ).split("\n"),
    }


def parse_wrk(text: str) -> dict[str, Any]:
    line = next((x for x in text.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise ValueError("no BENCH_JSON line in wrk output")
    data = json.loads(line[len("BENCH_JSON "):])
    seconds = data["duration_us"] / 1e6
    errors = {k: int(v) for k, v in data["errors"].items()}
    counters = {k: int(v) for k, v in data.get("counters", {}).items()}
    requests = int(data["requests"])
    non_2xx = errors["status"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    if "updated" in counters:
        ok = counters["updated"]
    else:
        ok = requests - non_2xx
    lat = data["latency_us"]
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    return {
        "requests": requests, "ok": ok, "seconds": round(seconds, 3),
        "rps": round(ok / seconds, 1), "wrk_requests_per_sec": float(m.group(1)) if m else None,
        "non_2xx": non_2xx, "socket_errors": socket_errors, "errors": errors,
        "counters": counters,
        "latency_ms": {k: round(lat[k] / 1000, 2) for k in ("p50", "p90", "p95", "p99", "mean",
                                                             "max")},
    }


def collect(raw: Path, pg_version: str | None) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for cmd in sorted(raw.glob("*.cmd")):
        name = cmd.stem
        entry: dict[str, Any] = {"command": cmd.read_text().strip()}
        if (raw / f"{name}.load").exists():
            entry["loadavg_before"] = (raw / f"{name}.load").read_text().strip()
        if (raw / f"{name}.txt").exists():
            entry.update(parse_wrk((raw / f"{name}.txt").read_text()))
        elif (raw / f"{name}.json").exists():
            t = json.loads((raw / f"{name}.json").read_text())
            entry.update({"requests": t["requests"], "non_2xx": t["non_2xx"],
                          "rps": round(t["rps"], 1), "latency_ms": {
                              k: round(v, 2) for k, v in t["latency_ms"].items()},
                          "bundle_bytes": t["bundle_bytes"], "entries": t["entries"],
                          "warmup": t["warmup"]})
        else:
            entry["missing"] = True
        scenarios[name] = entry
    fsync = raw / "fsync.json"
    servers = raw / "servers.txt"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(raw, pg_version),
        "git": {"head": sh("git rev-parse --short HEAD"),
                "dirty_files": len(sh("git status --porcelain --untracked-files=no").splitlines())},
        "settings": {"wrk": os.environ.get("BENCH_WRK_FLAGS", "-t1 -c16 -d10s --latency")},
        "servers": servers.read_text().strip().splitlines() if servers.exists() else [],
        "fsync": json.loads(fsync.read_text()) if fsync.exists() else None,
        "scenarios": scenarios,
        "targets": TARGETS,
    }


def _ok(flag: bool | None) -> str:
    return "—" if flag is None else ("✅" if flag else "❌")


def render(r: dict[str, Any]) -> str:
    s = r["scenarios"]
    m = r["machine"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmark results")
    add("")
    git = r.get("git") or {}
    rev = (f" at commit `{git['head']}`" + (f" ({git['dirty_files']} modified tracked files)"
                                            if git.get("dirty_files") else "")) if git else ""
    add(f"Generated by `bench/run` on {r['date']} (UTC){rev}; raw data: `bench/out/` "
        "(not committed). "
        "See `bench/README.md` for how to run and what each scenario does.")
    add("")
    add("Load: `wrk -t1 -c16 -d10s --latency` (one thread, 16 keep-alive connections, 10 s) "
        "after a 2 s warm-up of the same scenario; latency percentiles are wrk's (client "
        "side, coordinated omission not corrected). Transaction: sequential 100-entry "
        "Bundles over one keep-alive httpx connection, timed on the client. "
        "\"rps\" counts 2xx answers only (for update: successful PUTs, re-reads excluded).")
    add("")

    def row(label: str, name: str, target: str, passed: bool | None, is_tx: bool) -> None:
        e = s.get(name)
        if not e or e.get("missing"):
            add(f"| {label} | {target} | (not run) | | | | | |")
            return
        lat = e["latency_ms"]
        rps = f"{e['rps']:,.1f}" if is_tx else f"{e['rps']:,.0f}"
        add(f"| {label} | {target} {_ok(passed)} | {rps} | {lat['p50']:.2f} | {lat['p95']:.2f} | "
            f"{lat['p99']:.2f} | {e['non_2xx']} | `{e['command']}` |")

    def table(prefix: str, title: str, base: str | None) -> None:
        add(f"## {title}")
        add("")
        add("| scenario | target | measured rps | p50 ms | p95 ms | p99 ms | non-2xx | command |")
        add("|---|---|---:|---:|---:|---:|---:|---|")
        for kind in KINDS:
            name = f"{prefix}-{kind}"
            e = s.get(name)
            if base is None:
                if kind == "transaction":
                    t = TARGETS["transaction_p50_ms"]
                    passed = e["latency_ms"]["p50"] <= t if e and not e.get("missing") else None
                    row("transaction (100 entries)", name, f"p50 ≤ {t:.0f} ms", passed, True)
                else:
                    t = TARGETS[kind]
                    passed = e["rps"] >= t if e and not e.get("missing") else None
                    row(kind, name, f"≥ {t:,.0f}/s", passed, False)
            else:
                ratio = _ratio(s, name, f"{base}-{kind}", kind)
                passed = None if ratio is None else ratio >= TARGETS["pg_ratio"]
                target = f"≥ {TARGETS['pg_ratio']}× SQLite"
                if ratio is not None:
                    target += f" (= {ratio:.2f}×)"
                row(kind if kind != "transaction" else "transaction (100 entries)", name,
                    target, passed, kind == "transaction")
        add("")

    table("sqlite", "SQLite (embedded), 1 worker process", None)

    add("## Framework floor")
    add("")
    add("`bench/floor_app.py`: plain FastAPI, no middleware, the server's uvicorn flags, "
        "answering `GET /fhir/ServiceRequest/{id}` with the fixed bytes of one stored "
        "ServiceRequest (as read from the server). Same `bench/read.lua`, same ids.")
    add("")
    add("| scenario | measured rps | p50 ms | p95 ms | p99 ms | non-2xx | command |")
    add("|---|---:|---:|---:|---:|---:|---|")
    f = s.get("floor-read")
    if f and not f.get("missing"):
        lat = f["latency_ms"]
        add(f"| floor read | {f['rps']:,.0f} | {lat['p50']:.2f} | {lat['p95']:.2f} | "
            f"{lat['p99']:.2f} | {f['non_2xx']} | `{f['command']}` |")
        rd = s.get("sqlite-read")
        if rd and not rd.get("missing"):
            ratio = rd["rps"] / f["rps"]
            add("")
            add(f"**Read / floor = {rd['rps']:,.0f} / {f['rps']:,.0f} = {ratio:.2f}** "
                f"(target ≥ {TARGETS['floor_ratio']}) {_ok(ratio >= TARGETS['floor_ratio'])}")
    add("")

    table("pg", "PostgreSQL, 2 worker processes", "sqlite")
    add("PostgreSQL ratio: measured rps / SQLite rps; for the transaction, SQLite p50 / "
        "PostgreSQL p50.")
    add("")

    add("## Servers")
    add("")
    for line in r["servers"]:
        add(f"- `{line}`")
    add("")
    add("Each server: a fresh temp dir (SQLite file or throwaway PostgreSQL cluster from "
        "`scripts/pg-test-cluster`: fsync=on, synchronous_commit=on), request log (one JSON "
        "line per request on stderr) to a file in that dir, seeded with 1,000 "
        "ServiceRequests (`bench/seed.py`, 100-entry transactions) before any scenario. "
        "Reads pick a random id of the 1,000; each update connection owns one resource.")
    add("")

    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    for key, label in (("nproc_cmd", "`nproc`"), ("cpu_model", "CPU (/proc/cpuinfo)"),
                       ("memory_gib", "memory (GiB)"), ("disk", "disk (`df -hT`)"),
                       ("kernel", "kernel"), ("python", "Python"), ("sqlite", "SQLite"),
                       ("postgresql", "PostgreSQL"), ("wrk", "wrk")):
        add(f"| {label} | {m.get(key)} |")
    add(f"| packages | {', '.join(' '.join(p.split()) for p in m.get('packages', []) if p)} |")
    add("")
    loads = [f"{n} {e['loadavg_before'].split()[0]}" for n, e in s.items()
             if e.get("loadavg_before")]
    if loads:
        add("1-minute load average just before each scenario (anything above the bench's own "
            "load means other processes competed for the CPUs): " + ", ".join(loads) + ".")
        add("")
    add("wrk, the server (and its workers) and PostgreSQL share the same cores; with "
        f"`nproc` = {m.get('nproc_cmd')}, wrk itself takes a good part of one core.")
    add("")

    add("## Notes")
    add("")
    fs = r.get("fsync")
    if fs:
        add(f"- **Commit cost on this disk** (`bench/fsync_micro.py`, {fs['n']} single-row "
            f"SQLite inserts, one transaction each, WAL): synchronous=FULL "
            f"{fs['sqlite_wal_full_commit_us']:.0f} µs/commit vs synchronous=OFF "
            f"{fs['sqlite_wal_off_commit_us']:.0f} µs → fsync ≈ "
            f"{fs['fsync_cost_per_commit_us']:.0f} µs per commit; raw 4 KiB write+fsync "
            f"{fs['raw_write_fsync_4k_us']:.0f} µs. So one SQLite writer can commit at most "
            f"≈ {fs['max_serial_durable_commits_per_s']:,} durable transactions/s here, "
            "before any HTTP, JSON or validation work: that is the ceiling for create and "
            "update unless commits are grouped.")
    for note in r.get("notes", []):
        add(f"- {note}")
    add("")
    return "\n".join(lines)


def _ratio(s: dict[str, Any], name: str, base: str, kind: str) -> float | None:
    a, b = s.get(name), s.get(base)
    if not a or not b or a.get("missing") or b.get("missing"):
        return None
    if kind == "transaction":
        return float(b["latency_ms"]["p50"]) / float(a["latency_ms"]["p50"])
    return float(a["rps"]) / float(b["rps"]) if b["rps"] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path)
    parser.add_argument("--from", dest="src", type=Path)
    parser.add_argument("--pg-version")
    parser.add_argument("--notes", type=Path,
                        help="a JSON list of notes for RESULTS.md (default bench/notes.json)")
    args = parser.parse_args()
    if args.src:
        results = json.loads(args.src.read_text())
    else:
        results = collect(args.raw, args.pg_version)
        OUT.mkdir(exist_ok=True)
        stamp = results["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
        path = OUT / f"results-{stamp}.json"
        path.write_text(json.dumps(results, indent=2) + "\n")
        shutil.copyfile(path, OUT / "latest.json")
        print(f"report: wrote {path.relative_to(HERE.parent)} and bench/out/latest.json")
    notes = args.notes or HERE / "notes.json"
    if notes.exists():
        results["notes"] = json.loads(notes.read_text())
    # sections written by other benchmarks (bench/search) follow the generated part: keep them
    target = HERE / "RESULTS.md"
    previous = target.read_text() if target.exists() else ""
    kept = previous[previous.index(KEPT_FROM) :] if KEPT_FROM in previous else ""
    target.write_text(render(results).rstrip("\n") + ("\n\n" + kept if kept else "\n"))
    print("report: wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
