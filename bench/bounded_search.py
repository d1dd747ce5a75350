"""The cost of the byte bound and of the time budget on an ordinary search page.

    .venv/bin/python bench/bounded_search.py [--database-url URL] [--rounds 2000]

One store (SQLite in a temp dir, or an empty PostgreSQL database) with 1,000 Patients of
about 1 KB; a page of 20 (``Patient?_count=20``, no criteria, and ``Patient?gender=female``)
read straight from the repository (no HTTP), in four modes interleaved in a shuffled order
(fixed seed): unbounded or bounded by ``max_response_bytes`` (4 MiB: the statement selects
each body's length and inlines bodies up to the row's share), and with or without the query
time budget (SQLite: a progress handler; PostgreSQL: ``SET``/``RESET statement_timeout``
around the search). Prints one JSON object: the median µs per page of each mode.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402

from server.app import create_app  # noqa: E402
from server.search.parse import parse_search  # noqa: E402
from server.settings import Settings  # noqa: E402

BOUND = 4 * 1024 * 1024 - 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url)
        app = create_app(settings)
        with TestClient(app) as client:
            for start in range(0, 1000, 200):
                entries = [
                    {
                        "resource": {
                            "resourceType": "Patient",
                            "gender": "female" if n % 2 else "male",
                            "name": [{"family": f"Family{n}", "given": ["Given", "Middle"]}],
                            "address": [{"line": ["1 Main St"] * 8, "city": "Fresno"}],
                            "telecom": [{"system": "phone", "value": f"555-{n:04}"}] * 6,
                        },
                        "request": {"method": "POST", "url": "Patient"},
                    }
                    for n in range(start, start + 200)
                ]
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
                response = client.post(
                    "/fhir", content=orjson.dumps(bundle),
                    headers={"Content-Type": "application/fhir+json"},
                )  # fmt: skip
                assert response.status_code == 200, response.text[:300]
            repo = app.state.store
            dialect = repo.sql_dialect
            context = app.state.services.search.context
            queries = {
                "all": parse_search("Patient", [("_count", "20")], context).query,
                "gender": parse_search(
                    "Patient", [("gender", "female"), ("_count", "20")], context
                ).query,
            }
            modes = [(b, t) for b in (False, True) for t in (False, True)]
            times: dict[str, list[float]] = {}
            order = [(q, m) for q in queries for m in modes] * args.rounds
            random.Random(28).shuffle(order)
            budget = dialect.query_budget_ms
            for name, (bounded, timed) in order:
                query = queries[name]
                if bounded:
                    query = replace(query, max_bytes=BOUND)
                dialect.query_budget_ms = budget if timed else 0
                with repo.reader() as reader:
                    start_ns = time.perf_counter_ns()
                    page = reader.search(query)
                    took = time.perf_counter_ns() - start_ns
                assert len(page.items) == 20
                key = f"{name} bounded={bounded} budget={timed}"
                times.setdefault(key, []).append(took / 1000)
            dialect.query_budget_ms = budget
    print(
        orjson.dumps(
            {k: round(statistics.median(v), 1) for k, v in sorted(times.items())},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
