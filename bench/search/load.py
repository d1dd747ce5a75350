"""Load a generated data set into a store, and measure transaction ingest.

The data set is any folder written through ``bench/dataset.py``: the search population
(``bench/search/generate.py``) or the eligibility one (``bench/eligibility/generate.py``).

Two ways in:

* ``--mode repo`` (bulk load, not a benchmark of the API): the server's own repository opened
  in this process (``server.store.sql.opening.open_store``), resources written with
  ``Unit.create`` under their generated ids, ``--batch`` resources per database transaction.
  The same write path (stored JSON, history, search index rows) as the server, without HTTP,
  validation or authorisation.

      .venv/bin/python bench/search/load.py --mode repo --data DIR \\
          --database-url sqlite:////tmp/ecm-1m.db [--batch 2000]

* ``--mode http`` (the ingest benchmark): 100-entry transaction Bundles of ``PUT Type/id``
  entries (``Prefer: return=minimal``) posted to a running server, ``--clients`` connections
  each sending its Bundles one after another; the client times every transaction.

      .venv/bin/python bench/search/load.py --mode http --data DIR \\
          --url http://127.0.0.1:8080/fhir [--entries 100] [--clients 1] [--limit N]

Progress goes to stderr every ``--progress`` resources; the summary (one JSON object: rate,
per-transaction percentiles, store size) to stdout or ``--json FILE``.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dataset import chunks, read_meta, resources  # noqa: E402
from harness import percentile, shown  # noqa: E402


class Progress:
    def __init__(self, every: int, total: int | None) -> None:
        self.every = every
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._next = every

    def add(self, n: int) -> None:
        self.done += n
        if self.done >= self._next:
            self._next += self.every
            elapsed = time.monotonic() - self.started
            of = f" of {self.total:,}" if self.total else ""
            print(
                f"load: {self.done:,}{of} resources, {elapsed:.0f} s, {self.done / elapsed:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )


def store_size(database_url: str) -> int | None:
    """Bytes on disk: the SQLite file and its WAL, or the PostgreSQL database."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url[len("sqlite:///") :])
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    try:
        import psycopg

        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else None
    except Exception:  # noqa: BLE001 - a size is a nicety
        return None


# -- repository -------------------------------------------------------------------------------


def load_repo(args: argparse.Namespace, total: int | None) -> dict[str, Any]:
    from server.search.service import build_search_service
    from server.settings import Settings
    from server.store.base import SYSTEM
    from server.store.sql.opening import open_store

    settings = Settings(database_url=args.database_url)
    repo = open_store(settings, build_search_service(settings))
    dialect = repo.sql_dialect
    if dialect.name == "sqlite":
        # the loading connection only: a large page cache keeps the growing indexes in memory
        with dialect.reading() as conn:
            conn.execute(f"PRAGMA cache_size = -{int(args.cache_mib) * 1024}")
    first = next(resources(args.data, 1))
    with repo.reader() as reader:
        if reader.read(first["resourceType"], first["id"]) is not None:
            raise SystemExit("load: the store already holds this data set; use a fresh store")
    progress = Progress(args.progress, total)
    started = time.monotonic()
    commits: list[float] = []
    try:
        for chunk in chunks(resources(args.data, args.limit), args.batch):

            def job(unit: Any, chunk: list[dict[str, Any]] = chunk) -> None:
                for resource in chunk:
                    unit.create(resource["resourceType"], resource, id=resource["id"])

            t0 = time.perf_counter()
            with dialect.writing() as conn:
                repo.run_jobs(conn, [(job, SYSTEM)])
            commits.append((time.perf_counter() - t0) * 1000)
            progress.add(len(chunk))
        if args.analyze:
            t0 = time.perf_counter()
            with dialect.reading() as conn:
                conn.execute("ANALYZE" if dialect.name == "sqlite" else "VACUUM ANALYZE")
            print(f"load: ANALYZE took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        repo.close()
    elapsed = time.monotonic() - started
    ordered = sorted(commits)
    return {
        "mode": "repo",
        "database": "sqlite" if args.database_url.startswith("sqlite") else "postgresql",
        "resources": progress.done,
        "seconds": round(elapsed, 1),
        "resources_per_s": round(progress.done / elapsed, 1) if elapsed else None,
        "batch": args.batch,
        "batch_ms": {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95)},
        "analyzed": bool(args.analyze),
        "store_bytes": store_size(args.database_url),
    }


# -- HTTP transactions ------------------------------------------------------------------------


def bundle_bytes(chunk: list[dict[str, Any]]) -> bytes:
    entries = [
        {
            "fullUrl": f"{r['resourceType']}/{r['id']}",
            "resource": r,
            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
        }
        for r in chunk
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def load_http(args: argparse.Namespace, total: int | None) -> dict[str, Any]:
    import httpx

    headers = {
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
        "Prefer": f"return={args.prefer}",
    }
    work: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=4 * args.clients)
    times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    progress = Progress(args.progress, total)

    def client() -> None:
        with httpx.Client(base_url=args.url, headers=headers, timeout=300.0) as http:
            while True:
                item = work.get()
                if item is None:
                    return
                n, body = item
                t0 = time.perf_counter()
                try:
                    r = http.post("/", content=body)
                    status, text = r.status_code, r.text[:300]
                except httpx.HTTPError as exc:
                    status, text = 0, str(exc)
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    times.append(ms)
                    if status != 200:
                        failures.append(f"{status} {text}")
                    progress.add(n)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for chunk in chunks(resources(args.data, args.limit), args.entries):
        work.put((len(chunk), bundle_bytes(chunk)))
        if failures and args.stop_on_error:
            break
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ordered = sorted(times)
    if failures:
        print(f"load: {len(failures)} transaction(s) failed; first: {failures[0]}", file=sys.stderr)
    return {
        "mode": "http",
        "url": args.url,
        "resources": progress.done,
        "transactions": len(times),
        "failed_transactions": len(failures),
        "entries": args.entries,
        "clients": args.clients,
        "prefer": f"return={args.prefer}",
        "seconds": round(elapsed, 1),
        "resources_per_s": round(progress.done / elapsed, 1) if elapsed else None,
        "transaction_ms": {
            "p50": percentile(ordered, 50),
            "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99),
            "max": ordered[-1] if ordered else None,
        },
        "first_failure": failures[0] if failures else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder written by generate.py")
    parser.add_argument("--mode", choices=("repo", "http"), required=True)
    parser.add_argument("--database-url", help="repo mode: sqlite:///... or postgresql://...")
    parser.add_argument("--batch", type=int, default=2000, help="repo mode: resources per commit")
    parser.add_argument("--cache-mib", type=int, default=2048, help="repo mode, SQLite: page cache")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="repo mode: ANALYZE (SQLite) / VACUUM ANALYZE (PostgreSQL) at the end",
    )
    parser.add_argument("--url", help="http mode: FHIR base, e.g. http://127.0.0.1:8080/fhir")
    parser.add_argument("--entries", type=int, default=100, help="http mode: entries per Bundle")
    parser.add_argument("--clients", type=int, default=1, help="http mode: parallel connections")
    parser.add_argument("--prefer", default="minimal", choices=("minimal", "representation"))
    parser.add_argument("--stop-on-error", action="store_true")
    parser.add_argument("--limit", type=int, help="load only the first N resources")
    parser.add_argument("--progress", type=int, default=50_000)
    parser.add_argument("--json", type=Path, help="write the summary here (else stdout)")
    parser.add_argument("--note", default="", help="free text kept in the summary (the store)")
    args = parser.parse_args()

    meta = read_meta(args.data)
    total = min(meta["total"], args.limit) if args.limit else meta["total"]
    if args.mode == "repo":
        if not args.database_url:
            parser.error("--mode repo needs --database-url")
        summary = load_repo(args, total)
    else:
        if not args.url:
            parser.error("--mode http needs --url")
        summary = load_http(args, total)
    summary["note"] = args.note
    summary["command"] = shown([".venv/bin/python", *sys.argv])
    summary["data"] = str(args.data)
    summary["data_total"] = meta["total"]
    summary["members"] = meta.get("members")
    summary["loadavg"] = os.getloadavg()
    text = orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    if summary.get("failed_transactions"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
