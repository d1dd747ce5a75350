"""CPU per read by id, two checkouts in alternation (ABBA...) in one window: ``read_cpu.py``
run with each checkout first on ``PYTHONPATH``, each run a fresh process and store, its
request log to a file. Prints each run's JSON line and a Markdown table: the median over the
runs of each run's median µs per read, with the range, for auth/consent/audit on and off.

    .venv/bin/python bench/edge/ab.py --a /path/to/before --b . [--runs 6] [--reads 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {
        which: {"on": [], "off": []} for which in ("a", "b")
    }
    loads: list[float] = []
    for run in range(args.runs):
        for which in ("a", "b") if run % 4 in (0, 3) else ("b", "a"):
            checkout = (args.a if which == "a" else args.b).resolve()
            with tempfile.TemporaryFile() as log:
                out = subprocess.run(
                    [sys.executable, str(HERE / "read_cpu.py"), "--reads", str(args.reads),
                     "--rounds", str(args.rounds)],
                    env={**os.environ, "PYTHONPATH": str(checkout)},
                    stdout=subprocess.PIPE, stderr=log, text=True, check=True,
                ).stdout  # fmt: skip
            line = json.loads(out.strip().splitlines()[-1])
            print(json.dumps({"checkout": which, **line}), flush=True)
            loads += line["load"]
            for mode in ("on", "off"):
                results[which][mode].append(statistics.median(line[mode]))
    print(f"\nload average (1 min) {min(loads):.1f}–{max(loads):.1f}; {args.runs} runs each\n")
    print("| mode | a µs/read median (range) | b µs/read median (range) | a ÷ b |")
    print("|---|---|---|---|")
    for mode in ("on", "off"):
        a, b = results["a"][mode], results["b"][mode]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"| {mode} | {ma:.0f} ({min(a):.0f}–{max(a):.0f}) "
            f"| {mb:.0f} ({min(b):.0f}–{max(b):.0f}) | {ma / mb:.2f} |"
        )


if __name__ == "__main__":
    main()
