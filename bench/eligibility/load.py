"""Load a generated population (``generate.py``) into a fresh store.

* ``--mode repo`` (the bulk load; the default): the server's repository opened in this process
  (``server.store.open_store``, which also applies the migrations and records the search
  parameter state), every resource written with ``Unit.create`` under its generated id,
  ``--batch`` resources per database transaction. This is the server's own write path — stored
  JSON, history row and search index rows (``search_reference`` included, which the streaming
  read of ``$ecm-eligibility`` uses) — without HTTP, validation or authorisation; the same
  loader as ``bench/search/load.py --mode repo``.

      .venv/bin/python bench/eligibility/load.py --data DIR --database-url sqlite:////tmp/e.db

* ``--mode http``: transaction Bundles of ``--entries`` ``PUT Type/id`` entries
  (``Prefer: return=minimal``) posted to a running server, which validates every resource
  (base, profiles, invariants, terminology) as any client write. Slower; used with ``--limit``
  to show that the generated data passes the server's validation.

      .venv/bin/python bench/eligibility/load.py --mode http --data DIR \\
          --url http://127.0.0.1:8080/fhir --limit 5000

The summary (one JSON object: resources, seconds, resources/s, per-batch percentiles, store
size) goes to stdout and ``--json FILE``; progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return round(ordered[k], 1)


def resources(data: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    meta = orjson.loads((data / "meta.json").read_bytes())
    n = 0
    for name in meta["files"]:
        with (data / name).open("rb") as handle:
            for line in handle:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield orjson.loads(line)


def chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def store_bytes(database_url: str) -> int | None:
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


class Progress:
    def __init__(self, total: int, every: int) -> None:
        self.total, self.every, self.done = total, every, 0
        self.started = time.monotonic()
        self._next = every

    def add(self, n: int) -> None:
        self.done += n
        if self.done >= self._next or self.done == self.total:
            self._next += self.every
            s = time.monotonic() - self.started
            print(
                f"load: {self.done:,} of {self.total:,} resources, {s:.0f} s, "
                f"{self.done / s:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )


def load_repo(args: argparse.Namespace, total: int) -> dict[str, Any]:
    from server.settings import Settings
    from server.store import open_store

    repo = open_store(Settings(database_url=args.database_url))
    dialect = repo.sql_dialect
    if dialect.name == "sqlite":  # the loading connection only: keep the growing indexes cached
        with dialect.reading() as conn:
            conn.execute(f"PRAGMA cache_size = -{int(args.cache_mib) * 1024}")
    first = next(resources(args.data, 1))
    with repo.reader() as reader:
        if reader.read(first["resourceType"], first["id"]) is not None:
            raise SystemExit("load: the store already holds this data set; use a fresh store")
    progress = Progress(total, args.progress)
    batches: list[float] = []
    started = time.monotonic()
    try:
        for chunk in chunks(resources(args.data, args.limit), args.batch):

            def job(unit: Any, chunk: list[dict[str, Any]] = chunk) -> None:
                for resource in chunk:
                    unit.create(resource["resourceType"], resource, id=resource["id"])

            t0 = time.perf_counter()
            with dialect.writing() as conn:
                repo.run_jobs(conn, [job])
            batches.append((time.perf_counter() - t0) * 1000)
            progress.add(len(chunk))
    finally:
        repo.close()
    seconds = time.monotonic() - started
    ordered = sorted(batches)
    return {
        "mode": "repo",
        "resources": progress.done,
        "seconds": round(seconds, 1),
        "resources_per_s": round(progress.done / seconds, 1),
        "batch": args.batch,
        "batch_ms": {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95)},
    }


def load_http(args: argparse.Namespace, total: int) -> dict[str, Any]:
    import httpx

    headers = {
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
        "Prefer": "return=minimal",
    }
    progress = Progress(total, args.progress)
    times: list[float] = []
    failures: list[str] = []
    started = time.monotonic()
    with httpx.Client(base_url=args.url, headers=headers, timeout=600.0) as http:
        for chunk in chunks(resources(args.data, args.limit), args.entries):
            body = orjson.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "fullUrl": f"{r['resourceType']}/{r['id']}",
                            "resource": r,
                            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                        }
                        for r in chunk
                    ],
                }
            )
            t0 = time.perf_counter()
            response = http.post("/", content=body)
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:2000]}")
                if args.stop_on_error:
                    break
            progress.add(len(chunk))
    seconds = time.monotonic() - started
    ordered = sorted(times)
    if failures:
        print(f"load: {len(failures)} transaction(s) failed; first: {failures[0]}", file=sys.stderr)
    return {
        "mode": "http",
        "url": args.url,
        "resources": progress.done,
        "seconds": round(seconds, 1),
        "resources_per_s": round(progress.done / seconds, 1),
        "entries": args.entries,
        "transactions": len(times),
        "failed_transactions": len(failures),
        "transaction_ms": {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95)},
        "first_failure": failures[0] if failures else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder written by generate.py")
    parser.add_argument("--mode", choices=("repo", "http"), default="repo")
    parser.add_argument("--database-url", help="repo mode: sqlite:///... or postgresql://...")
    parser.add_argument("--batch", type=int, default=2000, help="repo mode: resources per commit")
    parser.add_argument("--cache-mib", type=int, default=1024, help="repo mode, SQLite: page cache")
    parser.add_argument("--url", help="http mode: FHIR base, e.g. http://127.0.0.1:8080/fhir")
    parser.add_argument("--entries", type=int, default=500, help="http mode: entries per Bundle")
    parser.add_argument("--stop-on-error", action="store_true")
    parser.add_argument("--limit", type=int, help="only the first N resources")
    parser.add_argument("--progress", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()

    meta = orjson.loads((args.data / "meta.json").read_bytes())
    total = min(meta["total"], args.limit) if args.limit else meta["total"]
    if args.mode == "repo":
        if not args.database_url:
            parser.error("--mode repo needs --database-url")
        summary = load_repo(args, total)
        summary["database"] = args.database_url.split(":", 1)[0]
        summary["store_bytes"] = store_bytes(args.database_url)
    else:
        if not args.url:
            parser.error("--mode http needs --url")
        summary = load_http(args, total)
    summary["members"] = meta["members"] if not args.limit else None
    summary["data"] = str(args.data)
    summary["command"] = " ".join([".venv/bin/python", *sys.argv]).replace(str(ROOT) + "/", "")
    summary["loadavg_after"] = os.getloadavg()
    text = orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    if summary.get("failed_transactions"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
