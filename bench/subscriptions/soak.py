"""Subscription soak: receiver outages across Task transitions, nothing lost; commit-to-POST
latency idle and during the soak; write throughput with 100 matching subscriptions vs none.

    .venv/bin/python bench/subscriptions/soak.py [--transitions 10000] [--outages 100]
        [--tasks 500] [--throughput-writes 1500] [--rounds 2]
        [--outage-share 0.2 0.5 | --outage-seconds 0.2 1.0] [--checkout DIR ...]
        [--delivery inline|process ...]

Everything runs on 127.0.0.1: a ``calaim-fhir serve`` process on a temporary SQLite file
(``--database-url`` for PostgreSQL) and an in-process receiver (stdlib HTTP server) that
records each notification's event numbers and focus versions with the time it arrived.

1. **Idle latency**: one subscription (Gravity Task topic, id-only); 200 Task transitions
   written one at a time, 50 ms apart; latency = arrival of the notification naming the
   version minus the write's acknowledgement (both on this machine's monotonic clock).
2. **Soak**: ``--transitions`` Task transitions (``--tasks`` Tasks created, then updated
   through requested → received → accepted → in-progress → … in rounds) by 4 writer threads,
   while the receiver goes down ``--outages`` times (answers 503; outage k starts when
   k/outages of the transitions are written and lasts 20–50 % of the time since the previous
   one started, at most ``--outage-max`` s: the receiver is down about a third of the soak
   whatever the write rate; ``--outage-seconds 0.2 1.0`` gives the first version's fixed
   lengths, which at ~130 writes/s left the receiver down ~80 % of the time). Then waits for
   every number:
   lost = numbers never received; duplicates =
   re-sends of a number. Latency as above.
3. **Throughput**: fresh databases; 4 writer threads create ``--throughput-writes`` Tasks with
   0 and with 100 matching subscriptions (all delivering to the receiver), interleaved
   ``--rounds`` times; writes per second of each run, and the CPU per write of the serving
   process and of its delivery child (``--delivery process``) until every notification is out.

``--checkout`` and ``--delivery`` (``subscription_delivery`` of the server) may be repeated:
every combination is an arm, run interleaved (ABBA) in one window.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv/bin/calaim-fhir"
TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
STATUSES = ["requested", "received", "accepted", "in-progress", "on-hold", "in-progress"]


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: dict[str, float] = {}  # focus version -> first arrival
        self.numbers: dict[str, list[int]] = {}  # subscription -> numbers, arrival order
        self.down = False
        self.refused = 0
        self.posts = 0
        self.entries = 0  # notification-events received (first arrivals and re-sends)
        self.cpu = 0.0  # seconds of CPU in the request handlers (the receiver's own work)

    def handle(self, body: bytes) -> int:
        if self.down:
            with self.lock:
                self.refused += 1
            return 503
        now = time.monotonic()
        bundle = json.loads(body)
        params = bundle["entry"][0]["resource"]["parameter"]
        sub = next(p["valueReference"]["reference"] for p in params if p["name"] == "subscription")
        kind = next(p["valueCode"] for p in params if p["name"] == "type")
        with self.lock:
            self.posts += 1
            if kind != "event-notification":
                return 200
            for p in params:
                if p["name"] != "notification-event":
                    continue
                self.entries += 1
                parts = {q["name"]: q for q in p["part"]}
                self.numbers.setdefault(sub, []).append(int(parts["event-number"]["valueString"]))
                if "focus" in parts:
                    ref = parts["focus"]["valueReference"]["reference"]
                    self.arrivals.setdefault(ref.split("/fhir/", 1)[-1], now)
        return 200


def start_receiver(rec: Receiver) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps connections open, as a real receiver would

        def do_POST(self) -> None:  # noqa: N802
            started = time.thread_time()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(rec.handle(body))
            self.send_header("Content-Length", "0")
            self.end_headers()
            used = time.thread_time() - started
            with rec.lock:
                rec.cpu += used

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SETTINGS: dict[str, str] = {}  # --setting NAME=VALUE: more CALAIM_FHIR_ settings


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int) -> float:
    """CPU time so far of the live child processes of ``pid`` (the delivery process)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Server:
    def __init__(
        self, url: str, log: Path, checkout: Path = ROOT, delivery: str | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
        env.update({
            "CALAIM_FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK": "true",
            "CALAIM_FHIR_SUBSCRIPTION_BACKOFF_MAX_SECONDS": "1",
            "CALAIM_FHIR_SUBSCRIPTION_TIMEOUT_SECONDS": "5",
        })
        env.update(SETTINGS)
        if delivery:
            env["CALAIM_FHIR_SUBSCRIPTION_DELIVERY"] = delivery
        if checkout != ROOT:  # another version of the code, same environment
            env["PYTHONPATH"] = str(checkout)
        self.log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--database-url", url, "--workers", "1"],
            cwd=checkout, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def subscription(endpoint: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription", "status": "requested", "reason": "bench",
        "criteria": TOPIC,
        "channel": {
            "type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BP}/backport-payload-content",
                                        "valueCode": "id-only"}]},
        },
    }


def task(status: str = "requested") -> dict[str, Any]:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "owner": {"reference": "Organization/o1"}}


def subscribe(client: httpx.Client, endpoint: str, count: int) -> None:
    ids = []
    for _ in range(count):
        r = client.post("/Subscription", json=subscription(endpoint))
        r.raise_for_status()
        ids.append(r.json()["id"])
    deadline = time.monotonic() + 120
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for id in list(pending):
            if client.get(f"/Subscription/{id}").json()["status"] == "active":
                pending.discard(id)
        time.sleep(0.1)
    if pending:
        raise SystemExit(f"{len(pending)} subscriptions never became active")


def client_for(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base, timeout=30,
                        headers={"Content-Type": "application/fhir+json"})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def wait_all(rec: Receiver, expected: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with rec.lock:
            got = {n for ns in rec.numbers.values() for n in ns}
        if len(got) >= expected:
            return
        time.sleep(0.1)


def database(args: argparse.Namespace, folder: Path, name: str) -> str:
    if args.database_url:
        return str(args.database_url)
    return f"sqlite:///{folder / name}.db"


@contextmanager
def fresh_database(args: argparse.Namespace, folder: Path, name: str) -> Iterator[str]:
    """A fresh database for one throughput run: a new SQLite file, or with ``--database-url``
    (a PostgreSQL URL) a new database on that server, dropped afterwards."""
    if not args.database_url:
        yield database(args, folder, name)
        return
    import psycopg
    from psycopg import sql

    admin = str(args.database_url)
    db = f"bench_{name.replace('-', '_')}_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    try:
        yield urlunsplit(urlsplit(admin)._replace(path="/" + db))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )


def idle_and_soak(args: argparse.Namespace, folder: Path, checkout: Path, tag: str,
                  delivery: str | None = None                  ) -> dict[str, Any]:
    rec = Receiver()
    http_server, endpoint = start_receiver(rec)
    server = Server(database(args, folder, f"soak-{tag}"), folder / f"soak-{tag}.log", checkout,
                    delivery)
    acks: dict[str, float] = {}
    lock = threading.Lock()
    try:
        with client_for(server) as client:
            subscribe(client, endpoint, 1)
            # 1. idle: one write at a time
            idle_refs = []
            for _ in range(200):
                r = client.post("/Task", json=task())
                t = time.monotonic()
                r.raise_for_status()
                ref = f"Task/{r.json()['id']}/_history/1"
                acks[ref] = t
                idle_refs.append(ref)
                time.sleep(0.05)
            wait_all(rec, 200, 60)
            idle = [(rec.arrivals[r] - acks[r]) for r in idle_refs if r in rec.arrivals]
            # 2. soak
            tasks: list[tuple[str, dict[str, Any]]] = []
            for _ in range(args.tasks):
                r = client.post("/Task", json=task())
                r.raise_for_status()
                body = r.json()
                acks[f"Task/{body['id']}/_history/1"] = time.monotonic()
                tasks.append((body["id"], body))
        written = args.tasks
        remaining = args.transitions - args.tasks
        soak_refs: list[str] = []
        stop = threading.Event()

        def outages() -> None:
            # outage k starts once k/outages of the transitions are written: spread evenly.
            # Its length: --outage-seconds (fixed range), or by default a share
            # (--outage-share) of the time the last 1/outages of the transitions took, so the
            # receiver is down that share of the soak whatever the write rate.
            rng = random.Random(7)
            n = 0
            every = max(1, remaining // args.outages)
            last_start = time.monotonic()
            interval = 1.0  # before the first measured interval
            while n < args.outages and not stop.is_set():
                with lock:
                    progress = len(soak_refs)
                if progress < n * every:
                    time.sleep(0.01)
                    continue
                now = time.monotonic()
                if n > 0:
                    interval = now - last_start
                last_start = now
                if args.outage_seconds:
                    low, high = args.outage_seconds
                else:
                    low, high = (args.outage_share[0] * interval, args.outage_share[1] * interval)
                length = max(0.05, min(rng.uniform(low, high), args.outage_max))
                rec.down = True
                time.sleep(length)
                rec.down = False
                down.append(length)
                n += 1
            rec.down = False
            outage_count.append(n)

        outage_count: list[int] = []
        down: list[float] = []

        def writer(part: list[tuple[str, dict[str, Any]]], updates: int) -> None:
            with client_for(server) as c:
                done = 0
                step = 1
                while done < updates:
                    for id, body in part:
                        if done >= updates:
                            break
                        body["status"] = STATUSES[step % len(STATUSES)]
                        r = c.put(f"/Task/{id}", json=body)
                        t = time.monotonic()
                        r.raise_for_status()
                        new = r.json()
                        body["meta"] = new["meta"]
                        ref = f"Task/{id}/_history/{new['meta']['versionId']}"
                        with lock:
                            acks[ref] = t
                            soak_refs.append(ref)
                        done += 1
                    step += 1

        started = time.monotonic()
        o = threading.Thread(target=outages)
        o.start()
        threads = []
        per = remaining // 4
        for k in range(4):
            n = per if k < 3 else remaining - 3 * per
            threads.append(threading.Thread(target=writer, args=(tasks[k::4], n)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        write_seconds = time.monotonic() - started
        written += remaining
        expected = 200 + written
        wait_all(rec, expected, 600)
        stop.set()
        o.join()
        total = time.monotonic() - started
        with rec.lock:
            numbers = rec.numbers
            seen = [n for ns in numbers.values() for n in ns]
        distinct = set(seen)
        lost = sorted(set(range(1, expected + 1)) - distinct)
        soak = [(rec.arrivals[r] - acks[r]) for r in soak_refs if r in rec.arrivals]
        tenth = max(1, len(soak) // 10)  # in write order: does a backlog build up?
        by_tenth = [round(pct(soak[i:i + tenth], 0.95), 2) for i in range(0, len(soak), tenth)]
        order_ok = all(
            _first_arrivals_ordered(ns) for ns in numbers.values()
        )
        return {
            "idle_events": 200,
            "idle_p50_s": statistics.median(idle) if idle else None,
            "idle_p95_s": pct(idle, 0.95),
            "idle_max_s": max(idle) if idle else None,
            "soak_transitions": written,
            "soak_outages": outage_count[0] if outage_count else 0,
            "outage_seconds_total": round(sum(down), 1),
            "outage_seconds_p50_max": [round(statistics.median(down), 2) if down else None,
                                       round(max(down), 2) if down else None],
            "receiver_down_share_of_writing": round(sum(down) / write_seconds, 2),
            "refused_posts": rec.refused,
            "soak_write_seconds": round(write_seconds, 1),
            "soak_total_seconds": round(total, 1),
            "expected_events": expected,
            "lost": len(lost),
            "lost_first": lost[:10],
            "duplicates": len(seen) - len(distinct),
            "first_arrivals_in_order": order_ok,
            "soak_p50_s": statistics.median(soak) if soak else None,
            "soak_p95_s": pct(soak, 0.95),
            "soak_max_s": max(soak) if soak else None,
            "soak_p95_s_by_tenth_of_writes": by_tenth[:10],
        }
    finally:
        server.stop()
        http_server.shutdown()


def _first_arrivals_ordered(numbers: list[int]) -> bool:
    firsts: list[int] = []
    seen: set[int] = set()
    for n in numbers:
        if n not in seen:
            seen.add(n)
            firsts.append(n)
    return firsts == sorted(firsts)


def throughput(args: argparse.Namespace, folder: Path, subs: int, run: int, checkout: Path,
               tag: str, delivery: str | None = None) -> tuple[float, float, float, float]:
    """Writes per second, the serving process's CPU milliseconds per write (its delivery
    work included), its delivery child's and the receiver's (parsing each notification and
    checking its numbers; it runs in this process, on the same cores), for ``subs``
    matching subscriptions."""
    with fresh_database(args, folder, f"tp-{tag}-{subs}-{run}") as url:
        return _throughput(args, folder, subs, run, checkout, tag, delivery, url)


class ReceiverProcess:
    """The throughput mode's receiver in a process of its own (``--receiver process``): it
    parses and checks every notification as the in-process one does, without taking the
    writer threads' interpreter lock; its CPU is the process's."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._entries = ctx.Value("q", 0)
        self._posts = ctx.Value("q", 0)
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        self.proc = ctx.Process(target=_receiver_main, daemon=True,
                                args=(self._entries, self._posts, self._stop, self._out))
        self.proc.start()
        self.endpoint: str = self._out.get(timeout=60)
        self.summary: dict[str, Any] = {}

    @property
    def entries(self) -> int:
        return int(self._entries.value)

    @property
    def posts(self) -> int:
        return int(self._posts.value)

    def cpu_seconds(self) -> float:
        return cpu_seconds(int(self.proc.pid or 0))

    def shutdown(self) -> None:
        self._stop.set()
        self.summary = self._out.get(timeout=60)
        self.proc.join(10)


def _receiver_main(entries: Any, posts: Any, stop: Any, out: Any) -> None:
    rec = Receiver()
    http_server, endpoint = start_receiver(rec)
    out.put(endpoint)
    while not stop.wait(0.05):
        entries.value, posts.value = rec.entries, rec.posts
    http_server.shutdown()
    with rec.lock:
        out.put({"numbers_ok": numbers_ok(rec.numbers)})


def numbers_ok(numbers: dict[str, list[int]]) -> bool:
    """Every subscription's first arrivals in order and gap-free from 1."""
    return all(
        _first_arrivals_ordered(ns) and sorted(set(ns)) == list(range(1, len(set(ns)) + 1))
        for ns in numbers.values()
    )


def _throughput(args: argparse.Namespace, folder: Path, subs: int, run: int, checkout: Path,
                tag: str, delivery: str | None, url: str) -> tuple[float, float, float, float]:
    if args.receiver == "process":
        rec: Any = ReceiverProcess()
        http_server, endpoint = rec, rec.endpoint
        receiver_cpu = rec.cpu_seconds()
    else:
        rec = Receiver()
        http_server, endpoint = start_receiver(rec)
    server = Server(url, folder / f"tp-{tag}-{subs}-{run}.log", checkout, delivery)
    try:
        with client_for(server) as client:
            if subs:
                subscribe(client, endpoint, subs)
        count = args.throughput_writes

        def writer(n: int) -> None:
            with client_for(server) as c:
                for _ in range(n):
                    c.post("/Task", json=task()).raise_for_status()

        threads = [threading.Thread(target=writer, args=(count // 4,)) for _ in range(4)]
        cpu = cpu_seconds(server.proc.pid)
        child_cpu = children_cpu_seconds(server.proc.pid)
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        written = count // 4 * 4
        # the CPU counted until every notification is out: delivery work left for after
        # the writes (a backlog) is counted too
        deadline = time.monotonic() + 600
        while subs and rec.entries < written * subs and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.monotonic() - started - wall
        cpu = cpu_seconds(server.proc.pid) - cpu
        child_cpu = children_cpu_seconds(server.proc.pid) - child_cpu
        if args.receiver == "process":
            receiver = 1000 * (rec.cpu_seconds() - receiver_cpu) / written
            rec.shutdown()
            ok = rec.summary["numbers_ok"]
        else:
            receiver = 1000 * rec.cpu / written
            with rec.lock:
                ok = numbers_ok(rec.numbers)
        print(f"  {tag} subs={subs}: {rec.entries} event entries, {rec.posts} POSTs, "
              f"all out {drained:.1f} s after the last write, numbers in order and "
              f"gap-free: {ok}", flush=True)
        return written / wall, 1000 * cpu / written, 1000 * child_cpu / written, receiver
    finally:
        server.stop()
        if args.receiver != "process" or not rec.summary:
            http_server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--outages", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--throughput-writes", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--outage-share", type=float, nargs=2, default=[0.2, 0.5],
                        metavar=("LOW", "HIGH"),
                        help="each outage lasts this share of the last outage interval")
    parser.add_argument("--outage-seconds", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="fixed outage lengths instead (0.2 1.0: the first version's)")
    parser.add_argument("--outage-max", type=float, default=1.0)
    parser.add_argument("--database-url",
                        help="PostgreSQL: the soak's database; throughput runs each create a "
                        "fresh database on that server (dropped after)")
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--receiver", choices=("thread", "process"), default="thread",
                        help="throughput mode: the receiver in this process's threads (as "
                             "the soak) or in a process of its own (off the writers' GIL)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a source tree to run the server from (repeat for an A/B in one "
                        "window, runs interleaved); default this one")
    parser.add_argument("--delivery", action="append", choices=("inline", "process"),
                        help="the server's subscription_delivery (repeat for an A/B in one "
                        "window); default the server's own")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting, e.g. SUBSCRIPTION_NOTIFICATION_INTERVAL_SECONDS=1")
    args = parser.parse_args()
    for setting in args.setting:
        name, _, value = setting.partition("=")
        SETTINGS[f"CALAIM_FHIR_{name.upper()}"] = value
    roots = [c.resolve() for c in (args.checkout or [ROOT])]
    modes: list[str | None] = list(args.delivery or [None])
    arms = [(c, m) for c in roots for m in modes]
    checkouts = [c for c, _ in arms]
    deliveries = [m for _, m in arms]
    tags = [(c.name or "root") + (f"-{m}" if m else "") for c, m in arms]
    out: dict[str, Any] = {"load_before": os.getloadavg(), "checkouts": [str(c) for c in checkouts]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_soak:
            for checkout, tag, mode in zip(checkouts, tags, deliveries, strict=True):
                out[f"soak {tag}"] = idle_and_soak(args, folder, checkout, tag, mode)
                out[f"load_after_soak {tag}"] = os.getloadavg()
                print(json.dumps(out, indent=1), flush=True)
        if not args.skip_throughput:
            runs: dict[str, list[tuple[float, float, float, float]]] = {}
            for r in range(args.rounds):
                order = list(zip(checkouts, tags, deliveries, strict=True))
                if r % 2:
                    order.reverse()  # ABBA
                for checkout, tag, mode in order:
                    for subs in (0, 100) if r % 2 == 0 else (100, 0):
                        key = f"{tag} subs={subs}"
                        runs.setdefault(key, []).append(
                            throughput(args, folder, subs, r, checkout, tag, mode)
                        )
                        rate, cpu, child, receiver = runs[key][-1]
                        print(f"throughput {key} round={r}: {rate:.1f}/s, server CPU "
                              f"{cpu:.2f} + delivery process {child:.2f} ms/write, "
                              f"receiver {receiver:.2f} ms/write, "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)
            out["throughput"] = runs
            for tag in tags:
                a, b = runs[f"{tag} subs=0"], runs[f"{tag} subs=100"]
                ra, rb = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
                ca, cb = statistics.median(x[1] for x in a), statistics.median(x[1] for x in b)
                out[f"{tag} writes_per_s_median none/100"] = [round(ra, 1), round(rb, 1)]
                out[f"{tag} slowdown_pct"] = round(100 * (ra - rb) / ra, 1)
                out[f"{tag} cpu_ms_per_write_median none/100"] = [round(ca, 2), round(cb, 2)]
                da, db = statistics.median(x[2] for x in a), statistics.median(x[2] for x in b)
                out[f"{tag} delivery_process_cpu_ms_per_write_median none/100"] = [
                    round(da, 2), round(db, 2)]
                ea, eb = statistics.median(x[3] for x in a), statistics.median(x[3] for x in b)
                out[f"{tag} receiver_cpu_ms_per_write_median none/100"] = [
                    round(ea, 2), round(eb, 2)]
        out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
