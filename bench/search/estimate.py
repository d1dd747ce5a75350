"""``_total=accurate`` against ``_total=estimate`` on a loaded store, through the store's own
reader (no HTTP): the total each gives and its time, for a few broad searches.

    .venv/bin/python bench/search/estimate.py --database-url postgresql://.../ecm500000 \
        [--repeat 7] [--search 'Condition?clinical-status=active' ...]

The store must be migrated by this version of the server (its extended statistics analyzed:
``ANALYZE`` runs with the migration; autovacuum keeps them after).
"""

from __future__ import annotations

import argparse
import statistics
import time
from urllib.parse import parse_qsl

from server.search.parse import parse_search
from server.search.service import build_search_service
from server.settings import Settings
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import open_dialect

SEARCHES = (
    "Condition?clinical-status=active",
    "Observation?status=final",
    "Encounter?status=finished",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--search", action="append")
    args = parser.parse_args()
    context = build_search_service(Settings(database_url=args.database_url)).context
    repo = SqlRepository(open_dialect(args.database_url))
    try:
        for search in args.search or SEARCHES:
            type, _, query = search.partition("?")
            for total in ("accurate", "estimate"):
                params = [*parse_qsl(query), ("_total", total), ("_count", "0")]
                parsed = parse_search(type, params, context).query
                times: list[float] = []
                found = None
                with repo.reader() as reader:
                    for _ in range(args.repeat):
                        start = time.perf_counter()
                        found = reader.search(parsed).total
                        times.append((time.perf_counter() - start) * 1000)
                print(
                    f"{search} _total={total}: {found}, p50 {statistics.median(times):.1f} ms"
                    f" (min {min(times):.1f}, max {max(times):.1f})"
                )
    finally:
        repo.close()


if __name__ == "__main__":
    main()
