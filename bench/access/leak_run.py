"""The long run of the property-based leak test (``tests/contract/test_access_leak_property.py``):
generated models judged by the test's independent oracle until at least ``--requests`` HTTP
requests were answered and checked (seeding included; the examples of a shorter run are
replayed first), on a SQLite store (``--database-url`` for another).
Derandomised: the same examples every run. Prints one JSON line: examples, requests, seconds.

    .venv/bin/python bench/access/leak_run.py [--requests 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from server.auth.principal import LOCAL, Principal  # noqa: E402
from server.auth.relationships import Matrix, RelationshipPolicy  # noqa: E402
from tests.contract import test_access_leak_property as leak  # noqa: E402
from tests.support import (  # noqa: E402
    Acting,
    clear_store,
    extra_operations,
    fhir_client,
    put,
    sqlite_url,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    url = args.database_url or sqlite_url(Path(tempfile.mkdtemp()) / "leak.db")
    who = Acting()
    policy = RelationshipPolicy(Matrix(plans=(leak.PLAN,)))
    examples = {"count": 0}
    started = time.monotonic()
    sent = {"requests": 0}

    def count(request: object) -> None:
        sent["requests"] += 1

    with (
        fhir_client(url, principals=who, policies=[policy], access_safety_net="fail") as client,
        extra_operations(client, leak.LIST_CONDITIONS),
    ):
        client.event_hooks["request"].append(count)

        def once(model: leak.Model) -> None:
            clear_store(url)
            leak.build(model)
            who.as_(LOCAL)
            for resource in model.resources.values():
                assert put(client, resource).status_code == 201
            for o in leak.ORGS:
                who.as_(Principal(f"client-{o}", organization=f"Organization/{o}"))
                leak.judge(client, model, o, who)
            examples["count"] += 1

        def run(count: int) -> None:
            settings(
                max_examples=count,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(leak.models)(once))()

        run(2)  # the requests one example makes, to size the run
        per_example = max(1, sent["requests"] // max(1, examples["count"]))
        while sent["requests"] < args.requests:
            missing = args.requests - sent["requests"]
            run(examples["count"] + math.ceil(missing / per_example) + 1)
    print(
        json.dumps(
            {
                "examples": examples["count"],
                "requests": sent["requests"],
                "violations": 0,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
