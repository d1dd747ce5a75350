"""A referral Task status update with the program rules on vs off, interleaved in one window.

One in-process app (``create_app`` through Starlette's TestClient, no network) on a fresh
SQLite file (or a fresh database of a PostgreSQL cluster): the project's profiled examples
loaded, ``--tasks`` ECM/CS referral Tasks (``ecm-referral-task``) accepted by their provider,
then rounds of ``--updates`` sequential PUTs that move a Task between ``in-progress`` and
``on-hold`` (with a reason), as the provider's organisation. Each round runs once with the
server's rules ("on": the referral lifecycle, which also stamps ``lastModified`` and so
validates the amended Task again) and once with only the definitions rule ("off"), in ABAB
order, alternating which goes first. Prints a JSON line per run and a Markdown summary:
the wall time of each update (median of the per-run medians, range) and the CPU time the
process (client, server and SQLite, all in it) spent per update — the steadier figure on a
machine other work shares.

    .venv/bin/python bench/writes/task_rules_ab.py --rounds 4 --updates 300 [--database URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from server.app import create_app  # noqa: E402
from server.auth.principal import Principal  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.writes.rules import RuleSet, default_rules  # noqa: E402

EXAMPLES = ROOT / "examples" / "resources"
PROVIDER = Principal("casa-app", allow_all=True, organization="Organization/casa-segura-housing")
REFERRER = Principal("svccp-app", allow_all=True, organization="Organization/sierra-vista-ccp")


class Who:
    principal = REFERRER

    def __call__(self, request: Any) -> Principal:
        return self.principal


def _load(client: TestClient) -> None:
    entries = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_text())
        if resource["resourceType"] != "Task":
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text[:500]


def _task() -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "Task-cs-referral-task-example.json").read_text())
    for element in ("id", "output", "lastModified", "identifier", "businessStatus"):
        body.pop(element)
    body["status"] = "requested"
    body["statusReason"] = {"text": "waiting for the member's documents"}
    return body


def _round(
    client: TestClient, tasks: list[dict[str, Any]], updates: int
) -> tuple[list[float], float]:
    """Wall milliseconds of each update, and the process's CPU milliseconds per update."""
    times: list[float] = []
    cpu = time.process_time()
    for n in range(updates):
        i = n % len(tasks)
        task = tasks[i]
        task["status"] = "on-hold" if task["status"] == "in-progress" else "in-progress"
        start = time.perf_counter()
        response = client.put(f"/fhir/Task/{task['id']}", json=task)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text[:500]
        tasks[i] = response.json()
    return times, (time.process_time() - cpu) * 1000 / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--database", help="a PostgreSQL database URL (default: a SQLite file)")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        help="also run the server's rules but this one (a rule name; repeatable): 'on-minus'",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="task-rules-ab-"))
    url = args.database or f"sqlite:///{work / 'bench.db'}"
    who = Who()
    app = create_app(Settings(database_url=url, base_url="http://testserver/fhir"), principals=who)
    runs: list[dict[str, Any]] = []
    with TestClient(app) as client:
        who.principal = Principal("local", allow_all=True, operator=True)
        _load(client)
        who.principal = REFERRER
        tasks = []
        for _ in range(args.tasks):
            response = client.post("/fhir/Task", json=_task())
            assert response.status_code == 201, response.text[:500]
            tasks.append(response.json())
        who.principal = PROVIDER
        for i, task in enumerate(tasks):
            response = client.put(f"/fhir/Task/{task['id']}", json={**task, "status": "accepted"})
            assert response.status_code == 200, response.text[:500]
            tasks[i] = response.json()
        pipeline = app.state.pipeline
        on, off = pipeline.rules, RuleSet(default_rules())
        sets = [("on", on), ("off", off)]
        if args.without:
            minus = RuleSet(r for r in on.rules if r.name not in args.without)
            sets.append(("on-minus", minus))
        _round(client, tasks, 50)  # warm-up
        for r in range(args.rounds):
            order = sets if r % 2 == 0 else sets[::-1]
            for label, rules in order:
                pipeline.rules = rules
                load = os.getloadavg()[0]
                times, cpu_ms = _round(client, tasks, args.updates)
                times.sort()
                run = {
                    "round": r,
                    "rules": label,
                    "n": len(times),
                    "median_ms": round(statistics.median(times), 3),
                    "p95_ms": round(times[int(len(times) * 0.95) - 1], 3),
                    "mean_ms": round(statistics.fmean(times), 3),
                    "cpu_ms": round(cpu_ms, 3),
                    "load1": round(load, 2),
                }
                runs.append(run)
                print(json.dumps(run), flush=True)
        pipeline.rules = on
    print()
    print("| rules | runs | wall: median of medians ms | range ms | median p95 ms "
          "| CPU ms per update: median | range |")
    print("|---|---:|---:|---|---:|---:|---|")
    medians: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for label in [name for name, _ in sets]:
        mine = [r for r in runs if r["rules"] == label]
        meds = [r["median_ms"] for r in mine]
        cpu = [r["cpu_ms"] for r in mine]
        medians[label], cpus[label] = statistics.median(meds), statistics.median(cpu)
        p95 = statistics.median(r["p95_ms"] for r in mine)
        print(f"| {label} | {len(mine)} | {medians[label]:.3f} | {min(meds):.3f}–{max(meds):.3f} "
              f"| {p95:.3f} | {cpus[label]:.3f} | {min(cpu):.3f}–{max(cpu):.3f} |")
    print(f"\nwall on / off = {medians['on'] / medians['off']:.3f}; "
          f"CPU on / off = {cpus['on'] / cpus['off']:.3f}")
    if "on-minus" in cpus:
        print(f"CPU on / on-minus = {cpus['on'] / cpus['on-minus']:.3f}; "
              f"on-minus / off = {cpus['on-minus'] / cpus['off']:.3f}")


if __name__ == "__main__":
    main()
