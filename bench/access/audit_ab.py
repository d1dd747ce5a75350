"""Per-request cost of the read audit in one process: the data of
``ab.py --policy relationships`` on a SQLite store, each scenario requested as the ECM
provider under ``RelationshipPolicy`` (grants and consent on) with the read audit ``off``,
``batch`` (the default) and ``sync``, and as the local operator with nothing on (the
baseline), interleaved in ABCD/DCBA rounds on one app (the mode is switched between rounds),
one client thread; median CPU ms per request of the whole process (``time.process_time``:
the server's thread and the audit writer included, so other processes on the machine change
it far less than the wall time), the wall-clock medians in the JSON lines.

    .venv/bin/python bench/access/audit_ab.py [--rounds 6] [--requests 40]
        [--database-url postgresql://...] [--analyze]

Without ``--database-url`` the store is a new SQLite file; a PostgreSQL database given must
be empty (``scripts/pg-test-cluster`` starts a throwaway one). ``--analyze`` (PostgreSQL):
``ANALYZE`` after the data is stored, so the planner's statistics (and so the plans of the
narrowed statements) do not depend on whether autovacuum has run yet.
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

ARMS = ("baseline", "grants", "grants+audit", "grants+audit-sync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database-url")
    parser.add_argument("--analyze", action="store_true")
    args = parser.parse_args()
    url = args.database_url or sqlite_url(Path(tempfile.mkdtemp()) / "store.db")
    ecm = Principal("bench-ecm", organization="Organization/ecm")
    who = {"principal": LOCAL}
    with fhir_client(
        url, principals=lambda r: who["principal"], policies=[RelationshipPolicy()]
    ) as c:
        trail = c.app.state.audit  # type: ignore[attr-defined]

        def arm(name: str) -> None:
            who["principal"] = LOCAL if name == "baseline" else ecm
            trail.mode = {"grants+audit": "batch", "grants+audit-sync": "sync"}.get(name, "off")

        for bundle in bundles("relationships"):
            assert c.post("/fhir", json=bundle).status_code == 200
        if args.analyze and url.startswith("postgresql"):
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        for paths in SCENARIOS.values():  # warm-up
            for name in ARMS:
                arm(name)
                for _ in range(args.requests):
                    c.get((paths or p1_reads())[0])
        rows = []
        for scenario, paths in SCENARIOS.items():
            path = (paths or p1_reads())[0]
            times: dict[str, list[float]] = {a: [] for a in ARMS}
            walls: dict[str, list[float]] = {a: [] for a in ARMS}
            for round in range(args.rounds):
                for name in ARMS if round % 2 == 0 else tuple(reversed(ARMS)):
                    arm(name)
                    assert c.get(path).status_code == 200
                    started, cpu = time.perf_counter(), time.process_time()
                    for _ in range(args.requests):
                        c.get(path)
                    times[name].append((time.process_time() - cpu) / args.requests * 1000)
                    walls[name].append((time.perf_counter() - started) / args.requests * 1000)
            medians = {a: statistics.median(times[a]) for a in ARMS}
            rows.append((scenario, medians))
            wall = {f"{a} wall": float(f"{statistics.median(walls[a]):.3f}") for a in ARMS}
            print(json.dumps({"scenario": scenario, **medians, **wall}))
        trail.flush()
    print(f"\nload (1 min): {os.getloadavg()[0]:.2f}\n")
    print("| scenario | " + " | ".join(f"{a} CPU ms" for a in ARMS)
          + " | audit vs grants | all vs baseline |")
    print("|---" + "|---:" * (len(ARMS) + 2) + "|")
    for scenario, m in rows:
        cells = " | ".join(f"{m[a]:.2f}" for a in ARMS)
        audit = m["grants+audit"] / m["grants"] - 1
        total = m["grants+audit"] / m["baseline"] - 1
        print(f"| {scenario} | {cells} | {audit:+.1%} | {total:+.1%} |")


if __name__ == "__main__":
    main()
