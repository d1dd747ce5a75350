"""CPU per write with the search index rows, two checkouts in alternation in one window:
each run a fresh process and SQLite store (``tests.support.fhir_client``, local operator),
``--writes`` Observations created one request each, then updated once each (a new subject:
every index row rewritten), then ``--bundles`` transactions of 100 creates; median CPU µs
per resource of the whole process (``time.process_time``) per phase, per checkout.

    .venv/bin/python bench/indexing/write_cpu.py --a /path/to/before --b . [--runs 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CODES = "urn:bench:codes"


def observation(id: str, member: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": CODES, "code": f"c{len(id) % 7}"}]},
        "subject": {"reference": f"Patient/{member}"},
        "performer": [{"reference": "Organization/ecm"}],
        "effectiveDateTime": "2026-01-02",
        "valueQuantity": {"value": 3, "unit": "mg", "system": "http://unitsofmeasure.org"},
    }


def one_run(writes: int, bundles: int) -> dict[str, float]:
    from tests.support import fhir_client, sqlite_url

    url = sqlite_url(Path(tempfile.mkdtemp()) / "store.db")
    out: dict[str, float] = {}
    with fhir_client(url) as c:
        for n in range(20):  # warm-up
            assert c.put(f"/fhir/Observation/w{n}", json=observation(f"w{n}", "p0")).status_code
        start = time.process_time()
        for n in range(writes):
            r = c.put(f"/fhir/Observation/o{n}", json=observation(f"o{n}", f"p{n % 50}"))
            assert r.status_code == 201, r.text
        out["create"] = (time.process_time() - start) / writes * 1e6
        start = time.process_time()
        for n in range(writes):
            r = c.put(f"/fhir/Observation/o{n}", json=observation(f"o{n}", f"p{n % 50 + 1}"))
            assert r.status_code == 200, r.text
        out["update"] = (time.process_time() - start) / writes * 1e6
        start = time.process_time()
        for b in range(bundles):
            entries = [
                {
                    "resource": observation(f"t{b}-{n}", f"p{n % 50}"),
                    "request": {"method": "PUT", "url": f"Observation/t{b}-{n}"},
                }
                for n in range(100)
            ]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            assert c.post("/fhir", json=bundle).status_code == 200
        out["transaction"] = (time.process_time() - start) / (bundles * 100) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path)
    parser.add_argument("--b", type=Path)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--writes", type=int, default=400)
    parser.add_argument("--bundles", type=int, default=10)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.writes, args.bundles)))
        return
    assert args.a and args.b
    results: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    for run in range(args.runs):
        for which in ("a", "b") if run % 2 == 0 else ("b", "a"):
            checkout = (args.a if which == "a" else args.b).resolve()
            out = subprocess.run(
                [sys.executable, "-c", "import runpy, sys; sys.path.insert(0, sys.argv[1]);"
                 " sys.argv = [sys.argv[2], *sys.argv[3:]]; runpy.run_path(sys.argv[0],"
                 " run_name='__main__')", str(checkout), __file__, "--one",
                 "--writes", str(args.writes), "--bundles", str(args.bundles)],
                cwd=checkout, capture_output=True, text=True, check=True,
            )
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            results[which].append(figures)
            print(json.dumps({"run": run, "checkout": which, **figures}), flush=True)
    print("\n| phase | a µs/resource | b µs/resource | b vs a |\n|---|---:|---:|---:|")
    for phase in ("create", "update", "transaction"):
        a = statistics.median(r[phase] for r in results["a"])
        b = statistics.median(r[phase] for r in results["b"])
        print(f"| {phase} | {a:.0f} | {b:.0f} | {100 * (b / a - 1):+.1f}% |")


if __name__ == "__main__":
    main()
