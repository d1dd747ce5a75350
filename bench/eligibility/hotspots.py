"""Where the time of ``$ecm-eligibility`` goes, in-process (no HTTP): read vs evaluate, cProfile.

    .venv/bin/python bench/eligibility/hotspots.py --data DIR --database-url URL \\
        [--members 2000] [--batch 500] [--top 25] [--json FILE]

Opens the store with the server's repository (``server.store.sql.opening.open_store``) and,
over the first
``--members`` Patients of ``patients.txt`` (in the population run's order, sorted ids):

1. times the read alone: ``stored_records`` (the operation's batch reader: the Patients, one
   ``patient_resources`` statement per batch of 500, ``orjson.loads`` of every body) —
   milliseconds per member;
2. times ``Evaluator.evaluate`` alone on those records (already in memory);
3. runs both again under ``cProfile`` and prints the top functions by cumulative and by own
   time (``--top``).

Single-member figures (one ``stored_records`` call of one id, then ``evaluate``) are reported
too, over ``--single`` members. Nothing is written to the store.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from server.ecm.codes import Codes
    from server.ecm.evaluate import Evaluator
    from server.ecm.ruleset import rule_set
    from server.fhir.conformance import conformance
    from server.operations.ecm_eligibility import member_parameters, stored_records
    from server.search.service import build_search_service
    from server.settings import Settings
    from server.store.sql.opening import open_store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    meta = orjson.loads((args.data / "meta.json").read_bytes())
    as_of = date.fromisoformat(meta["asOf"])
    ids = sorted((args.data / "patients.txt").read_text().split())[: args.members]
    settings = Settings(database_url=args.database_url)
    repo = open_store(settings, build_search_service(settings))
    evaluator = Evaluator(rule_set(), Codes(conformance().terminology))
    out: dict[str, Any] = {"members": len(ids), "database": args.database_url.split(":")[0]}
    try:
        with repo.reader() as reader:  # warm: page cache, value set expansions
            for record in stored_records(reader, ids[:50]):
                evaluator.evaluate(record, as_of)

        with repo.reader() as reader:
            t0 = time.perf_counter()
            records = list(stored_records(reader, ids))
            read_s = time.perf_counter() - t0
        resources = sum(len(v) for r in records for v in r.by_type.values()) + len(records)
        t0 = time.perf_counter()
        for record in records:
            evaluator.evaluate(record, as_of)
        eval_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for record in records:
            member_parameters(evaluator.evaluate(record, as_of))
        render_s = time.perf_counter() - t0 - eval_s
        out["batch"] = {
            "read_ms_per_member": round(read_s * 1000 / len(records), 3),
            "evaluate_ms_per_member": round(eval_s * 1000 / len(records), 3),
            "render_ms_per_member (member mode only)": round(render_s * 1000 / len(records), 3),
            "resources_per_member": round(resources / len(records), 1),
        }
        del records

        singles: dict[str, list[float]] = {"read": [], "evaluate": [], "render": []}
        with repo.reader() as reader:
            for id in ids[: args.single]:
                t0 = time.perf_counter()
                record = next(stored_records(reader, [id]))
                t1 = time.perf_counter()
                answer = evaluator.evaluate(record, as_of)
                t2 = time.perf_counter()
                member_parameters(answer)
                t3 = time.perf_counter()
                singles["read"].append((t1 - t0) * 1000)
                singles["evaluate"].append((t2 - t1) * 1000)
                singles["render"].append((t3 - t2) * 1000)
        out["single_member_median_ms"] = {
            k: round(statistics.median(v), 3) for k, v in singles.items()
        }

        profile = cProfile.Profile()
        with repo.reader() as reader:
            profile.enable()
            for record in stored_records(reader, ids):
                evaluator.evaluate(record, as_of)
            profile.disable()
    finally:
        repo.close()
    for key in ("cumulative", "tottime"):
        buffer = io.StringIO()
        stats = pstats.Stats(profile, stream=buffer)
        stats.sort_stats(key).print_stats(args.top)
        text = buffer.getvalue()
        out[f"profile_{key}"] = text
        print(f"\n===== cProfile, by {key} =====\n{text}")
    print(
        orjson.dumps(
            {k: v for k, v in out.items() if not k.startswith("profile")},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
