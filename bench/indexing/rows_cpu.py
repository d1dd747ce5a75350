"""CPU time of the search indexing of a write (``Indexer.rows``) per resource, in process, on
NDJSON data (``bench/eligibility/generate.py``'s output): the server's own indexer (built from
default settings, as the import's); every resource of the ``--lines`` lines after the first
``--warm`` indexed once, after a warm-up pass over those first lines (each resource indexed
once, as in an import, so what is remembered across resources counts only as it would
there). Prints the rows per resource, the CPU per resource and a digest of every row (equal
digests: the same rows in the same order). Measures any checkout from outside (put first on
the import path), so a before and after run interleaved in one window:

    .venv/bin/python bench/indexing/rows_cpu.py <checkout> --data DIR [--lines 30000] [--warm 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout")
    parser.add_argument("--data", required=True)
    parser.add_argument("--lines", type=int, default=30000)
    parser.add_argument("--warm", type=int, default=2000)
    args = parser.parse_args()
    sys.path.insert(0, args.checkout)
    from server.search.service import build_search_service
    from server.settings import Settings

    indexer = build_search_service(Settings(database_url="sqlite:///:memory:")).indexer
    resources = []
    for path in sorted(Path(args.data).glob("*.ndjson")):
        with path.open("rb") as lines:
            for line in lines:
                resources.append(json.loads(line))
                if len(resources) >= args.warm + args.lines:
                    break
    warm, resources = resources[: args.warm], resources[args.warm :]
    for resource in warm:
        indexer.rows(resource["resourceType"], resource)
    found = []
    cpu = time.process_time()
    for resource in resources:
        found.append(indexer.rows(resource["resourceType"], resource))
    per = (time.process_time() - cpu) / len(resources) * 1000
    rows = sum(one.count() for one in found)
    digest = hashlib.sha256(repr([one.tables() for one in found]).encode()).hexdigest()
    print(
        json.dumps(
            {
                "checkout": args.checkout,
                "resources": len(resources),
                "rows_per_resource": round(rows / len(resources), 2),
                "cpu_ms_per_resource": round(per, 4),
                "rows_sha256": digest[:16],
            }
        )
    )


if __name__ == "__main__":
    main()
