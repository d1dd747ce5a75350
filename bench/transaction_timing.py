"""Client-side latency of 100-entry transaction Bundles: sequential POSTs over one
keep-alive connection (httpx), after a warm-up. Prints one JSON object.

    .venv/bin/python bench/transaction_timing.py --url http://127.0.0.1:PORT/fhir \
        [--requests 200] [--warmup 20] [--entries 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_gen import bundle  # noqa: E402


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="FHIR base, e.g. http://127.0.0.1:8080/fhir")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--entries", type=int, default=100)
    args = parser.parse_args()

    # a few distinct bundles (fresh urn:uuids and identifiers), generated before timing
    bodies = [orjson.dumps(bundle(args.entries, seed)) for seed in range(1, 11)]
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    times: list[float] = []
    failures: dict[str, int] = {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60.0) as client:
        for i in range(args.warmup + args.requests):
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            r = client.post("/", content=body)
            _ = r.content
            elapsed = (time.perf_counter() - start) * 1000
            if i < args.warmup:
                if r.status_code != 200:
                    sys.exit(f"transaction failed in warm-up: {r.status_code} {r.text[:500]}")
                continue
            if r.status_code != 200:
                failures[str(r.status_code)] = failures.get(str(r.status_code), 0) + 1
            times.append(elapsed)
    ordered = sorted(times)
    total_s = sum(times) / 1000
    print(orjson.dumps({
        "requests": len(times), "warmup": args.warmup, "entries": args.entries,
        "bundle_bytes": len(bodies[0]), "non_2xx": sum(failures.values()), "failures": failures,
        "rps": len(times) / total_s if total_s else None,
        "latency_ms": {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95),
                       "p99": percentile(ordered, 99), "min": ordered[0], "max": ordered[-1],
                       "mean": statistics.fmean(ordered)},
    }).decode())


if __name__ == "__main__":
    main()
