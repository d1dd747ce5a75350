"""The cost of refusing repeated JSON names, on the 100-entry transaction benchmark.

    .venv/bin/python bench/json_duplicates.py [--requests 150]

One in-process server (SQLite in a temp dir, the ASGI app called directly), the same
100-entry transaction Bundles as ``transaction_timing.py`` (``bundle_gen.py``); requests
alternate between the server as built and the same server with the duplicate-name pass
skipped (in a shuffled order, fixed seed, so no periodic effect such as a WAL checkpoint
falls on one of them), so both see the same machine load. Prints one JSON object: p50 and
mean of each, their ratio, and the pass's own cost on one Bundle.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundle_gen import bundle  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from server.api import json_body  # noqa: E402
from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


class _Skip:
    def decode(self, text: str) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    args = parser.parse_args()
    bodies = [orjson.dumps(bundle(100, seed)) for seed in range(1, 11)]
    checker, skip = json_body._CHECK, _Skip()
    times: dict[str, list[float]] = {"check": [], "skip": []}
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=f"sqlite:///{tmp}/bench.db", auth="off"))
        headers = {"Content-Type": "application/fhir+json"}
        with TestClient(app) as client:
            for i in range(10):  # warm-up
                client.post("/fhir", content=bodies[i % 10], headers=headers)
            modes = ["check", "skip"] * args.requests
            random.Random(28).shuffle(modes)
            for i, mode in enumerate(modes):
                json_body._CHECK = checker if mode == "check" else skip  # type: ignore[assignment]
                start = time.perf_counter()
                response = client.post("/fhir", content=bodies[i % 10], headers=headers)
                times[mode].append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.text[:200]
        json_body._CHECK = checker
    text = bodies[0].decode()
    n = 200
    pass_ms = timeit.timeit(lambda: checker.decode(text), number=n) / n * 1000
    out = {
        "requests_each": args.requests,
        "bundle_bytes": len(bodies[0]),
        "p50_ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "mean_ms": {k: round(statistics.fmean(v), 2) for k, v in times.items()},
        "p50_ratio": round(statistics.median(times["check"]) / statistics.median(times["skip"]), 4),
        "mean_ratio": round(statistics.fmean(times["check"]) / statistics.fmean(times["skip"]), 4),
        "duplicate_pass_ms": round(pass_ms, 3),
        "load_before": os.getloadavg()[0],
    }
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
