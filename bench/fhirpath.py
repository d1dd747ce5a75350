"""FHIRPath engine cost: search index extraction and invariant evaluation, for any checkout.

    # one measurement of one checkout (JSON on stdout)
    .venv/bin/python bench/fhirpath.py measure --checkout . --data /tmp/ecm [--repeat 5]
    # A/B: checkouts measured in fresh processes, interleaved, the order alternating per round
    .venv/bin/python bench/fhirpath.py ab --base /tmp/base --new . --data /tmp/ecm [--rounds 6]
    # extraction only, one process: this engine against the search compiler before it
    .venv/bin/python bench/fhirpath.py pair --old-module /tmp/base/server/search/fhirpath.py \
        --data /tmp/ecm [--rounds 40]

The data is every resource of ``examples/`` (bundle entries unpacked) plus the
``resources-*.ndjson`` of ``--data`` (``bench/search/generate.py --total 3000 --out DIR``:
a synthetic ECM population). Three timings, best of ``--repeat`` passes after a warm-up
pass that compiles everything:

* ``rows``: ``Indexer.rows`` of every resource (extraction plus row normalisation, the write
  path's index work);
* ``extract``: the compiled SearchParameter expressions of every resource's type alone;
* ``invariants``: every constraint of the checkout's ``profiles/structuredefinitions`` on
  every resource of its type (compile once, evaluate and decide ``holds``).

Counts (rows, extracted values, invariant evaluations and how many hold) are printed with the
timings: two checkouts that disagree on them do not compute the same thing. The checkout is
imported from ``--checkout`` (put first on ``sys.path``), so one interpreter serves both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _resources(data: Path | None) -> list[dict[str, Any]]:
    """The examples (``tests/example_resources.py`` of this repository, loaded by path: the
    measured checkout may not have it) and the generated data, Bundles unpacked."""
    spec = importlib.util.spec_from_file_location("example_resources", _ROOT / "tests" /
                                                  "example_resources.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = [r for r in module.example_resources() if r["resourceType"] != "Bundle"]
    if data is not None:
        for path in sorted(data.glob("resources-*.ndjson")):
            out.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return out


_ROOT = Path(__file__).resolve().parents[1]


def _constraints(checkout: Path) -> Iterator[tuple[str, str]]:
    """(context type, expression) of every invariant of the profiles."""
    for path in sorted((checkout / "profiles" / "structuredefinitions").glob("*.json")):
        definition = json.loads(path.read_bytes())
        for element in definition.get("differential", {}).get("element", []):
            for constraint in element.get("constraint") or []:
                yield element["path"], constraint["expression"]


_TABLES = ("token", "string", "reference", "date", "number", "quantity", "uri")


def _best(repeat: int, work: Callable[[], Any]) -> tuple[float, float]:
    """The shortest wall time and the shortest CPU time of ``repeat`` passes."""
    work()  # warm-up: compile, fill caches
    wall, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(wall), min(cpu)


def _timings(name: str, best: tuple[float, float]) -> dict[str, float]:
    return {f"{name}_s": best[0], f"{name}_cpu_s": best[1]}


def measure(checkout: Path, data: Path | None, repeat: int) -> dict[str, Any]:
    sys.path.insert(0, str(checkout))
    from zoneinfo import ZoneInfo

    import server

    assert Path(server.__file__).resolve().parent == (checkout / "server").resolve()
    from server.search.index import Indexer
    from server.search.registry import load_registry

    try:  # the one engine
        from server.fhir.fhirpath import compile_fhirpath, holds
    except ImportError:  # before it: the invariant front end
        from server.fhir.fhirpath_values import holds  # type: ignore[no-redef]
        from server.fhir.invariants import compile_fhirpath  # type: ignore[no-redef]

    resources = _resources(data)
    indexer = Indexer(load_registry(checkout / "profiles" / "searchparameters"), "http://localhost/fhir",
                      ZoneInfo("America/Los_Angeles"))  # fmt: skip
    typed = [(r["resourceType"], r) for r in resources]
    counts: dict[str, int] = {}

    def rows() -> None:
        total = 0
        for type, resource in typed:
            out = indexer.rows(type, resource)
            total += sum(len(getattr(out, table)) for table in _TABLES)
        counts["rows"] = total

    rows()  # builds the plans
    extractors = {
        type: [plan.extractor for plan in plans]
        for type, plans in indexer._plans.items()  # noqa: SLF001 - the compiled expressions
    }
    work = [(extractors.get(type, []), resource) for type, resource in typed]

    def extract() -> None:
        total = 0
        for plans, resource in work:
            for extractor in plans:
                total += len(extractor(resource, resource))
        counts["values"] = total

    by_type: dict[str, list[dict[str, Any]]] = {}
    for type, resource in typed:
        by_type.setdefault(type, []).append(resource)
    invariants = [
        (compile_fhirpath(expression, context), by_type.get(context, []))
        for context, expression in _constraints(checkout)
    ]

    def evaluate() -> None:
        evaluations = held = 0
        for evaluator, targets in invariants:
            for resource in targets:
                evaluations += 1
                held += holds(evaluator(resource, resource))
        counts["evaluations"], counts["held"] = evaluations, held

    return {
        "checkout": str(checkout),
        "resources": len(resources),
        "invariants": len(invariants),
        **_timings("rows", _best(repeat, rows)),
        **_timings("extract", _best(repeat, extract)),
        **_timings("invariants", _best(repeat, evaluate)),
        **counts,
    }


_MEASURES = ("rows", "extract", "invariants")


def ab(base: Path, new: Path, data: Path | None, rounds: int, repeat: int) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
    load_before = os.getloadavg()
    started = time.time()
    for number in range(rounds):
        order = [("base", base), ("new", new)]
        if number % 2:
            order.reverse()
        for label, checkout in order:
            command = [sys.executable, __file__, "measure", "--checkout", str(checkout)]
            command += ["--repeat", str(repeat)] + (["--data", str(data)] if data else [])
            result = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
            result["load1"] = os.getloadavg()[0]
            runs[label].append(result)
            print(
                f"round {number + 1} {label:4}: "
                + "  ".join(f"{key} {result[key + '_cpu_s'] * 1e3:7.1f}" for key in _MEASURES)
                + f" ms CPU  load {result['load1']:.2f}",
                flush=True,
            )
    print(f"\nload average before {load_before}, after {os.getloadavg()}, "
          f"{time.time() - started:.0f} s, {os.cpu_count()} cores")  # fmt: skip
    for key in ("resources", "invariants", "rows", "values", "evaluations", "held"):
        values = {label: {run[key] for run in rs} for label, rs in runs.items()}
        same = "same" if values["base"] == values["new"] else "DIFFERENT"
        print(f"{key:12} base {sorted(values['base'])} new {sorted(values['new'])} {same}")
    print(f"\n{'median of ' + str(rounds) + ' rounds':28} {'base':>10} {'new':>10} {'new/base':>9}")
    for key in _MEASURES:
        for kind, suffix in (("wall", "_s"), ("CPU", "_cpu_s")):
            b = statistics.median(run[key + suffix] for run in runs["base"]) * 1e3
            n = statistics.median(run[key + suffix] for run in runs["new"]) * 1e3
            print(f"{key + ' ' + kind + ' (ms)':28} {b:10.2f} {n:10.2f} {n / b:9.3f}")


def pair(old_module: Path, data: Path | None, rounds: int) -> None:
    """Extraction by this checkout's engine against a SearchParameter compiler module of
    another checkout (``server/search/fhirpath.py`` before the one engine), in one process on
    the same data, alternating which runs first: CPU per pass."""
    from server.fhir.fhirpath import compile_search_expression
    from server.search.registry import load_registry

    spec = importlib.util.spec_from_file_location("old_fhirpath", old_module)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_fhirpath"] = old
    spec.loader.exec_module(old)
    registry = load_registry()
    resources = _resources(data)

    def plans(compile: Callable[[str, str], Any]) -> list[tuple[list[Any], dict[str, Any]]]:
        by_type: dict[str, list[Any]] = {}
        for resource in resources:
            type = resource["resourceType"]
            if type not in by_type:
                by_type[type] = []
                for param in registry.indexed(type).values():
                    try:
                        by_type[type].append(compile(param.expression, type))
                    except ValueError:
                        continue
        return [(by_type[r["resourceType"]], r) for r in resources]

    def run(work: list[tuple[list[Any], dict[str, Any]]]) -> int:
        return sum(len(e(r, r)) for extractors, r in work for e in extractors)

    works = {"old": plans(old.compile_expression), "new": plans(compile_search_expression)}
    assert run(works["old"]) == run(works["new"])
    times: dict[str, list[float]] = {"old": [], "new": []}
    for number in range(rounds):
        for label in ("old", "new") if number % 2 == 0 else ("new", "old"):
            started = time.process_time()
            run(works[label])
            times[label].append(time.process_time() - started)
    old_ms, new_ms = (statistics.median(times[k]) * 1e3 for k in ("old", "new"))
    print(f"extract CPU median of {rounds}: old {old_ms:.1f} ms, new {new_ms:.1f} ms, "
          f"new/old {new_ms / old_ms:.3f}; load {os.getloadavg()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("measure")
    one.add_argument("--checkout", type=Path, default=_ROOT)
    one.add_argument("--data", type=Path)
    one.add_argument("--repeat", type=int, default=5)
    both = sub.add_parser("ab")
    both.add_argument("--base", type=Path, required=True)
    both.add_argument("--new", type=Path, default=_ROOT)
    both.add_argument("--data", type=Path)
    both.add_argument("--rounds", type=int, default=6)
    both.add_argument("--repeat", type=int, default=5)
    in_process = sub.add_parser("pair")
    in_process.add_argument("--old-module", type=Path, required=True)
    in_process.add_argument("--data", type=Path)
    in_process.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if args.command == "pair":
        pair(args.old_module, args.data, args.rounds)
    elif args.command == "measure":
        print(json.dumps(measure(args.checkout.resolve(), args.data, args.repeat)))
    else:
        ab(args.base.resolve(), args.new.resolve(), args.data, args.rounds, args.repeat)


if __name__ == "__main__":
    main()
