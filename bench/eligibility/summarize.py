"""The RESULTS.md section of the ``$ecm-eligibility`` benchmark, from ``run.py``'s JSON files.

    .venv/bin/python bench/eligibility/summarize.py \\
        bench/out/eligibility-sqlite-20k.json bench/out/eligibility-pg-20k.json [--out FILE]

Prints (or writes) a Markdown fragment: one table row per target and store (target with
✅/❌, the measured figure, the exact command), the load of each store, and the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

TARGET_P50_MS = 50.0
TARGET_WALL_S = 300.0
TARGET_RSS_MIB = 50.0
STORE = {"sqlite": "SQLite (embedded)", "postgresql": "PostgreSQL"}


def mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def mib(kib: int | None) -> str:
    return "–" if kib is None else f"{kib / 1024:,.0f} MiB"


def rows(run: dict[str, Any]) -> list[str]:
    store = STORE.get(run["database"], run["database"])
    members = run["data"]["members"]
    resources = run["data"]["total"]
    out: list[str] = []
    m = run.get("member")
    if m:
        cmd = f"`{run['command']}` (member step)"
        out.append(
            f"| single member, `GET Patient/<id>/$ecm-eligibility` | {store} | p50 ≤ 50 ms "
            f"{mark(m['p50_ms'] <= TARGET_P50_MS)} | p50 **{m['p50_ms']:.1f} ms**, p95 "
            f"{m['p95_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms (n = {m['n']} random members after "
            f"{m['warmup']} warm-up; ~{run['data']['per_member']:.0f} resources each) | {cmd} |"
        )
    p = run.get("population")
    if p:
        cmd = f"`{run['command']}` (population step)"
        summary = p["summary"]
        wall = p["wall_s"]
        minutes = f"{int(wall // 60)} min {wall % 60:.0f} s"
        target = f"≤ 5 min for 20,000 {mark(wall <= TARGET_WALL_S)}" if members >= 20_000 else "–"
        out.append(
            f"| population, `POST $ecm-eligibility` (async) over {summary['evaluated']:,} members "
            f"({resources:,} resources) | {store} | {target} | **{minutes}** ({p['members_per_s']} "
            f"members/s; steady {p.get('steady_members_per_s', '–')}/s); {p['polls']} polls with "
            f"`X-Progress`; eligible {summary['eligible']:,}, needs-attestation "
            f"{summary['needsAttestation']:,}, listed {summary['listed']:,} | {cmd} |"
        )
        growth = p.get("rss_growth_peak_mib")
        if growth is not None:
            first, last = p["rss_window_first"], p["rss_window_last"]
            out.append(
                f"| server RSS, members 0–2,000 vs the last 2,000 (peak of 4 samples/s) | {store} "
                f"| grows ≤ 50 MB {mark(growth <= TARGET_RSS_MIB)} | **{growth:+.1f} MiB** "
                f"(peak {mib(first['max_kib'])} → {mib(last['max_kib'])}; at the poll that "
                f"first showed ≥ 2,000 done {mib(p['rss_at_mark']['rss_kib'])}, last running "
                f"poll {mib(p['rss_last_running']['rss_kib'])}; before the run "
                f"{mib(p['rss_before_kib'])}) | as above |"
            )
    load = run.get("load")
    if load:
        out.append(
            f"| bulk load (`bench/search/load.py --mode repo`, {load['batch']:,} per commit) "
            f"| {store} | – | "
            f"{load['resources']:,} resources in **{load['seconds'] / 60:.1f} min** "
            f"({load['resources_per_s']:,.0f}/s); store {load['store_bytes'] / 2**30:.1f} GiB | "
            f"`{load['command']}` |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = [orjson.loads(p.read_bytes()) for p in args.runs]
    lines = [
        "| metric | store | target | measured | command |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        lines += rows(run)
    machine = runs[0]["machine"]
    pg = next((r["machine"]["postgresql"] for r in runs if r["machine"].get("postgresql")), None)
    lines += [
        "",
        f"Machine: `nproc` {machine['nproc_cmd']}, {machine['memory_gib']} GiB RAM, CPU "
        f"{machine['cpu_model']} (/proc/cpuinfo), Python {machine['python']}, SQLite "
        f"{machine['sqlite']}" + (f", PostgreSQL {pg}" if pg else "") + ".",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
