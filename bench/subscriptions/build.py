"""CPU per (subscription, event) of building notification bodies, in process: what a delivery
round does after the store reads, for ``--subscriptions`` subscriptions each carrying the same
``--events`` events (the events as the round read them, each event's visible version, the
``subscription-status`` Parameters, the Bundle, its serialisation).

    .venv/bin/python bench/subscriptions/build.py [--checkout DIR ...] [--runs 5]
        [--subscriptions 100] [--events 100] [--content id-only]

``--checkout`` (repeatable) loads ``server/subscriptions/notifications.py`` and the
``Numbered`` of ``server/store/base.py`` from another source tree (a base commit's worktree);
runs alternate between the trees (ABAB), each timed with ``time.process_time``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8080/fhir"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Tree:
    def __init__(self, root: Path, tag: str) -> None:
        self.tag = tag
        self.notifications = _load(root / "server/subscriptions/notifications.py", f"n_{tag}")
        self.numbered = _load(root / "server/store/base.py", f"b_{tag}").Numbered


def one_run(tree: Tree, args: argparse.Namespace) -> float:
    """µs of CPU per (subscription, event)."""
    from server.ports import Version

    n = tree.notifications
    body = b'{"resourceType":"Task","id":"x","status":"requested","intent":"order"}'
    rows = [(i + 10, "Task", f"task-{i:06d}", 1, 1_765_000_000_000_000 + i * 1000)
            for i in range(args.events)]
    visible = {r[0]: Version("Task", r[2], 1, 1, False, body) for r in rows}
    make: Any = getattr(tree.numbered, "_make", None)
    started = time.process_time()
    for s in range(args.subscriptions):
        if make is not None:
            numbered = [make((s * 100_000 + k + 1, *r)) for k, r in enumerate(rows)]
        else:
            numbered = [tree.numbered(s * 100_000 + k + 1, *r) for k, r in enumerate(rows)]
        seen = [n.Seen(e, visible[e.seq]) for e in numbered]
        parameters = n.status_parameters(BASE, f"sub-{s}", "http://topic", "active",
                                         "event-notification", 5, seen, args.content)
        bundle = n.notification_bundle(BASE, parameters, seen, args.content, 1)
        orjson.dumps(bundle)
    return (time.process_time() - started) / (args.subscriptions * args.events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", type=Path, action="append")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--content", default="id-only",
                        choices=("empty", "id-only", "full-resource"))
    args = parser.parse_args()
    roots = [c.resolve() for c in (args.checkout or [ROOT])]
    trees = [Tree(root, f"{i}-{root.name}") for i, root in enumerate(roots)]
    results: dict[str, list[float]] = {t.tag: [] for t in trees}
    for tree in trees:  # warm-up: the per-event caches as a round leaves them, imports
        one_run(tree, args)
    for _ in range(args.runs):
        for tree in trees:
            results[tree.tag].append(one_run(tree, args))
    for tag, values in results.items():
        print(f"{tag}: {statistics.median(values):.2f} µs per (subscription, event), median of "
              f"{len(values)} ({min(values):.2f}–{max(values):.2f}), content {args.content}")


if __name__ == "__main__":
    main()
