"""Measure ``$ecm-eligibility`` on a loaded store: one member's latency, and a population run
(``--operation cs``: one member's ``$cs-eligibility`` with every service asked, no population).

    .venv/bin/python bench/eligibility/run.py --data DIR --database-url URL --label sqlite-20k \\
        [--members 300] [--warmup 30] [--workers 1] [--skip-member] [--skip-population] \\
        [--operation ecm|cs]

With the server started here (``calaim-fhir serve``, 127.0.0.1, a free port, its log in a
temp folder):

1. **member**: ``GET /fhir/Patient/<id>/$ecm-eligibility?asOf=<asOf>`` for ``--members``
   Patients drawn at random (seeded) from ``patients.txt``, after ``--warmup`` requests on
   other members; sequential, one keep-alive connection (``http.client``), timed on the client.
   Every answer must be 200 with a ``determination``.
2. **population**: ``POST /fhir/$ecm-eligibility`` (``asOf`` in a ``Parameters`` body) with
   ``Prefer: respond-async``; ``_async/<job>`` is polled every ``--poll`` seconds, and each
   poll's time, status and ``X-Progress`` recorded, until 200. Meanwhile the server's memory is
   sampled every ``--poll`` seconds: VmRSS of every process of the server (``/proc``; uvicorn's
   supervisor and workers when ``--workers`` > 1). Reported: wall time (kick-off to the 200),
   members per second, the summary and List of the answer, and RSS before the run, when the
   progress first reaches ``--rss-at`` members (2,000) and at the end (the last poll while
   running, and the first poll after) — the growth between those is the "memory flat" figure.

Writes ``bench/out/eligibility-<label>.json`` (every figure, the commands, the progress trace,
machine facts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from harness import ACCEPT, Server, shown, stats  # noqa: E402
from report import machine  # noqa: E402


def log(text: str) -> None:
    print(f"eligibility-bench: {text}", file=sys.stderr, flush=True)


# -- the server and its memory -----------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_by_pid(root: int) -> dict[int, int]:
    return {p: r for p in tree(root) if (r := rss_kib(p)) is not None}


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[float, int, dict[str, str], bytes]:
        t0 = time.perf_counter()
        self.conn.request(method, path, body=body, headers={**ACCEPT, **(headers or {})})
        response = self.conn.getresponse()
        data = response.read()
        ms = (time.perf_counter() - t0) * 1000
        return ms, response.status, {k.lower(): v for k, v in response.getheaders()}, data


def param(parameters: dict[str, Any], name: str) -> Any:
    for p in parameters.get("parameter") or []:
        if p.get("name") == name:
            for key, value in p.items():
                if key.startswith("value"):
                    return value
            return p.get("part") or p.get("resource")
    return None


# -- the measurements --------------------------------------------------------------------------


# every Community Support ($cs-eligibility asks them all for one member)
CS_SERVICES = (
    "housing-transition-navigation housing-deposits housing-tenancy-sustaining "
    "short-term-post-hospitalization-housing recuperative-care respite-services day-habilitation "
    "nursing-facility-transition-assisted-living community-transition-home "
    "personal-care-homemaker environmental-accessibility-adaptations medically-tailored-meals "
    "sobering-centers asthma-remediation transitional-rent"
).split()


def member_query(operation: str, as_of: str) -> str:
    """The query of one member's request: ``asOf``, and for ``cs`` every service."""
    if operation == "ecm":
        return f"$ecm-eligibility?asOf={as_of}"
    return f"$cs-eligibility?asOf={as_of}" + "".join(f"&service={s}" for s in CS_SERVICES)


def _determinations(operation: str, answer: dict[str, Any]) -> list[str] | None:
    """What a member's answer decided: its determination, or each service's."""
    if operation == "ecm":
        found = param(answer, "determination")
        return None if found is None else [found]
    services = [p for p in answer.get("parameter", []) if p.get("name") == "service"]
    decided = [
        q["valueCode"] for p in services for q in p["part"] if q["name"] == "determination"
    ]
    return decided if len(decided) == len(CS_SERVICES) else None


def member_latency(
    server: Server,
    ids: list[str],
    as_of: str,
    count: int,
    warmup: int,
    seed: int,
    operation: str = "ecm",
) -> dict[str, Any]:
    rng = random.Random(seed)
    chosen = rng.sample(ids, min(len(ids), count + warmup))
    warm, timed = chosen[:warmup], chosen[warmup:]
    client = Client(server.port)
    query = member_query(operation, as_of)
    for id in warm:
        _, status, _, body = client.request("GET", f"/fhir/Patient/{id}/{query}")
        if status != 200:
            raise SystemExit(f"warm-up Patient/{id}: {status} {body[:300]!r}")
    times: list[float] = []
    determinations: dict[str, int] = {}
    sizes: list[int] = []
    for id in timed:
        ms, status, _, body = client.request("GET", f"/fhir/Patient/{id}/{query}")
        if status != 200:
            raise SystemExit(f"Patient/{id}: {status} {body[:300]!r}")
        decided = _determinations(operation, orjson.loads(body))
        if decided is None:
            raise SystemExit(f"Patient/{id}: no determination in {body[:300]!r}")
        for determination in decided:
            determinations[determination] = determinations.get(determination, 0) + 1
        times.append(ms)
        sizes.append(len(body))
    return {
        "request": f"GET /fhir/Patient/<id>/{query}",
        "warmup": len(warm),
        **stats(times),
        "answer_bytes_p50": int(statistics.median(sizes)),
        "determinations": determinations,
        "loadavg_before": None,
    }


class Sampler(threading.Thread):
    """VmRSS of the server's processes every ``every`` seconds."""

    def __init__(self, root: int, every: float) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.started = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic() - self.started, rss_by_pid(self.root)))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


PROGRESS = re.compile(r"(\d+)(?: of (\d+))?")


def population(
    server: Server, as_of: str, poll: float, sample: float, rss_at: int
) -> dict[str, Any]:
    assert server.proc is not None
    client = Client(server.port)
    before = rss_by_pid(server.proc.pid)
    body = orjson.dumps(
        {"resourceType": "Parameters", "parameter": [{"name": "asOf", "valueDate": as_of}]}
    )
    sampler = Sampler(server.proc.pid, sample)
    t0 = time.monotonic()
    sampler.started = t0
    sampler.start()
    ms, status, headers, answer = client.request(
        "POST",
        "/fhir/$ecm-eligibility",
        body,
        {"Content-Type": "application/fhir+json", "Prefer": "respond-async"},
    )
    if status != 202:
        sampler.stop()
        raise SystemExit(f"kick-off: {status} {answer[:300]!r}")
    location = headers["content-location"]
    path = "/fhir/" + location.split("/fhir/", 1)[1]
    trace: list[dict[str, Any]] = []
    final: bytes = b""
    while True:
        time.sleep(poll)
        _, status, headers, data = client.request("GET", path)
        now = time.monotonic() - t0
        rss = rss_by_pid(server.proc.pid)
        point: dict[str, Any] = {
            "t_s": round(now, 2),
            "status": status,
            "x_progress": headers.get("x-progress"),
            "rss_kib": sum(rss.values()),
            "rss_by_pid": {str(p): r for p, r in rss.items()},
        }
        match = PROGRESS.match(headers.get("x-progress") or "")
        if match:
            point["done"] = int(match.group(1))
            point["total"] = int(match.group(2)) if match.group(2) else None
        trace.append(point)
        if status == 200:
            final = data
            break
        if status != 202:
            sampler.stop()
            raise SystemExit(f"poll: {status} {data[:500]!r}")
    wall = time.monotonic() - t0
    sampler.stop()
    bundle = orjson.loads(final)
    entry = (bundle.get("entry") or [{}])[0]
    result = entry.get("resource") or {}
    summary = {p["name"]: p.get("valueInteger") for p in param(result, "summary") or []}
    listed = param(result, "list")
    running = [p for p in trace if p["status"] == 202 and "done" in p]
    total = summary.get("evaluated") or (running[-1].get("total") if running else None)
    at_mark = next((p for p in running if p["done"] >= rss_at), None)
    last_running = running[-1] if running else None
    # every RSS sample with the progress of the last poll before it (0 before the first poll)
    samples = []
    for t, by_pid in sampler.samples:
        done = 0
        for p in running:
            if p["t_s"] <= t:
                done = p["done"]
        samples.append({"t_s": round(t, 2), "done": done, "rss_kib": sum(by_pid.values())})
    out: dict[str, Any] = {
        "request": "POST /fhir/$ecm-eligibility (Prefer: respond-async), asOf " + as_of,
        "status": entry.get("response", {}).get("status"),
        "wall_s": round(wall, 1),
        "members_per_s": round(total / wall, 1) if total else None,
        "summary": summary,
        "list": listed,
        "kickoff_ms": round(ms, 1),
        "polls": len(trace),
        "sample_every_s": sampler.every,
        "rss_before_kib": sum(before.values()),
        "rss_at_mark": (
            {"done": at_mark["done"], "t_s": at_mark["t_s"], "rss_kib": at_mark["rss_kib"]}
            if at_mark
            else None
        ),
        "rss_last_running": (
            {
                "done": last_running["done"],
                "t_s": last_running["t_s"],
                "rss_kib": last_running["rss_kib"],
            }
            if last_running
            else None
        ),
        "rss_after_kib": trace[-1]["rss_kib"],
        "rss_peak_kib": max((s["rss_kib"] for s in samples), default=None),
    }
    if total and total > rss_at:
        # RSS swings with each batch of members read (it holds the batch's parsed resources),
        # so compare like with like: the peak of the samples taken while the first rss_at
        # members were read and evaluated, and of those taken while the last rss_at were
        first = [s["rss_kib"] for s in samples if s["done"] < rss_at]
        last = [s["rss_kib"] for s in samples if total - rss_at <= s["done"] < total]
        if first and last:
            out["rss_window_first"] = {
                "members": f"0-{rss_at}",
                "max_kib": max(first),
                "min_kib": min(first),
                "samples": len(first),
            }
            out["rss_window_last"] = {
                "members": f"{total - rss_at}-{total}",
                "max_kib": max(last),
                "min_kib": min(last),
                "samples": len(last),
            }
            out["rss_growth_peak_mib"] = round((max(last) - max(first)) / 1024, 1)
    if at_mark and last_running and last_running["t_s"] > at_mark["t_s"]:
        out["rss_growth_polls_mib"] = round(
            (last_running["rss_kib"] - at_mark["rss_kib"]) / 1024, 1
        )
        # members per second between the mark and the last running poll (the steady rate)
        out["steady_members_per_s"] = round(
            (last_running["done"] - at_mark["done"]) / (last_running["t_s"] - at_mark["t_s"]), 1
        )
    out["trace"] = [{k: v for k, v in p.items() if k != "rss_by_pid"} for p in trace]
    out["rss_samples"] = samples
    return out


def pg_version(database_url: str) -> str | None:
    if not database_url.startswith("postgresql"):
        return None
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder written by generate.py")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--label", required=True, help="e.g. sqlite-20k")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--members", type=int, default=300, help="timed single-member requests")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls/samples")
    parser.add_argument("--sample", type=float, default=0.25, help="seconds between RSS samples")
    parser.add_argument("--rss-at", type=int, default=2000, help="members done for the RSS mark")
    parser.add_argument("--skip-member", action="store_true")
    parser.add_argument("--skip-population", action="store_true")
    parser.add_argument("--load-json", type=Path, help="load.py's summary, kept in the result")
    parser.add_argument("--out", type=Path, help="default bench/out/eligibility-<label>.json")
    parser.add_argument(
        "--operation",
        choices=("ecm", "cs"),
        default="ecm",
        help="member step: $ecm-eligibility, or $cs-eligibility asking every service (cs has "
        "no population step)",
    )
    args = parser.parse_args()

    meta = orjson.loads((args.data / "meta.json").read_bytes())
    ids = (args.data / "patients.txt").read_text().split()
    as_of = meta["asOf"]
    logdir = Path(tempfile.mkdtemp(prefix="calaim-elig-run."))
    server = Server(args.database_url, args.workers, logdir)
    result: dict[str, Any] = {
        "label": args.label,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shown([".venv/bin/python", *sys.argv]),
        "database": args.database_url.split(":", 1)[0],
        "data": {k: v for k, v in meta.items() if k != "files"},
        "workers": args.workers,
    }
    if args.load_json and args.load_json.exists():
        result["load"] = orjson.loads(args.load_json.read_bytes())
    try:
        result["startup_s"] = round(server.start(), 2)
        result["server"] = server.command
        log(f"server up ({result['startup_s']} s): {server.command}")
        if not args.skip_member:
            loadavg = os.getloadavg()[0]
            result["member"] = member_latency(
                server, ids, as_of, args.members, args.warmup, args.seed, args.operation
            )
            result["member"]["loadavg_before"] = loadavg
            m = result["member"]
            log(f"member: p50 {m['p50_ms']} ms, p95 {m['p95_ms']} ms (n={m['n']})")
        if not args.skip_population and args.operation == "ecm":
            # a fresh process, so that the RSS figures are those of this run alone
            server.stop()
            server.start()
            loadavg = os.getloadavg()[0]
            log("population run started")
            result["population"] = population(server, as_of, args.poll, args.sample, args.rss_at)
            result["population"]["loadavg_before"] = loadavg
            p = result["population"]
            log(
                f"population: {p['wall_s']} s, {p['members_per_s']} members/s, summary "
                f"{p['summary']}, RSS growth (peaks) {p.get('rss_growth_peak_mib')} MiB"
            )
    finally:
        server.stop()
    result["loadavg_after"] = os.getloadavg()
    result["machine"] = machine(ROOT, pg_version(args.database_url))
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    result["commit"] = git.stdout.strip()
    out = args.out or BENCH / "out" / f"eligibility-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    log(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
