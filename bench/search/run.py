"""Measure search (and indexed writes) against a store loaded from a generated data set.

    .venv/bin/python bench/search/run.py --data DIR --database-url sqlite:////tmp/ecm-1m.db \\
        --label sqlite-1m [--workers 1] [--repeats 100] [--skip-writes] [--probe-only]

What it does, with the server started here (``calaim-fhir serve``, 127.0.0.1, a free port):

1. probe: the first designed query must answer 200 with the designed number of matches;
   otherwise search is not ready and the run stops (exit 3) unless ``--force``;
2. every query of ``queries.json`` (designed match sets, the ``_include`` and the
   ``_total=accurate`` variants): the server is restarted, then the query is sent once
   (``cold``: the first search after a restart; the OS page cache stays warm) and
   ``--warmup`` + ``--repeats`` more times, sequentially over one keep-alive connection
   (``http.client``), timed on the client; ``p50``/``p95`` are over the repeats. Every
   answer is checked: status 200, matches on the page, ``total`` and included resources;
3. writes (unless ``--skip-writes``), after the queries (they add resources that none of the
   designed queries match): ``create`` = wrk POST of a generated Task (``post.lua``,
   ``-t1 -c16``, 2 s warm-up then ``--duration``); ``transaction`` =
   ``bench/transaction_timing.py`` (100-entry Bundles of Patients and ServiceRequests, as in
   ``bench/run``).

Writes ``bench/out/search-<label>.json`` (every figure, the exact commands, machine facts)
and ``bench/out/search-<label>.md`` (a Markdown fragment); ``summarize.py`` combines runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from harness import ACCEPT, Server, percentile, shown, stats  # noqa: E402
from report import machine, parse_wrk  # noqa: E402

PY = ROOT / ".venv" / "bin" / "python"
MIN_REPEATS = 10


def log(text: str) -> None:
    print(f"search-bench: {text}", file=sys.stderr, flush=True)


class Client:
    """One keep-alive connection; ``get`` returns (ms, status, body)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def get(self, path: str) -> tuple[float, int, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", "/fhir/" + path, headers=ACCEPT)
        response = self.conn.getresponse()
        body = response.read()
        return (time.perf_counter() - t0) * 1000, response.status, body

    def close(self) -> None:
        self.conn.close()


def check(query: dict[str, Any], status: int, body: bytes) -> dict[str, Any]:
    """What the answer holds, and whether it is the designed answer."""
    out: dict[str, Any] = {"status": status, "bytes": len(body)}
    if status != 200:
        out["correct"] = False
        out["error"] = body[:300].decode("utf-8", "replace")
        return out
    bundle = orjson.loads(body)
    entries = bundle.get("entry") or []
    modes = [(e.get("search") or {}).get("mode", "match") for e in entries]
    out["page"] = modes.count("match")
    out["included"] = modes.count("include")
    out["total"] = bundle.get("total")
    ok = out["page"] == query["expected_page"]
    if "expected_included" in query:
        ok = ok and out["included"] == query["expected_included"]
    if "_total=accurate" in query["path"]:
        ok = ok and out["total"] == query["expected_total"]
    elif out["total"] is not None and out["total"] != query["expected_total"]:
        ok = False  # a total given without being asked for must still be right
    out["correct"] = ok
    return out


def measure(
    client: Client,
    query: dict[str, Any],
    warmup: int,
    repeats: int,
    baseline: str | None,
    budget_s: float,
) -> dict[str, Any]:
    """Cold request, warm-up, timed repeats (fewer once ``budget_s`` is spent, never fewer
    than ``MIN_REPEATS``). With ``baseline`` (the same search without ``_include`` /
    ``_total``), the two alternate request by request, so that their difference is measured
    under the same conditions."""
    cold_ms, status, body = client.get(query["path"])
    result: dict[str, Any] = {"cold_ms": round(cold_ms, 2), "cold": check(query, status, body)}
    if status != 200:
        result.update(result["cold"])
        return result
    for _ in range(warmup):
        client.get(query["path"])
        if baseline:
            client.get(baseline)
    times: list[float] = []
    base_times: list[float] = []
    last: tuple[int, bytes] = (status, body)
    deadline = time.monotonic() + budget_s
    for n in range(repeats):
        if n >= MIN_REPEATS and time.monotonic() > deadline:
            break
        ms, status, body = client.get(query["path"])
        times.append(ms)
        last = (status, body)
        if baseline:
            base_times.append(client.get(baseline)[0])
    result.update(check(query, *last))
    result.update(stats(times))
    if baseline:
        result["baseline_path"] = baseline
        result["baseline_stats"] = stats(base_times)
        deltas = sorted(a - b for a, b in zip(times, base_times, strict=True))
        result["delta_p50_ms"] = round(percentile(deltas, 50) or 0, 2)
    return result


def run_queries(server: Server, meta: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    results = []
    by_name = {q["name"]: q for q in meta["queries"]}
    for query in meta["queries"]:
        if args.only and not any(o in query["name"] for o in args.only):
            continue
        if not args.no_restart:
            server.restart()
        load = os.getloadavg()[0]
        client = Client(server.port)
        base = by_name.get(query.get("baseline") or "")
        try:
            baseline = base["path"] if base else None
            r = measure(client, query, args.warmup, args.repeats, baseline, args.budget)
        finally:
            client.close()
        entry = {
            k: query[k]
            for k in (
                "name",
                "kind",
                "series",
                "primary",
                "size",
                "path",
                "expected_total",
                "expected_page",
            )
        }
        entry["baseline"] = query.get("baseline")
        entry["command"] = (
            f"GET {server.base}/fhir/{query['path']} (1 cold after restart, "
            f"{args.warmup} warm-up, {args.repeats} timed; sequential, "
            "one keep-alive connection)"
        )
        entry.update(r)
        entry["loadavg_before"] = round(load, 2)
        results.append(entry)
        flag = (
            ""
            if r.get("correct")
            else "  WRONG ANSWER"
            if r.get("status") == 200
            else (f"  HTTP {r.get('status')}")
        )
        log(
            f"{query['name']}: cold {r['cold_ms']:.1f} ms, p50 {r.get('p50_ms', '-')} ms, "
            f"p95 {r.get('p95_ms', '-')} ms{flag}"
        )
    return results


def run_writes(
    server: Server, meta: dict[str, Any], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    body = dict(meta["create_body"])
    # a background owner: the created Tasks must not change any designed match set
    body["owner"] = {"reference": "Organization/ecm-provider-0001"}
    body_path = work / "create-task.json"
    body_path.write_bytes(orjson.dumps(body))
    env = {
        **os.environ,
        "BENCH_DIR": str(BENCH),
        "BENCH_TYPE": "Task",
        "BENCH_BODY": str(body_path),
    }
    script = str(HERE / "post.lua")
    conns = str(args.connections)
    subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{args.wrk_warmup}", "-s", script, server.base],
        env=env,
        check=True,
        capture_output=True,
    )
    load = os.getloadavg()[0]
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{args.duration}", "--latency", "-s", script, server.base]
    text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    create = parse_wrk(text)
    create["command"] = (
        f"BENCH_DIR=bench BENCH_TYPE=Task BENCH_BODY=<create_body of queries.json> {shown(cmd)}"
    ).replace(server.base, "http://127.0.0.1:PORT")
    create["loadavg_before"] = round(load, 2)
    create["body_bytes"] = len(orjson.dumps(body))
    out["create"] = create
    log(
        f"create: {create['rps']:,.0f}/s, p50 {create['latency_ms']['p50']} ms, "
        f"non-2xx {create['non_2xx']}"
    )

    load = os.getloadavg()[0]
    cmd = [
        str(PY),
        str(BENCH / "transaction_timing.py"),
        "--url",
        f"{server.base}/fhir",
        "--requests",
        str(args.tx_requests),
        "--warmup",
        "20",
    ]
    tx = orjson.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    tx["command"] = shown(cmd).replace(server.base, "http://127.0.0.1:PORT")
    tx["loadavg_before"] = round(load, 2)
    out["transaction"] = tx
    log(f"transaction: p50 {tx['latency_ms']['p50']:.1f} ms, non-2xx {tx['non_2xx']}")
    return out


def index_rows(meta: dict[str, Any]) -> dict[str, int] | None:
    """Index rows the server's indexer makes for the create body (None if it has none yet)."""
    try:
        from zoneinfo import ZoneInfo

        sys.path.insert(0, str(ROOT))
        from server.search.index import Indexer
        from server.search.registry import load_registry

        indexer = Indexer(load_registry(), "http://127.0.0.1/fhir", ZoneInfo("America/Los_Angeles"))
        rows = indexer.rows("Task", meta["create_body"])
        return {name: len(r) for name, r in rows.tables().items()} | {"total": rows.count()}
    except Exception as exc:  # noqa: BLE001 - informative only
        log(f"index rows of the create body unknown: {type(exc).__name__}: {exc}")
        return None


def git_state() -> dict[str, Any]:
    """The commit measured, and how many tracked and untracked files differ from it."""

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    status = git("status", "--porcelain").splitlines()
    digest = hashlib.sha256()
    for path in sorted((ROOT / "server").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        # identifies the code measured when the tree differs from the commit
        "server_py_sha256": digest.hexdigest()[:16],
        "modified_tracked": sum(1 for line in status if not line.startswith("??")),
        "untracked": sum(1 for line in status if line.startswith("??")),
    }


def store_bytes(url: str) -> int | None:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    try:
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else None
    except Exception:  # noqa: BLE001 - informative only
        return None


def stored_count(server: Server) -> int | None:
    """Resources in the store, from ``GET /fhir?_summary=count`` when the server offers it."""
    client = Client(server.port)
    try:
        _, status, body = client.get("?_summary=count")
        if status == 200:
            total = orjson.loads(body).get("total")
            return int(total) if isinstance(total, int) else None
    except (OSError, ValueError):
        return None
    finally:
        client.close()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--label", required=True, help="e.g. sqlite-1m (names the output files)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timed requests per query at most (at least 10 requests)",
    )
    parser.add_argument("--only", nargs="*", help="run the queries whose name contains one of")
    parser.add_argument("--no-restart", action="store_true", help="no restart before each query")
    parser.add_argument("--skip-writes", action="store_true")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument(
        "--probe-only",
        action="store_true",
        help="only check that search answers the probe query (exit 0 or 3)",
    )
    parser.add_argument("--force", action="store_true", help="measure even if the probe fails")
    parser.add_argument("--duration", default="10s", help="wrk duration of the create scenario")
    parser.add_argument("--wrk-warmup", default="2s")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tx-requests", type=int, default=200)
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    args = parser.parse_args()

    meta = orjson.loads((args.data / "queries.json").read_bytes())
    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    server = Server(args.database_url, args.workers, work)
    result: dict[str, Any] = {
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": "sqlite" if args.database_url.startswith("sqlite") else "postgresql",
        "workers": args.workers,
        "data": {k: meta[k] for k in ("seed", "total", "members", "counts", "sizes", "series")},
        "store_bytes": store_bytes(args.database_url),
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "restart_per_query": not args.no_restart,
            "wrk_duration": args.duration,
            "connections": args.connections,
            "budget_s": args.budget,
            "tx_requests": args.tx_requests,
        },
        "machine": machine(work, None),
        "git": git_state(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        server.start()
        result["server_command"] = server.command.replace(str(work), "<tmp>")
        probe = next(q for q in meta["queries"] if q["kind"] not in ("include", "total"))
        client = Client(server.port)
        _, status, body = client.get(probe["path"])
        client.close()
        verdict = check(probe, status, body)
        result["probe"] = {"path": probe["path"], **verdict}
        if not verdict["correct"]:
            log(f"search is not ready: {probe['path']} -> {verdict}")
            if args.probe_only or not args.force:
                raise SystemExit(3)
        elif args.probe_only:
            log(f"search works: {probe['path']} -> {verdict}")
            shutil.rmtree(work, ignore_errors=True)
            return
        result["stored"] = stored_count(server)
        result["create_index_rows"] = index_rows(meta)
        if not args.skip_queries:
            result["queries"] = run_queries(server, meta, args)
        if not args.skip_writes:
            server.restart()
            result["writes"] = run_writes(server, meta, args, work)
            result["store_bytes_after"] = store_bytes(args.database_url)
    finally:
        server.stop()
    result["loadavg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"search-{args.label}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    sys.path.insert(0, str(HERE))
    from summarize import render_run

    (args.out / f"search-{args.label}.md").write_text(render_run(result))
    log(f"wrote {path} and search-{args.label}.md")
    shutil.rmtree(work, ignore_errors=True)  # server logs; kept when the run fails


if __name__ == "__main__":
    main()
