"""Per-request cost of the care-relationship policy in one process, without the HTTP server
and load generator: the data of ``ab.py --policy relationships`` on a SQLite store, each
scenario requested alternately as the local operator (nothing narrowed) and as the ECM
provider under ``RelationshipPolicy`` (ABBA rounds, one thread), median ms per request.

    .venv/bin/python bench/access/inprocess.py [--rounds 6] [--requests 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from access.ab import SCENARIOS, bundles, p1_reads  # noqa: E402

from server.auth.principal import LOCAL, Principal  # noqa: E402
from server.auth.relationships import RelationshipPolicy  # noqa: E402
from tests.support import fhir_client, sqlite_url  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    url = sqlite_url(Path(tempfile.mkdtemp()) / "store.db")
    ecm = Principal("bench-ecm", organization="Organization/ecm")
    who = {"principal": LOCAL}
    policies = [RelationshipPolicy()]
    with fhir_client(url, principals=lambda r: who["principal"], policies=policies) as c:
        for bundle in bundles("relationships"):
            assert c.post("/fhir", json=bundle).status_code == 200
        for paths in SCENARIOS.values():  # warm-up: caches, the WAL of the load checkpointed
            for principal in (LOCAL, ecm) * 3:
                who["principal"] = principal
                for _ in range(args.requests):
                    c.get((paths or p1_reads())[0])
        rows = []
        for name, paths in SCENARIOS.items():
            path = (paths or p1_reads())[0]
            times: dict[str, list[float]] = {"none": [], "relationships": []}
            order = ["none", "relationships", "relationships", "none"] * args.rounds
            for policy in order[: 2 * args.rounds]:
                who["principal"] = LOCAL if policy == "none" else ecm
                assert c.get(path).status_code == 200
                started = time.perf_counter()
                for _ in range(args.requests):
                    c.get(path)
                times[policy].append((time.perf_counter() - started) / args.requests * 1000)
            none, related = (statistics.median(times[p]) for p in ("none", "relationships"))
            rows.append((name, none, related))
            print(json.dumps({"scenario": name, "none_ms": none, "relationships_ms": related}))
    print(f"\nload (1 min): {os.getloadavg()[0]:.2f}\n")
    print("| scenario | none ms (median) | relationships ms (median) | slower |")
    print("|---|---:|---:|---:|")
    for name, none, related in rows:
        print(f"| {name} | {none:.2f} | {related:.2f} | {related / none - 1:.1%} |")


if __name__ == "__main__":
    main()
