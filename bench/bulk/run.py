"""Bulk data figures: ``$export`` of a store (resources/s, peak RSS, WAL size during the export)
and NDJSON import into a fresh store (resources/s).

    .venv/bin/python bench/bulk/run.py export --database-url sqlite:////tmp/store.db [--writes 20]
    .venv/bin/python bench/bulk/run.py import --data DIR --database-url sqlite:////tmp/new.db \
        [--workers N] [--checkout PATH]

The export runs in this process through the whole application (``create_app``, a system-level
``$export`` as the local operator, polled every 0.2 s); a sampler thread records the process's
resident memory and the size of the SQLite WAL file every 0.1 s; with ``--writes N`` the
polling loop also PUTs N resources between two polls, so the WAL grows unless it can be
checkpointed while the export reads. Peak RSS is the process's
``VmHWM`` (it includes the application's start-up: its baseline is printed too, and the
SQLite file's pages mapped by ``mmap_size``, up to 256 MiB: ``RssAnon``, the process's own
memory, is printed apart). The import
runs ``server.bulk.importer`` (the ``calaim-fhir import`` command's code) on ``DIR``'s
``*.ndjson`` files, with ``--workers`` indexing processes (default: the importer's); besides
resources/s it reports the CPU time per resource of this process (the writer) and of its
worker processes and the bytes the writer wrote per resource (the store's WAL and its
checkpoints), measured from the first pass's start (the application's start-up left
out). ``--checkout`` imports another checkout's code (put first on the import path: a
before/after in one window). Each prints one JSON object; the 1-minute load average before
and after is part of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _wal(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite:///"):
        return None
    return Path(database_url.removeprefix("sqlite:///") + "-wal")


def export(database_url: str, writes: int = 0) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from server.app import create_app
    from server.settings import Settings

    folder = tempfile.mkdtemp(prefix="bulk-export-")
    settings = Settings(
        database_url=database_url,
        auth="off",
        export_dir=folder,
        export_min_poll_seconds=0,
        base_url="http://127.0.0.1:8080/fhir",
    )
    load_before = os.getloadavg()[0]
    wal = _wal(database_url)
    samples: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            size = wal.stat().st_size if wal is not None and wal.exists() else 0
            samples.append((_status("VmRSS"), size, _status("RssAnon")))

    app = create_app(settings)

    async def loopback(scope: Any, receive: Any, send: Any) -> None:
        """The in-process client as the loopback connection it is (auth off answers only
        loopback requests)."""
        if scope["type"] == "http":
            scope = {**scope, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)

    loopback.state = app.state  # type: ignore[attr-defined]
    with TestClient(loopback) as client:
        baseline, baseline_anon = _status("VmRSS"), _status("RssAnon")
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        response = client.get(
            "/fhir/$export",
            headers={"Prefer": "respond-async", "Accept": "application/fhir+json"},
        )
        assert response.status_code == 202, response.text
        status = "/fhir" + response.headers["content-location"].split("/fhir", 1)[1]
        written = 0
        while (answer := client.get(status)).status_code == 202:
            time.sleep(0.2)
            for _ in range(writes):  # writes go on while the export runs
                basic = {
                    "resourceType": "Basic",
                    "id": f"bulk-bench-{written % 50}",
                    "code": {"text": f"write {written}"},
                }
                put = client.put(
                    f"/fhir/Basic/{basic['id']}",
                    json=basic,
                    headers={"Content-Type": "application/fhir+json"},
                )
                assert put.status_code in (200, 201), put.text
                written += 1
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        assert answer.status_code == 200, answer.text
        manifest = answer.json()
    count = sum(e["count"] for e in manifest["output"])
    size = sum(p.stat().st_size for p in Path(folder).rglob("*.ndjson"))
    return {
        "what": "export",
        "database_url": database_url,
        "resources": count,
        "files": len(manifest["output"]),
        "ndjson_bytes": size,
        "seconds": round(seconds, 1),
        "resources_per_s": round(count / seconds, 1),
        "rss_baseline_mib": round(baseline / 1024, 1),
        "rss_max_during_mib": round(max((r for r, _, _ in samples), default=0) / 1024, 1),
        "peak_rss_mib": round(_status("VmHWM") / 1024, 1),
        # the process's own memory, without the database file's mapped pages (mmap_size)
        "rss_anon_baseline_mib": round(baseline_anon / 1024, 1),
        "rss_anon_max_during_mib": round(max((a for _, _, a in samples), default=0) / 1024, 1),
        "wal_max_mib": round(max((w for _, w, _ in samples), default=0) / 2**20, 2),
        "wal_samples": len(samples),
        "writes_during": written,
        "export_dir": folder,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def _written() -> int:
    """Bytes this process has written through system calls (``/proc/self/io`` ``wchar``):
    the store's WAL and its checkpoints, whatever the page cache keeps."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def import_(data: Path, database_url: str, batch: int, workers: int | None) -> dict[str, Any]:
    import inspect
    import resource

    from server.bulk import importer
    from server.settings import Settings

    files = sorted(data.glob("*.ndjson"))
    load_before = os.getloadavg()[0]
    started: list[float] = []

    def start(name: str, total: int) -> None:
        if not started:
            started.extend((time.perf_counter(), time.process_time(), _written()))

    options: dict[str, Any] = {"progress": importer.Progress(start=start)}
    if workers is not None and "workers" in inspect.signature(importer.run_import).parameters:
        options["workers"] = workers
    report = importer.run(
        files,
        Settings(database_url=database_url, auth="off"),
        batch=batch,
        state_file=None,
        **options,
    )
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    written = _written() - started[2]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "what": "import",
        "database_url": database_url,
        "code": importer.__file__,
        "lines": report.lines,
        "stored": report.stored,
        "rejected": len(report.rejected),
        "unresolved": report.unresolved_count,
        "seconds": round(report.seconds, 1),
        "resources_per_s": round(report.stored / report.seconds, 1),
        "import_resources_per_s": round(report.stored / wall, 1),
        "writer_cpu_ms_per_resource": round(cpu / report.stored * 1000, 3),
        "written_kib_per_resource": round(written / report.stored / 1024, 2),
        "workers_cpu_ms_per_resource": round(
            (children.ru_utime + children.ru_stime) / report.stored * 1000, 3
        ),
        "batch": batch,
        "workers": workers,
        "peak_rss_mib": round(_status("VmHWM") / 1024, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("export", "import"))
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--data", type=Path, help="import: a folder of *.ndjson")
    parser.add_argument("--batch", type=int, default=500, help="import: lines per transaction")
    parser.add_argument("--workers", type=int, help="import: indexing worker processes")
    parser.add_argument("--checkout", type=Path, help="import: the code of another checkout")
    parser.add_argument(
        "--writes", type=int, default=0, help="export: PUTs between two polls (0.2 s apart)"
    )
    args = parser.parse_args()
    if args.checkout is not None:
        sys.path.insert(0, str(args.checkout.resolve()))
    if args.what == "export":
        result = export(args.database_url, args.writes)
    else:
        if args.data is None:
            parser.error("import needs --data")
        result = import_(args.data, args.database_url, args.batch, args.workers)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
