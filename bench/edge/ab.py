"""CPU per request, two checkouts in alternation (ABBA...) in one window: ``read_cpu.py``
(reads by id, auth/consent/audit on and off) or ``write_cpu.py`` (create and update with
``If-Match``, auth/consent/audit on) run with each checkout first on ``PYTHONPATH``, each run a
fresh process and store, its request log to a file. Prints each run's JSON line and a
Markdown table: the median over the runs of each run's median µs per request, with the range.

    .venv/bin/python bench/edge/ab.py --a /path/to/before --b . [--runs 6] [--reads 2000]
        [--script write_cpu.py]   # --reads is then the writes per round
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
#: each script's modes (the keys of its JSON line) and its option for requests per round
SCRIPTS = {
    "read_cpu.py": (("on", "off"), "--reads"),
    "write_cpu.py": (("create", "update"), "--writes"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--script", default="read_cpu.py", choices=SCRIPTS)
    args = parser.parse_args()
    modes, count = SCRIPTS[args.script]
    results: dict[str, dict[str, list[float]]] = {
        which: {mode: [] for mode in modes} for which in ("a", "b")
    }
    loads: list[float] = []
    for run in range(args.runs):
        for which in ("a", "b") if run % 4 in (0, 3) else ("b", "a"):
            checkout = (args.a if which == "a" else args.b).resolve()
            with tempfile.TemporaryFile() as log:
                out = subprocess.run(
                    [sys.executable, str(HERE / args.script), count, str(args.reads),
                     "--rounds", str(args.rounds)],
                    env={**os.environ, "PYTHONPATH": str(checkout)},
                    stdout=subprocess.PIPE, stderr=log, text=True, check=True,
                ).stdout  # fmt: skip
            line = json.loads(out.strip().splitlines()[-1])
            print(json.dumps({"checkout": which, **line}), flush=True)
            loads += line["load"]
            for mode in modes:
                results[which][mode].append(statistics.median(line[mode]))
    print(f"\nload average (1 min) {min(loads):.1f}–{max(loads):.1f}; {args.runs} runs each\n")
    print("| mode | a µs/request median (range) | b µs/request median (range) | a ÷ b |")
    print("|---|---|---|---|")
    for mode in modes:
        a, b = results["a"][mode], results["b"][mode]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"| {mode} | {ma:.0f} ({min(a):.0f}–{max(a):.0f}) "
            f"| {mb:.0f} ({min(b):.0f}–{max(b):.0f}) | {ma / mb:.2f} |"
        )


if __name__ == "__main__":
    main()
