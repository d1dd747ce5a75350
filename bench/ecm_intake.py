"""ECM referral intake with screening: referrals per second through transactions.

    .venv/bin/python bench/ecm_intake.py [--referrals 1000] [--clients 8] [--workers 1]
        [--batch 1] [--screen-bundle batch|transaction] [--database-url URL] [--json FILE]

Starts ``calaim-fhir serve`` (``--workers`` processes, default one) on a fresh SQLite file in a
temp folder (or on ``--database-url``), loads ``examples/resources`` but its Tasks and
ServiceRequests (the plan, the referring organisations), then sends ``--referrals`` intakes from
``--clients`` threads, each over its own keep-alive connection. One intake is:

1. a transaction Bundle: the member (``ecm-member`` Patient, conditional create on the CIN), the
   member's Medi-Cal managed care Coverage (conditional create), the ``ecm-referral``
   ServiceRequest and its referral Task (``focus`` the ServiceRequest's ``urn:uuid``): the
   server acknowledges it (``received``, the decision date);
2. ``POST Task/[id]/$ecm-screen``: ``$ecm-eligibility`` as of the referral date, the
   ``ecm-screening-result`` Observation stored, the referral and the Task updated (the
   synthetic members have a Medi-Cal Coverage and a homelessness flag but no qualifying
   condition: the screen is not met, so the Task is rejected and two ``ecm-notice``
   Communications are written too — the heaviest path; ``screens`` counts the outcomes).

``--batch N``: one transaction carries N intakes (4N entries); ``--screen-bundle
transaction`` (or ``batch``): their screenings are one Bundle of N ``POST
Task/[id]/$ecm-screen`` entries (decision 0024) instead of N calls. p50/p95 are then per group
of N (the transaction and its screenings).

Every member is a different person, so no intake is a duplicate. The figure is intakes
completed (both calls 200) divided by the wall time from the first request to the last answer.
A warm-up of 20 intakes (other members) runs first. Load averages are printed before and after,
and the server's own CPU time per intake (its process group's user + system time over the run)
with the rate one core could sustain at that cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("calaim-fhir")
EXAMPLES = ROOT / "examples" / "resources"
FHIR_JSON = "application/fhir+json"
CIN = "https://calaim-fhir.org/fhir/sid/medi-cal-cin"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _intake(n: int) -> dict[str, Any]:
    referral = json.loads((EXAMPLES / "ServiceRequest-ecm-referral-example.json").read_text())
    referral.pop("id")
    referral.pop("supportingInfo", None)
    cin = f"9{n:07d}B"
    member_url = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
    coverage_url = f"urn:uuid:00000000-0000-4001-8000-{n:012d}"
    referral_url = f"urn:uuid:00000000-0000-4002-8000-{n:012d}"
    referral["identifier"] = [{"system": "https://calaim-fhir.org/fhir/sid/ecm-referral",
                               "value": f"BENCH-{n:07d}"}]
    referral["subject"] = {"reference": member_url}
    referral["authoredOn"] = "2026-02-03T11:02:00-08:00"
    member = {
        "resourceType": "Patient",
        "meta": {"profile": ["http://calaim-fhir.org/fhir/StructureDefinition/ecm-member"]},
        "identifier": [{"system": CIN, "value": cin, "type": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MA"}]}}],
        "name": [{"family": f"Bench{n}", "given": ["Member"]}],
        "gender": "female",
        "birthDate": "1979-05-0" + str(1 + n % 9),
        "extension": [{"url": "http://calaim-fhir.org/fhir/StructureDefinition/"
                              "homelessness-indicator", "valueBoolean": True}],
    }
    coverage = {
        "resourceType": "Coverage",
        "identifier": [{"system": "https://calaim-fhir.org/fhir/sid/medi-cal-coverage",
                        "value": f"GPHP-{cin}"}],
        "status": "active",
        "type": {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.221.5", "code": "21"}]},
        "beneficiary": {"reference": member_url},
        "period": {"start": "2025-01-01"},
        "payor": [{"reference": "Organization/golden-poppy-health-plan"}],
    }
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": referral_url},
        "for": {"reference": member_url},
        "requester": {"reference": "Organization/casa-segura-housing"},
        "owner": {"reference": "Organization/golden-poppy-health-plan"},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": member_url, "resource": member,
             "request": {"method": "POST", "url": "Patient",
                         "ifNoneExist": f"identifier={CIN}|{cin}"}},
            {"fullUrl": coverage_url, "resource": coverage,
             "request": {"method": "POST", "url": "Coverage"}},
            {"fullUrl": referral_url, "resource": referral,
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }


def intakes(ns: range) -> dict[str, Any]:
    """One transaction carrying the intakes ``ns`` (four entries each, in order)."""
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [e for n in ns for e in _intake(n)["entry"]]}


def tasks(answer: dict[str, Any]) -> list[str]:
    """The referral Tasks (``Task/id``) a transaction of ``intakes`` created, in order."""
    return [e["response"]["location"].split("/_history")[0]
            for e in answer["entry"][3::4]]


SCREEN = True
SCREEN_BUNDLE = ""  # "": one $ecm-screen call per referral; "batch" / "transaction": one Bundle
OUTCOMES: dict[str, int] = {}
EMPTY = {"resourceType": "Parameters", "parameter": []}


def screenings(tasks: list[str], kind: str) -> dict[str, Any]:
    """One ``kind`` Bundle calling ``$ecm-screen`` on each of ``tasks``."""
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": EMPTY, "request": {"method": "POST", "url": f"{task}/$ecm-screen"}}
        for task in tasks]}


def _count(answer: dict[str, Any]) -> None:
    screen = next(p["valueCode"] for p in answer["parameter"] if p["name"] == "screen")
    OUTCOMES[screen] = OUTCOMES.get(screen, 0) + 1


def _one(client: httpx.Client, ns: range) -> str | None:
    """The intakes ``ns`` in one transaction and the screening of each; None, or what went
    wrong."""
    answer = client.post("", json=intakes(ns))
    if answer.status_code != 200:
        return f"transaction {answer.status_code}: {answer.text[:300]}"
    if not SCREEN:
        return None
    if SCREEN_BUNDLE:
        screened = client.post("", json=screenings(tasks(answer.json()), SCREEN_BUNDLE))
        if screened.status_code != 200:
            return f"$ecm-screen {SCREEN_BUNDLE} {screened.status_code}: {screened.text[:300]}"
        for entry in screened.json()["entry"]:
            if not entry["response"]["status"].startswith("200"):
                return f"$ecm-screen entry {entry['response']}"[:300]
            _count(entry["resource"])
        return None
    for task in tasks(answer.json()):
        screened = client.post(f"/{task}/$ecm-screen", json=EMPTY)
        if screened.status_code != 200:
            return f"$ecm-screen {screened.status_code}: {screened.text[:300]}"
        _count(screened.json())
    return None


def _load_examples(client: httpx.Client) -> None:
    entries = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_text())
        if resource["resourceType"] not in ("Task", "ServiceRequest"):
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    answer = client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                   "entry": entries})
    answer.raise_for_status()


def _group_cpu(group: int) -> float:
    """CPU seconds (user + system) of the processes of a process group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def run(base: str, referrals: int, clients: int, group: int | None = None,
        batch: int = 1) -> dict[str, Any]:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        _load_examples(client)
        for n in range(10_000_000, 10_000_020, batch):  # warm-up
            problem = _one(client, range(n, min(n + batch, 10_000_020)))
            assert problem is None, problem
    problems: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(0, referrals, batch))
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
            barrier.wait()
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                ns = range(n, min(n + batch, referrals))
                started = time.perf_counter()
                problem = _one(c, ns)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if problem is not None:
                        problems.extend([problem] * len(ns))

    OUTCOMES.clear()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    load_before = os.getloadavg()
    cpu_before = _group_cpu(group) if group is not None else 0.0
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = _group_cpu(group) - cpu_before if group is not None else None
    latencies.sort()
    return {
        "referrals": referrals,
        "clients": clients,
        "referrals_per_transaction": batch,
        "errors": len(problems),
        "first_error": problems[0] if problems else None,
        "wall_s": round(wall, 2),
        "referrals_per_s": round((referrals - len(problems)) / wall, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1),
        "screens": dict(OUTCOMES),
        # the server's own CPU per intake, and the rate one core could sustain at that cost:
        # less sensitive to the other work on a shared machine than the wall-time figure
        "server_cpu_ms_per_referral": None if cpu is None else round(1000 * cpu / referrals, 2),
        "one_core_ceiling_per_s": None if not cpu else round(referrals / cpu, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--referrals", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--database-url")
    parser.add_argument("--json")
    parser.add_argument("--no-screen", action="store_true", help="the transactions alone")
    parser.add_argument("--batch", type=int, default=1, help="referrals per transaction")
    parser.add_argument("--screen-bundle", choices=("batch", "transaction"),
                        help="screen a transaction's referrals by one Bundle of $ecm-screen "
                        "calls (default: one call each)")
    args = parser.parse_args()
    global SCREEN, SCREEN_BUNDLE
    SCREEN = not args.no_screen
    SCREEN_BUNDLE = args.screen_bundle or ""
    folder = Path(tempfile.mkdtemp(prefix="ecm-intake-"))
    url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), "--database-url", url,
         "--workers", str(args.workers)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not start")
        result = run(base, args.referrals, args.clients, server.pid, args.batch)
        result["store"] = url.split(":", 1)[0]
        result["workers"] = args.workers
        result["screening"] = SCREEN
        result["screen_bundle"] = SCREEN_BUNDLE or None
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        os.killpg(server.pid, 15)
        server.wait(20)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
