"""Reference reading on the indexing path: this checkout's ``server/fhir/references.py``
against the reference readers of another checkout, in one process on the same data.

    .venv/bin/python bench/references.py --base /tmp/base --data /tmp/ecm [--rounds 20]

``--base`` is a checkout from before the one reference reader (``git archive <rev> | tar -x
-C /tmp/base``); its ``resolve()`` type reader (``server/fhir/fhirpath/compiler.py``
``_reference_type``) and its search reference parser (``server/search/values.py``
``parse_reference``) are loaded from there and swapped into this checkout's modules, so the
two sides differ in nothing else. The data is what ``bench/fhirpath.py`` uses (the examples
plus ``--data``'s ``resources-*.ndjson``). Two timings, CPU per pass, the sides alternating
which runs first: ``extract`` (the compiled SearchParameter expressions, where
``where(resolve() is X)`` reads references) and ``rows`` (``Indexer.rows``, which also turns
every reference into its index row). Counts must be equal on both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from bench.fhirpath import _TABLES, _resources  # noqa: E402 - after the path is set


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    from zoneinfo import ZoneInfo

    from server.fhir.fhirpath import compiler
    from server.search import values
    from server.search.index import Indexer
    from server.search.registry import load_registry

    old_compiler = _module("old_compiler", args.base / "server/fhir/fhirpath/compiler.py")
    old_values = _module("old_values", args.base / "server/search/values.py")
    sides: dict[str, tuple[Any, Any]] = {
        "old": (old_compiler._reference_type, old_values.parse_reference),
        "new": (compiler._reference_type, values.parse_reference),
    }

    def use(label: str) -> None:
        compiler._reference_type, values.parse_reference = sides[label]  # type: ignore[assignment]

    resources = _resources(args.data)
    indexer = Indexer(load_registry(), "http://localhost/fhir", ZoneInfo("America/Los_Angeles"))
    typed = [(r["resourceType"], r) for r in resources]

    def rows() -> int:
        total = 0
        for type, resource in typed:
            out = indexer.rows(type, resource)
            total += sum(len(getattr(out, table)) for table in _TABLES)
        return total

    rows()  # builds the plans
    plans = {t: [p.extractor for p in ps] for t, ps in indexer._plans.items()}  # noqa: SLF001
    work = [(plans.get(type, []), resource) for type, resource in typed]

    def extract() -> int:
        return sum(len(e(r, r)) for extractors, r in work for e in extractors)

    counts = {}
    for label in sides:
        use(label)
        counts[label] = (rows(), extract())
    assert counts["old"] == counts["new"], counts
    times: dict[tuple[str, str], list[float]] = {}
    for number in range(args.rounds):
        for label in ("old", "new") if number % 2 == 0 else ("new", "old"):
            use(label)
            for name, work_ in (("extract", extract), ("rows", rows)):
                started = time.process_time()
                work_()
                times.setdefault((name, label), []).append(time.process_time() - started)
    print(f"{len(resources)} resources; rows, values: {counts['new']}")
    for name in ("extract", "rows"):
        old_ms, new_ms = (statistics.median(times[(name, k)]) * 1e3 for k in ("old", "new"))
        print(f"{name:8} CPU median of {args.rounds}: old {old_ms:.1f} ms, new {new_ms:.1f} ms, "
              f"new/old {new_ms / old_ms:.3f}")  # fmt: skip
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
