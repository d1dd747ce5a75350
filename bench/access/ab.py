"""Read and search throughput without an access policy and with the compartment policy,
measured in alternation (ABBAAB per scenario) in one window, against one SQLite store.

Two servers (``app.py``, one process each) on the same store: ``none`` (the local operator,
nothing narrowed) and ``compartment`` (every request acts for Patient/p1 under
``CompartmentPolicy``). The store holds 300 Patients with 8 Observations each (p1: 40), each
performed by one of 20 Practitioners. Scenarios (wrk, 16 connections, 1 thread, a warm-up
before each run): ``read`` (one of p1's Observations), ``search-patient``
(``Observation?subject=Patient/p1&_count=10``: the same answer for both), ``search-code``
(``Observation?code=...&_count=10``: every patient's for ``none``, p1's for ``compartment``),
``search-include`` (``search-patient`` with ``_include=Observation:performer``). Prints one
JSON line per run and a Markdown table (median rps over the rounds, ratio, load average).

    .venv/bin/python bench/access/ab.py [--rounds 3] [--duration 5] [--out runs.jsonl]
        [--policy compartment|relationships]

``--policy relationships``: the second server acts for ``Organization/ecm`` (a provider)
under ``RelationshipPolicy`` (grants joined in every statement, release of information and
Part 2 conditions on); the store also holds its EpisodeOfCare with p1..p150 and p1's
Consent naming it, so ``search-code`` answers p1..p150's Observations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
PY = sys.executable
sys.path.insert(0, str(BENCH))

from report import parse_wrk  # noqa: E402
from writes.ab import free_port  # noqa: E402

PATIENTS, PER_PATIENT, P1_EXTRA, PRACTITIONERS = 300, 8, 32, 20
CODES = "urn:bench:codes"
SCENARIOS = {
    "read": None,  # p1's observation ids
    "search-patient": ["/fhir/Observation?subject=Patient/p1&_count=10"],
    "search-code": [f"/fhir/Observation?code={CODES}|c1&_count=10"],
    "search-include": [
        "/fhir/Observation?subject=Patient/p1&_count=10&_include=Observation:performer"
    ],
}


class Server:
    def __init__(self, policy: str, database_url: str, work: Path) -> None:
        self.policy = policy
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
        env.update(
            PYTHONPATH=str(ROOT),
            CALAIM_FHIR_DATABASE_URL=database_url,
            CALAIM_FHIR_BASE_URL=f"{self.base}/fhir",
            CALAIM_FHIR_AUTH="off",  # callers are named by the app (app.py)
            BENCH_ACCESS_POLICY=policy,
            BENCH_ACCESS_PATIENT="p1",
        )
        self.log = open(work / f"{policy}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "uvicorn",
                "--factory",
                "bench.access.app:create",
                "--port",
                str(self.port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/fhir/metadata", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server not ready: {(work / f'{policy}.log').read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


MANAGED = PATIENTS // 2  # the ECM provider manages p1..p150 (relationships policy)


def _relationships() -> list[dict[str, Any]]:
    """The ECM provider (a covered entity), its EpisodeOfCare with half of the patients, and
    p1's release of information naming it."""
    system = "http://terminology.hl7.org/CodeSystem/organization-type"
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Organization",
            "id": "ecm",
            "name": "ECM provider",
            "type": [{"coding": [{"system": system, "code": "prov"}]}],
        }
    ]
    for p in range(1, MANAGED + 1):
        out.append(
            {
                "resourceType": "EpisodeOfCare",
                "id": f"eoc{p}",
                "status": "active",
                "patient": {"reference": f"Patient/p{p}"},
                "managingOrganization": {"reference": "Organization/ecm"},
            }
        )
    out.append(
        {
            "resourceType": "Consent",
            "id": "roi1",
            "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p1"},
            "provision": {
                "type": "permit",
                "actor": [
                    {"role": {"text": "recipient"}, "reference": {"reference": "Organization/ecm"}}
                ],
            },
        }
    )
    return out


def _entries() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(PRACTITIONERS):
        out.append({"resourceType": "Practitioner", "id": f"pr{n}", "name": [{"family": f"P{n}"}]})
    for p in range(1, PATIENTS + 1):
        out.append({"resourceType": "Patient", "id": f"p{p}", "name": [{"family": f"F{p}"}]})
        for k in range(PER_PATIENT + (P1_EXTRA if p == 1 else 0)):
            out.append(
                {
                    "resourceType": "Observation",
                    "id": f"o{p}-{k}",
                    "status": "final",
                    "code": {"coding": [{"system": CODES, "code": f"c{k % 5}"}]},
                    "subject": {"reference": f"Patient/p{p}"},
                    "performer": [{"reference": f"Practitioner/pr{(p + k) % PRACTITIONERS}"}],
                }
            )
    return out


def bundles(policy: str = "compartment") -> list[dict[str, Any]]:
    """The data as 100-entry transactions (with the relationships for that policy)."""
    entries = _entries() + (_relationships() if policy == "relationships" else [])
    return [
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in entries[start : start + 100]
            ],
        }
        for start in range(0, len(entries), 100)
    ]


def p1_reads() -> list[str]:
    """The paths of p1's Observations."""
    return [
        f"/fhir/Observation/{r['id']}"
        for r in _entries()
        if r["resourceType"] == "Observation" and r["subject"]["reference"] == "Patient/p1"
    ]


def seed(base: str, policy: str) -> list[str]:
    """Load the data; the paths of p1's Observations."""
    with httpx.Client(base_url=base, timeout=120) as client:
        for bundle in bundles(policy):
            client.post("/fhir", json=bundle).raise_for_status()
    return p1_reads()


def wrk(base: str, paths: Path, seconds: float) -> dict[str, Any]:
    command = [
        "wrk",
        "-t1",
        "-c16",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(BENCH / "access" / "get.lua"),
        base,
    ]
    env = {**os.environ, "BENCH_DIR": str(BENCH), "BENCH_PATHS": str(paths)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--policy", choices=["compartment", "relationships"], default="compartment")
    args = parser.parse_args()
    policy_name = args.policy
    work = Path(tempfile.mkdtemp(prefix="bench-access-"))
    database_url = f"sqlite:///{work / 'store.db'}"
    servers = {"none": Server("none", database_url, work)}
    runs: list[dict[str, Any]] = []
    try:
        reads = seed(servers["none"].base, policy_name)
        servers[policy_name] = Server(policy_name, database_url, work)
        for name, paths in SCENARIOS.items():
            file = work / f"{name}.txt"
            file.write_text("\n".join(paths or reads) + "\n")
            for policy in servers:  # each answer checked once: 200, and what it returns
                response = httpx.get(servers[policy].base + (paths or reads)[0])
                assert response.status_code == 200, response.text
            order = ["none", policy_name, policy_name, "none"] * args.rounds
            order = order[: 2 * args.rounds]
            for policy in order:
                base = servers[policy].base
                wrk(base, file, 1)  # warm-up
                load = os.getloadavg()[0]
                figures = wrk(base, file, args.duration)
                run = {"scenario": name, "policy": policy, "load1": round(load, 2), **figures}
                runs.append(run)
                print(json.dumps(run), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in runs))
    print()
    print(
        f"| scenario | no policy rps (median) | {policy_name} rps (median) | slower"
        f" | p50 ms none / {policy_name} | load (1 min) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in SCENARIOS:
        of = {p: [r for r in runs if r["scenario"] == name and r["policy"] == p] for p in servers}
        rps = {p: statistics.median(r["rps"] for r in rs) for p, rs in of.items()}
        p50 = {p: statistics.median(r["latency_ms"]["p50"] for r in rs) for p, rs in of.items()}
        loads = [r["load1"] for r in runs if r["scenario"] == name]
        slower = 1 - rps[policy_name] / rps["none"]
        print(
            f"| {name} | {rps['none']:,.0f} | {rps[policy_name]:,.0f} | {slower:.1%} |"
            f" {p50['none']:.2f} / {p50[policy_name]:.2f} | {min(loads):.2f}–{max(loads):.2f} |"
        )


if __name__ == "__main__":
    main()
