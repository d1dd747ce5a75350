"""Side by side over HTTP: the same wrk workloads against calaim-fhir checkouts (auth, consent
and audit on and off; SQLite and PostgreSQL) and against a peer FHIR engine, interleaved.

    .venv/bin/python bench/compare.py [--checkout LABEL=PATH ...] [--auth on,off]
        [--store sqlite,pg] [--rounds 3] [--duration 5s] [--no-peer] [--url LABEL=BASE ...]

Workloads (wrk -t1, the same connections and duration for every target): ``read`` (GET
/fhir/ServiceRequest/{id}, a random one of the seeded), ``create`` (POST the 1.5 KB
bench/data/servicerequest.json), ``update`` (PUT with If-Match, one resource per connection)
and ``ingest`` (100-entry transaction Bundles of an ECM referral feed, bench/bundle_gen.py
--shape feed: Patient, Coverage, ServiceRequest, Task per member, urn:uuid references; reported
as resources/s). Rounds: every workload, every target in turn, the order rotated each round;
median and range over the rounds, ratios ours ÷ peer, each checkout ÷ the first, PostgreSQL ÷
SQLite. The 1-minute load average is recorded before each run. Output: a Markdown table
(stdout and bench/out/compare-<time>.md) and every run as JSON (bench/out/compare-<time>.json).

Targets:
- ``--checkout LABEL=PATH`` (default, without ``--url``: ``HEAD=`` this tree): that tree's
  ``.venv/bin/calaim-fhir serve`` on a fresh store: SQLite, ``--workers 1``; PostgreSQL,
  ``--pg-workers`` (2), a database of its own in one throwaway cluster
  (``scripts/pg-test-cluster``, fsync on). Auth ``on``: SMART backend services
  (``CALAIM_FHIR_AUTH=smart``), care relationships and consent
  (``CALAIM_FHIR_ACCESS_RELATIONSHIPS=true``, the plan named in an access matrix), read
  audit ``batch``; the workloads run as a client acting for the plan (``calaim-fhir client add
  --organization Organization/bench-plan``), a fresh access token for each run. Auth ``off``:
  no authentication, relationships off, read audit off (writes are audited in every mode).
- the peer (``bench/peer/server.mjs``, installed by ``bench/peer/install``): Medplum's FHIR
  engine, FhirRouter over its in-memory repository — no validation, no durability, no auth.
- ``--url LABEL=BASE``: any running server (its base without ``/fhir``), with ``--bearer
  TOKEN`` sent as ``Authorization: Bearer`` when given (seeding and workloads alike).
Each target is seeded through its own base URL (as an operator client when auth is on):
the Organizations, Practitioner and member the fixture references, then 1,000 ServiceRequests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from bundle_gen import PLAN_ID, feed, feed_directory  # noqa: E402
from harness import free_port, stop_process  # noqa: E402
from report import parse_wrk  # noqa: E402
from subscriptions.soak import children_cpu_seconds, cpu_seconds  # noqa: E402

WORKLOADS = ("read", "create", "update", "ingest")
SCRIPTS = {"read": "read.lua", "create": "create.lua", "update": "update.lua",
           "ingest": "ingest.lua"}
ENTRIES = 100  # per ingest Bundle
SEED = 1000
FHIR = "application/fhir+json"
SCOPE = "system/*.cruds"
# the targets: ours (auth on) ÷ peer, PostgreSQL ÷ SQLite, a checkout ÷ the first
PEER_TARGETS = {"read": 0.55, "create": 0.45, "update": 0.4, "ingest": 0.4}
PG_TARGET = 0.8
CHANGE_TARGETS = {"read": 1.6, "create": 1.4, "update": 1.4, "ingest": 1.8}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a server process and its live children (its workers)."""
    return cpu_seconds(pid) + children_cpu_seconds(pid)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, any_answer: bool = False
               ) -> None:
    """Until `url` answers 200 (or, with `any_answer`, anything at all)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200 or any_answer:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}: not ready: {log.read_text()[-3000:]}")


@dataclass
class Target:
    """A server the workloads run against: its base URL (without /fhir) and how to get a token."""

    label: str
    kind: str  # ours | peer | url
    checkout: str = ""
    store: str = ""
    auth: bool = False
    skips: str = ""
    base: str = ""
    proc: subprocess.Popen[bytes] | None = None
    logfile: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    partner: Any = None
    fixed_token: str = ""  # --bearer, for --url targets
    command: str = ""

    def token(self) -> str:
        if self.partner is None:
            return self.fixed_token
        return bearer(self.base, self.partner)

    def headers(self) -> dict[str, str]:
        out = {"Content-Type": FHIR, "Accept": FHIR}
        token = self.token()
        if token:
            out["Authorization"] = f"Bearer {token}"
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.logfile is not None:
            self.logfile.close()


def bearer(base: str, partner: Any) -> str:
    from tests.auth.partners import token_form

    url = f"{base}/fhir/auth/token"
    answer = httpx.post(url, data=token_form(partner.assertion(url, jti=uuid.uuid4().hex), SCOPE),
                        timeout=30)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def register(cli: Path, database_url: str, work: Path, organization: str | None) -> Any:
    """A SMART backend-services client registered with the checkout's own CLI."""
    from tests.auth.partners import Partner

    partner = Partner("RS384")
    jwks = work / f"jwks-{partner.kid}.json"
    jwks.write_text(json.dumps(partner.jwks()))
    args = [str(cli), "client", "add", "--name", f"bench {partner.kid}", "--scope", SCOPE,
            "--jwks-file", str(jwks), "--database-url", database_url]
    args += ["--organization", organization] if organization else ["--role", "admin"]
    done = subprocess.run(args, capture_output=True, text=True, env=clean_env())
    if done.returncode != 0:
        raise SystemExit(f"client add failed: {done.stdout}{done.stderr}")
    partner.client_id = json.loads(done.stdout)["client_id"]
    return partner


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}


def start_ours(label: str, checkout: Path, store: str, auth: bool, workers: int, work: Path,
               pg_url: str | None) -> Target:
    cli = checkout / ".venv" / "bin" / "calaim-fhir"
    if not cli.exists():
        raise SystemExit(f"{cli} missing: run scripts/bootstrap in {checkout}")
    name = f"{label}-{store}-auth-{'on' if auth else 'off'}"
    folder = work / name
    folder.mkdir()
    if store == "sqlite":
        database_url = f"sqlite:///{folder / 'store.db'}"
    else:
        assert pg_url is not None
        import psycopg

        db = "bench_" + "".join(c if c.isalnum() else "_" for c in name.lower())
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
        database_url = pg_url.rsplit("/", 1)[0] + f"/{db}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env()
    env["CALAIM_FHIR_BASE_URL"] = f"{base}/fhir"
    if auth:
        matrix = folder / "matrix.json"
        matrix.write_text(json.dumps({"plans": [f"Organization/{PLAN_ID}"]}))
        env.update(CALAIM_FHIR_AUTH="smart", CALAIM_FHIR_ACCESS_RELATIONSHIPS="true",
                   CALAIM_FHIR_ACCESS_MATRIX=str(matrix), CALAIM_FHIR_AUDIT_READS="batch")
    else:
        env.update(CALAIM_FHIR_AUTH="off", CALAIM_FHIR_ACCESS_RELATIONSHIPS="false",
                   CALAIM_FHIR_AUDIT_READS="off")
    args = [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port), "--database-url",
            database_url, "--workers", str(workers)]
    log = folder / "server.log"
    logfile = log.open("wb")
    proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, env=env)
    shown = {k: v for k, v in env.items() if k.startswith("CALAIM_FHIR_")}
    shown.pop("CALAIM_FHIR_BASE_URL")
    if auth:
        shown["CALAIM_FHIR_ACCESS_MATRIX"] = f"<{matrix.read_text()}>"
    command = " ".join(f"{k}={v}" for k, v in shown.items())
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    command += f" calaim-fhir serve --workers {workers} ({store}; {checkout} at {commit})"
    target = Target(name, "ours", checkout=label, store=store, auth=auth, base=base, proc=proc,
                    logfile=logfile, command=command)
    try:
        wait_ready(f"{base}/fhir/metadata", proc, log)
        if auth:
            target.partner = register(cli, database_url, folder, None)  # an operator, to seed
        seed(target, folder)
        if auth:
            target.partner = register(cli, database_url, folder, f"Organization/{PLAN_ID}")
        probe(target)
    except BaseException:
        target.stop()
        raise
    return target


def start_peer(work: Path) -> Target:
    node_modules = BENCH / "peer" / "node_modules"
    subprocess.run([str(BENCH / "peer" / "install")], check=True)
    assert node_modules.exists()
    port = free_port()
    folder = work / "peer"
    folder.mkdir()
    log = folder / "server.log"
    logfile = log.open("wb")
    args = ["node", "--max-old-space-size=8192", str(BENCH / "peer" / "server.mjs"), "--port",
            str(port)]
    proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    versions = json.loads((BENCH / "peer" / "package.json").read_text())["dependencies"]
    target = Target("peer", "peer", base=base, proc=proc, logfile=logfile,
                    skips="no validation, no durability (memory, no fsync), no auth, consent, "
                    "audit, search index or outbox",
                    command="node bench/peer/server.mjs (" + ", ".join(
                        f"{k} {v}" for k, v in versions.items()) + f", node {node_version()})")
    try:
        # the engine has no CapabilityStatement of its own: any answer to a read will do
        wait_ready(f"{base}/fhir/Patient/none", proc, log, any_answer=True)
        seed(target, folder)
        probe(target)
    except BaseException:
        target.stop()
        raise
    return target


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def _id_version(entry: dict[str, Any]) -> tuple[str, str]:
    resource = entry.get("resource") or {}
    response = entry["response"]
    location = response.get("location", "").removeprefix("/").split("/")
    if "fhir" in location:
        location = location[location.index("fhir") + 1:]
    rid = resource.get("id") or location[1]
    version = (resource.get("meta") or {}).get("versionId")
    if not version and response.get("etag"):
        version = response["etag"].split('"')[1]
    if not version and len(location) >= 4:
        version = location[3]
    return rid, version or "1"


def seed(target: Target, folder: Path) -> None:
    """The directory resources, then SEED ServiceRequests: read ids and update "id version"s."""
    template = orjson.loads((BENCH / "data" / "servicerequest.json").read_bytes())
    rows: list[tuple[str, str]] = []
    with httpx.Client(base_url=f"{target.base}/fhir", headers=target.headers(),
                      timeout=120) as client:
        for r in feed_directory():
            answer = client.put(f"/{r['resourceType']}/{r['id']}", content=orjson.dumps(r))
            if answer.status_code >= 300:
                raise SystemExit(f"{target.label}: seeding {r['resourceType']}/{r['id']}: "
                                 f"{answer.status_code} {answer.text[:1000]}")
        for start in range(0, SEED, 100):
            entries = []
            for i in range(start, start + 100):
                sr = dict(template)
                sr["identifier"] = [{**template["identifier"][0],
                                     "value": f"ECM-REF-seed-{i:06d}"}]
                entries.append({"resource": sr,
                                "request": {"method": "POST", "url": "ServiceRequest"}})
            answer = client.post("", content=orjson.dumps(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}))
            if answer.status_code != 200:
                raise SystemExit(f"{target.label}: seeding: {answer.status_code} "
                                 f"{answer.text[:1000]}")
            rows += [_id_version(e) for e in answer.json()["entry"]]
    target.files["read"] = folder / "read-ids.txt"
    target.files["read"].write_text("".join(f"{i}\n" for i, _ in rows))
    target.files["update-rows"] = folder / "update-rows.txt"
    # the last ids: update slices are taken from the end, reads pick from all
    target.files["update-rows"].write_text("".join(f"{i} {v}\n" for i, v in reversed(rows)))


def probe(target: Target) -> None:
    """Every workload answers 2xx once, as the measured caller, before anything is measured."""
    template = orjson.loads((BENCH / "data" / "servicerequest.json").read_bytes())
    first = target.files["read"].read_text().split("\n", 1)[0]
    version = target.files["update-rows"].read_text().split("\n", 1)[0].split()
    body = {**template, "id": version[0]}
    with httpx.Client(base_url=f"{target.base}/fhir", headers=target.headers(),
                      timeout=120) as client:
        checks = [
            ("read", 200, client.get(f"/ServiceRequest/{first}")),
            ("create", 201, client.post("/ServiceRequest", content=orjson.dumps(template))),
            ("update", 200, client.put(f"/ServiceRequest/{version[0]}", content=orjson.dumps(body),
                                       headers={"If-Match": f'W/"{version[1]}"'})),
            ("ingest", 200, client.post("", content=orjson.dumps(feed(ENTRIES, 999)))),
        ]
    for name, status, answer in checks:
        if answer.status_code != status:
            raise SystemExit(f"{target.label}: {name} answered {answer.status_code}, not "
                             f"{status}: {answer.text[:1500]}")
    # that resource's version moved on: it is not used by the update runs
    rows = target.files["update-rows"].read_text().splitlines()[1:]
    target.files["update-rows"].write_text("\n".join(rows) + "\n")


def update_slice(target: Target, n: int, connections: int, folder: Path) -> Path:
    """The n-th slice of `connections` resources not updated before (their versions known)."""
    rows = target.files["update-rows"].read_text().splitlines()
    part = rows[n * connections:(n + 1) * connections]
    if len(part) < connections:
        raise SystemExit(f"{target.label}: too few seeded resources for another update run")
    path = folder / f"update-{target.label}-{n}.txt"
    path.write_text("\n".join(part) + "\n")
    return path


def wrk(target: Target, workload: str, duration: str, connections: int, env: dict[str, str]
        ) -> tuple[dict[str, Any], str]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--timeout", "30s", "--latency",
           "-s", str(BENCH / SCRIPTS[workload]), target.base]
    full_env = {**os.environ, "BENCH_DIR": str(BENCH), **env}
    done = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    shown = " ".join(f"{k}=…" if k == "BENCH_TOKEN" else f"{k}={Path(v).name}"
                     if "/" in v else f"{k}={v}" for k, v in env.items())
    return parse_wrk(done.stdout), f"{shown} wrk {' '.join(cmd[1:-2])} bench/{SCRIPTS[workload]}"


def measure(target: Target, workload: str, args: argparse.Namespace, run: int, folder: Path
            ) -> dict[str, Any]:
    connections = args.ingest_connections if workload == "ingest" else args.connections
    env: dict[str, str] = {}
    warm_env: dict[str, str] = {}
    if workload == "read":
        env["BENCH_IDS"] = str(target.files["read"])
    elif workload == "create":
        env["BENCH_BODY"] = str(BENCH / "data" / "servicerequest.json")
    elif workload == "update":
        env["BENCH_BODY"] = str(BENCH / "data" / "servicerequest.json")
        env["BENCH_IDS"] = str(update_slice(target, 2 * run + 1, connections, folder))
        warm_env["BENCH_IDS"] = str(update_slice(target, 2 * run, connections, folder))
    else:
        env["BENCH_BUNDLES"] = str(args.bundles)
    token = target.token()
    if token:
        env["BENCH_TOKEN"] = token
    duration = args.ingest_duration if workload == "ingest" else args.duration
    if args.warmup:
        wrk(target, workload, args.warmup, connections, {**env, **warm_env})
        settle(target)  # what the warm-up left in flight finishes before the run
    before = loadavg()
    cpu = tree_cpu(target.proc.pid) if target.proc else None
    figures, command = wrk(target, workload, duration, connections, env)
    per = ENTRIES if workload == "ingest" else 1
    result = {"target": target.label, "workload": workload, "load_before": before,
              "rate": round(figures["rps"] * per, 1),
              "unit": "resources/s" if per > 1 else "req/s", "command": command, **figures}
    if cpu is not None and target.proc and figures["requests"]:
        # every answer's server CPU (re-reads and non-2xx included), per request or resource
        used = tree_cpu(target.proc.pid) - cpu
        result["server_cpu_s"] = round(used, 3)
        result["cpu_ms_per_op"] = round(used * 1000 / (figures["requests"] * per), 4)
    return result


def settle(target: Target, limit: float = 60.0) -> None:
    """Until the server uses under 5 % of a CPU over half a second (requests a finished wrk
    left in flight are done), at most `limit` seconds."""
    if target.proc is None:
        return
    deadline = time.monotonic() + limit
    last = tree_cpu(target.proc.pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu(target.proc.pid)
        if now - last < 0.025:
            return
        last = now


def rounds(targets: list[Target], args: argparse.Namespace, folder: Path,
           out: list[dict[str, Any]]) -> None:
    run_of: dict[tuple[str, str], int] = {}
    for r in range(args.rounds):
        for workload in args.workloads:
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for target in order:
                n = run_of.get((target.label, workload), 0)
                run_of[(target.label, workload)] = n + 1
                settle(target)
                result = measure(target, workload, args, n, folder)
                result["round"] = r + 1
                out.append(result)
                print(f"round {r + 1} {workload:6} {target.label:28} {result['rate']:>10,.0f} "
                      f"{result['unit']}  non-2xx {result['non_2xx']}  load "
                      f"{result['load_before'][0]:.2f}", file=sys.stderr, flush=True)


def summary(targets: list[Target], runs: list[dict[str, Any]], key: str = "rate"
            ) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for t in targets:
        for w in WORKLOADS:
            rates = [r[key] for r in runs
                     if r["target"] == t.label and r["workload"] == w and key in r]
            if rates:
                out[(t.label, w)] = {"median": statistics.median(rates), "min": min(rates),
                                     "max": max(rates), "n": len(rates),
                                     "non_2xx": sum(r["non_2xx"] + r["socket_errors"]
                                                    for r in runs if r["target"] == t.label
                                                    and r["workload"] == w)}
    return out


def _fmt(s: dict[str, Any] | None, digits: int = 0) -> str:
    if not s:
        return "—"
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, target: float | None) -> str:
    if not a or not b or not b["median"]:
        return "—"
    ratio = a["median"] / b["median"]
    text = f"{ratio:.2f} ({a['min'] / b['max']:.2f}–{a['max'] / b['min']:.2f})"
    if target is not None:
        text += f" | ≥ {target} {'✅' if ratio >= target else '❌'}"
    else:
        text += " | —"
    return text


def _cpu_ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """b's CPU per operation ÷ a's: a's rate relative to b's at equal CPU."""
    if not a or not b or not a["median"]:
        return "—"
    return f"{b['median'] / a['median']:.2f}"


def markdown(targets: list[Target], runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    s = summary(targets, runs)
    lines = [f"Window {meta['start']}–{meta['end']} UTC; {meta['rounds']} rounds, targets in "
             f"rotated order each round; wrk -t1 -c{meta['connections']} -d{meta['duration']} "
             f"(ingest -c{meta['ingest_connections']} -d{meta['ingest_duration']}) "
             + (f"after a {meta['warmup']} warm-up" if meta["warmup"] != "no"
                else "without warm-up")
             + ", each server idle again before its run; median (min–max) "
             "over the rounds. 1-minute load average before the runs: "
             f"{meta['load_min']:.2f}–{meta['load_max']:.2f} (median {meta['load_median']:.2f}) "
             f"on {os.cpu_count()} CPUs, shared with the servers and wrk. One durable SQLite "
             "commit (WAL, synchronous=FULL, `bench/fsync_micro.py`) before / after the window: "
             + " / ".join(f"{f['sqlite_wal_full_commit_us'] / 1000:.2f} ms"
                          for f in meta["fsync"]) + ".", ""]
    head = "| workload (unit) | " + " | ".join(f"`{t.label}`" for t in targets) + " |"
    lines += [head, "|---|" + "---:|" * len(targets)]
    for w in WORKLOADS:
        if not any((t.label, w) in s for t in targets):
            continue
        unit = "resources/s" if w == "ingest" else "req/s"
        lines.append(f"| {w} ({unit}) | " + " | ".join(_fmt(s.get((t.label, w)))
                                                       for t in targets) + " |")
    errors = {t.label: sum(s[(t.label, w)]["non_2xx"] for w in WORKLOADS if (t.label, w) in s)
              for t in targets}
    lines.append("| non-2xx or socket errors | " + " | ".join(str(errors[t.label])
                                                            for t in targets) + " |")
    lines.append("")
    cpu = summary(targets, runs, "cpu_ms_per_op")
    if cpu:
        lines += ["Server CPU per operation (user + system of the server process and its workers "
                  "over the run ÷ answers; per resource for ingest; PostgreSQL's own backends "
                  "not counted), ms, median (min–max): less sensitive to the machine's load than "
                  "the rates.", "", head, "|---|" + "---:|" * len(targets)]
        for w in WORKLOADS:
            if any((t.label, w) in cpu for t in targets):
                lines.append(f"| {w} | " + " | ".join(_fmt(cpu.get((t.label, w)), 3)
                                                    for t in targets) + " |")
        lines.append("")
    peer = next((t for t in targets if t.kind == "peer"), None)
    ours = [t for t in targets if t.kind == "ours"]
    pairs: list[tuple[Target, Target, dict[str, float] | None]] = []
    for t in ours:
        if peer is not None:
            pairs.append((t, peer, PEER_TARGETS if t.auth else None))
    for t in ours:
        twin = next((u for u in ours if u.checkout == t.checkout and u.auth == t.auth
                     and u.store == "sqlite"), None)
        if t.store == "pg" and twin:
            pg = {w: PG_TARGET for w in WORKLOADS}
            pairs.append((t, twin, pg if t.auth else None))
    for t in ours:
        twin = next((u for u in ours if u.checkout == meta["checkouts"][0] and u.auth == t.auth
                     and u.store == t.store), None)
        if twin and t.checkout != twin.checkout:
            pairs.append((t, twin, CHANGE_TARGETS if t.auth else None))
    if pairs:
        lines += ["| ratio of medians | workload | rate ratio (range) | issue target | "
                  "at equal server CPU |", "|---|---|---|---|---|"]
        for a, b, targets_of in pairs:
            for w in WORKLOADS:
                value = _ratio(s.get((a.label, w)), s.get((b.label, w)),
                               targets_of[w] if targets_of else None)
                if value != "—":
                    lines.append(f"| `{a.label}` ÷ `{b.label}` | {w} | {value} | "
                                 f"{_cpu_ratio(cpu.get((a.label, w)), cpu.get((b.label, w)))} |")
        lines += ["", "Rate ratio range: slowest ÷ fastest run to fastest ÷ slowest. At equal "
                  "server CPU: the other's CPU per operation ÷ this one's."
                  + (" PostgreSQL rows count the server processes only, not the backends."
                     if any(t.store == "pg" for t in ours) else ""), ""]
    lines.append("Targets:")
    for t in targets:
        lines.append(f"- `{t.label}`: {t.command}" + (f" — skips: {t.skips}" if t.skips else ""))
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", default=[],
                        help="LABEL=PATH of a calaim-fhir tree with its .venv (repeat); "
                        "default (without --url) HEAD=this tree")
    parser.add_argument("--url", action="append", default=[],
                        help="LABEL=BASE of a running server, e.g. x=http://127.0.0.1:8080")
    parser.add_argument("--bearer", help="access token sent to the --url servers")
    parser.add_argument("--auth", default="on,off", help="on,off | on | off")
    parser.add_argument("--store", default="sqlite", help="sqlite,pg | sqlite | pg")
    parser.add_argument("--pg-workers", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--warmup", default="1s", help="wrk warm-up before each run ('' none)")
    parser.add_argument("--ingest-duration", default="10s",
                        help="ingest runs (a 100-entry Bundle takes long under load)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--ingest-connections", type=int, default=4)
    parser.add_argument("--bundles-count", type=int, default=40,
                        help="distinct ingest Bundles, posted in turn")
    parser.add_argument("--out", type=Path, help="JSON of every run (default bench/out/…)")
    args = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupted)
    args.workloads = [w for w in args.workloads.split(",") if w]
    stores = [x for x in args.store.split(",") if x]
    auths = [x == "on" for x in args.auth.split(",") if x]
    if "pg" in stores and not os.environ.get("CALAIM_FHIR_TEST_DATABASE_URL"):
        # run again inside a throwaway cluster; it is stopped and removed afterwards
        os.execv(str(ROOT / "scripts" / "pg-test-cluster"),
                 [str(ROOT / "scripts" / "pg-test-cluster"), sys.executable, *sys.argv])
    pg_url = os.environ.get("CALAIM_FHIR_TEST_DATABASE_URL")
    checkouts = [c.split("=", 1) for c in args.checkout]
    if not checkouts and not args.url:
        checkouts = [["HEAD", str(ROOT)]]
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    args.bundles = work / "feed.ndjson"
    args.bundles.write_bytes(b"".join(orjson.dumps(feed(ENTRIES, 1000 + i)) + b"\n"
                                      for i in range(args.bundles_count)))
    targets: list[Target] = []
    runs: list[dict[str, Any]] = []
    try:
        for label, path in checkouts:
            for store in stores:
                for auth in auths:
                    workers = 1 if store == "sqlite" else args.pg_workers
                    targets.append(start_ours(label, Path(path).resolve(), store, auth, workers,
                                              work, pg_url))
        for spec in args.url:
            label, base = spec.split("=", 1)
            t = Target(label, "url", base=base.rstrip("/"), command=base,
                       fixed_token=args.bearer or "")
            folder = work / label
            folder.mkdir()
            seed(t, folder)
            probe(t)
            targets.append(t)
        if not args.no_peer:
            targets.append(start_peer(work))
        fsync = [disk(work)]
        start = dt.datetime.now(dt.UTC)
        rounds(targets, args, work, runs)
        end = dt.datetime.now(dt.UTC)
        fsync.append(disk(work))
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(work, ignore_errors=True)
    loads = [r["load_before"][0] for r in runs]
    meta = {"start": start.strftime("%Y-%m-%d %H:%M"), "end": end.strftime("%H:%M"),
            "rounds": args.rounds, "connections": args.connections,
            "ingest_connections": args.ingest_connections, "duration": args.duration,
            "ingest_duration": args.ingest_duration,
            "warmup": args.warmup or "no", "load_min": min(loads), "load_max": max(loads),
            "load_median": statistics.median(loads), "checkouts": [c[0] for c in checkouts],
            "commits": {c[0]: subprocess.run(["git", "-C", c[1], "rev-parse", "--short",
                                              "HEAD"], capture_output=True, text=True
                                             ).stdout.strip() for c in checkouts},
            "nproc": os.cpu_count(), "argv": sys.argv[1:], "fsync": fsync}
    text = markdown(targets, runs, meta)
    out_dir = BENCH / "out"
    out_dir.mkdir(exist_ok=True)
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    path = args.out or out_dir / f"compare-{stamp}.json"
    path.write_text(json.dumps({"meta": meta, "targets": [
        {"label": t.label, "kind": t.kind, "store": t.store, "auth": t.auth,
         "command": t.command, "skips": t.skips} for t in targets], "runs": runs}, indent=1))
    path.with_suffix(".md").write_text(text)
    print(text)
    print(f"compare: wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)


def disk(work: Path) -> dict[str, Any]:
    """bench/fsync_micro.py on the stores' disk: what one durable SQLite commit costs now."""
    done = subprocess.run([sys.executable, str(BENCH / "fsync_micro.py"), "--dir", str(work),
                           "--n", "200"], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the servers are stopped on the way out


if __name__ == "__main__":
    main()
