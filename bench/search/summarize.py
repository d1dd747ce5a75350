"""Markdown for the search benchmarks: one run (``render_run``, used by ``run.py``) or the
section of ``bench/RESULTS.md`` combining several runs and ingest measurements.

    .venv/bin/python bench/search/summarize.py \\
        --run bench/out/search-sqlite-1m.json --small bench/out/search-sqlite-10k.json \\
        --ingest bench/out/ingest-sqlite-1m.json [--run ... --small ... --ingest ...] \\
        [--out section.md]

``--run``, ``--small`` and ``--ingest`` repeat once per store (in the same order); ``--small``
is the same store type at 10,000 resources (for the p50 scaling target); ``-`` skips one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

P50_MS, P95_MS = 20.0, 50.0
SCALING = 2.0
INCLUDE_MS = 3.0
TOTAL_MS = 50.0
CREATE_RPS = 1000.0
INGEST_RPS = 1000.0
TX_P50_MS = 60.0


def ok(flag: bool | None) -> str:
    return "—" if flag is None else ("✅" if flag else "❌")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def describe(r: dict[str, Any]) -> str:
    d = r["data"]
    size = r.get("store_bytes")
    where = (
        f"{r['database']}, {r['workers']} worker process(es), store {size / 2**30:.2f} GiB"
        if size
        else f"{r['database']}, {r['workers']} worker(s)"
    )
    counts = ", ".join(f"{t} {n:,}" for t, n in d["counts"].items())
    return (
        f"**{r['label']}** — {d['total']:,} stored resources ({d['members']:,} members; "
        f"{counts}); {where}; seed {d['seed']}; measured {r['date']}."
    )


def query_table(r: dict[str, Any], add: Any) -> None:
    add(
        "| query | kind | matches | cold ms | p50 ms | p95 ms | n | target p50 ≤ 20, p95 ≤ 50 "
        "| answer |"
    )
    add("|---|---|---:|---:|---:|---:|---:|---|---|")
    for q in r.get("queries", []):
        if q["kind"] in ("include", "total"):
            continue
        passed = None
        if q.get("p50_ms") is not None:
            passed = q["p50_ms"] <= P50_MS and q["p95_ms"] <= P95_MS
        answer = (
            "ok"
            if q.get("correct")
            else f"WRONG ({q.get('status')}: page {q.get('page')}, total {q.get('total')})"
        )
        series = "" if q["primary"] else " (ECM)"
        add(
            f"| `{q['path']}`{series} | {q['kind']} | {q['size']:,} | {fmt(q.get('cold_ms'))} | "
            f"{fmt(q.get('p50_ms'), 2)} | {fmt(q.get('p95_ms'), 2)} | {fmt(q.get('n'))} | "
            f"{ok(passed)} | {answer} |"
        )


def extras(r: dict[str, Any], add: Any) -> None:
    by_name = {q["name"]: q for q in r.get("queries", [])}
    for q in r.get("queries", []):
        base = by_name.get(q.get("baseline") or "")
        if q["kind"] == "include" and q.get("p50_ms") is not None:
            paired = q.get("baseline_stats")
            if paired:  # measured alternately with the baseline, request by request
                without, delta = paired["p50_ms"], q["delta_p50_ms"]
                how = "median of the paired differences"
            elif base:
                without, delta = base["p50_ms"], q["p50_ms"] - base["p50_ms"]
                how = "difference of the p50s"
            else:
                continue
            add(
                f"- `_include` of {q.get('included', '?')} resources: `{q['path']}` p50 "
                f"{q['p50_ms']:.2f} ms vs {without:.2f} ms without → adds {delta:.2f} ms "
                f"({how}; target ≤ {INCLUDE_MS:.0f} ms) {ok(delta <= INCLUDE_MS)}; "
                f"answer {'ok' if q.get('correct') else 'WRONG'}"
            )
        if q["kind"] == "total" and q.get("p50_ms") is not None:
            add(
                f"- `_total=accurate` on {q['size']:,} matches: `{q['path']}` cold "
                f"{q['cold_ms']:.1f} ms, p50 {q['p50_ms']:.2f} ms, p95 {q['p95_ms']:.2f} ms "
                f"(target ≤ {TOTAL_MS:.0f} ms) {ok(q['p50_ms'] <= TOTAL_MS)}; total "
                f"{q.get('total')} {'ok' if q.get('correct') else 'WRONG'}"
            )
    w = r.get("writes") or {}
    c = w.get("create")
    if c:
        rows = r.get("create_index_rows") or {}
        add(
            f"- create with indexing (a generated Task, {c.get('body_bytes', '?')} bytes, "
            f"{rows.get('total', '?')} index rows): {c['rps']:,.0f}/s, p50 "
            f"{c['latency_ms']['p50']} ms, p95 {c['latency_ms']['p95']} ms, non-2xx "
            f"{c['non_2xx']} (target ≥ {CREATE_RPS:,.0f}/s) {ok(c['rps'] >= CREATE_RPS)}: "
            f"`{c['command']}`"
        )
    t = w.get("transaction")
    if t:
        p50 = t["latency_ms"]["p50"]
        add(
            f"- 100-entry transaction with indexing (`bench/bundle_gen.py`: 20 Patients + 80 "
            f"ServiceRequests): p50 {p50:.1f} ms, p95 {t['latency_ms']['p95']:.1f} ms, non-2xx "
            f"{t['non_2xx']} (target p50 ≤ {TX_P50_MS:.0f} ms) {ok(p50 <= TX_P50_MS)}: "
            f"`{t['command']}`"
        )


def render_run(r: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add(f"### Search: {r['label']}")
    add("")
    add(describe(r))
    add("")
    add(
        f"Server: `{r.get('server_command', '')}`. Each query: server restarted, then one cold "
        f"request, {r['settings']['warmup']} warm-up and {r['settings']['repeats']} timed "
        "requests, sequential on one keep-alive connection (client-side latency)."
    )
    add("")
    query_table(r, add)
    add("")
    extras(r, add)
    add("")
    return "\n".join(lines)


def scaling(big: dict[str, Any], small: dict[str, Any], add: Any) -> None:
    smalls = {q["name"]: q for q in small.get("queries", [])}
    add(
        f"p50 at {big['data']['total']:,} vs {small['data']['total']:,} stored resources "
        f"(target: ≤ {SCALING:.0f}×), same queries and match sets:"
    )
    add("")
    add("| query | matches | p50 ms (small) | p50 ms (large) | ratio | |")
    add("|---|---:|---:|---:|---:|---|")
    for q in big.get("queries", []):
        s = smalls.get(q["name"])
        if not s or q["kind"] in ("include", "total") or not s.get("p50_ms"):
            continue
        if q.get("p50_ms") is None:
            continue
        ratio = q["p50_ms"] / s["p50_ms"]
        add(
            f"| `{q['path']}` | {q['size']:,} | {s['p50_ms']:.2f} | {q['p50_ms']:.2f} | "
            f"{ratio:.2f} | {ok(ratio <= SCALING)} |"
        )
    add("")


def ingest(i: dict[str, Any], add: Any) -> None:
    rate = i["resources_per_s"]
    p50 = i["transaction_ms"]["p50"]
    add(
        f"- ingest through {i['entries']}-entry transactions (`bench/search/load.py --mode "
        f"http`, PUT entries, {i['prefer']}, {i['clients']} client(s)): {i['resources']:,} "
        f"resources in {i['seconds']:,.0f} s = {rate:,.0f} resources/s (target ≥ "
        f"{INGEST_RPS:,.0f}/s) {ok(rate >= INGEST_RPS)}; per transaction p50 {p50:.1f} ms "
        f"(target ≤ {TX_P50_MS:.0f} ms) {ok(p50 <= TX_P50_MS)}, p95 "
        f"{i['transaction_ms']['p95']:.1f} ms; failed transactions "
        f"{i['failed_transactions']}" + (f" — {i['note']}" if i.get("note") else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[])
    parser.add_argument("--small", action="append", default=[])
    parser.add_argument("--ingest", action="append", default=[])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    def load(path: str | None) -> dict[str, Any] | None:
        return json.loads(Path(path).read_text()) if path and path != "-" else None

    lines: list[str] = []
    add = lines.append
    for n, path in enumerate(args.run):
        big = load(path)
        if big is None:
            continue
        small = load(args.small[n] if n < len(args.small) else None)
        ingests = args.ingest[n].split(",") if n < len(args.ingest) else []
        ing = [x for x in (load(path) for path in ingests) if x]
        add(f"### {big['label']}")
        add("")
        add(describe(big))
        add("")
        query_table(big, add)
        add("")
        extras(big, add)
        for i in ing:
            ingest(i, add)
        add("")
        if small:
            scaling(big, small, add)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
