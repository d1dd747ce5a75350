"""Validation benchmarks (issue targets in bench/RESULTS.md, "Profiles and validation").

    .venv/bin/python bench/validation/run.py [--json bench/out/validation.json]

1. In process: full validation (base structure + every applicable profile, invariants and
   terminology) of each valid example of examples/resources that claims one of our profiles,
   without reference resolution and with resolution against the examples held in memory
   (the store reads are part of the HTTP figures); p50/p95 µs over ``--rounds`` passes.
   Also the time to compile every profile.
2. Over HTTP, one server process (``calaim-fhir serve``, SQLite, uvloop):
   - start-up: process start until ``/fhir/metadata`` answers (profiles compiled at start-up);
   - ``wrk -t1 -c16`` POST of the profiled ECM referral example (references resolved against
     the store: member, consent, requester);
   - 100-entry transactions of profiled resources (50 ECM referrals + 50 referral Tasks
     focusing them through urn:uuid fullUrls), one client, p50/p95 ms end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import free_port, percentile  # noqa: E402

EXAMPLES = ROOT / "examples" / "resources"
OUR = "http://calaim-fhir.org/fhir/StructureDefinition/"


def pct(values: list[float], p: float) -> float:
    return percentile(sorted(values), p) or 0.0


def examples() -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]


def in_process(rounds: int) -> dict[str, Any]:
    from server.fhir.base_validation import base_validator
    from server.fhir.conformance import conformance
    from server.fhir.profiles import ProfileSet
    from server.search.service import build_search_service
    from server.settings import Settings
    from server.validation_service import build_validation

    definitions = conformance()
    started = time.perf_counter()
    ProfileSet(definitions.local("StructureDefinition"), definitions.terminology)
    compile_ms = (time.perf_counter() - started) * 1000
    settings = Settings(database_url="sqlite:///:memory:")
    validation = build_validation(settings, build_search_service(settings))
    base = base_validator()
    resources = examples()
    by_key = {(r["resourceType"], r["id"]): r for r in resources}
    profiled = [
        r for r in resources if any(u.startswith(OUR) for u in r.get("meta", {}).get("profile", []))
    ]
    out: dict[str, Any] = {"compile_ms": round(compile_ms, 1), "resources": len(profiled)}
    for label, lookup in (("no_resolution", None), ("resolution", lambda t, i: by_key.get((t, i)))):
        times: list[float] = []
        for r in profiled:  # warm-up: per-type schema validators compile on first use
            validation.check(r, lookup=lookup)
        for _ in range(rounds):
            for r in profiled:
                t = time.perf_counter()
                assert not base.validate(r)
                findings = validation.check(r, lookup=lookup)
                times.append((time.perf_counter() - t) * 1e6)
                assert not findings.errors, (r["id"], findings.errors)
        out[label] = {"p50_us": round(pct(times, 50)), "p95_us": round(pct(times, 95))}
    return out


def transaction_bundle(
    referral: dict[str, Any], task: dict[str, Any], pairs: int
) -> dict[str, Any]:
    entries = []
    for _ in range(pairs):
        ref_url = f"urn:uuid:{uuid.uuid4()}"
        r = {k: v for k, v in referral.items() if k != "id"}
        t = {k: v for k, v in task.items() if k != "id"}
        t["focus"] = {"reference": ref_url}
        entries.append(
            {
                "fullUrl": ref_url,
                "resource": r,
                "request": {"method": "POST", "url": "ServiceRequest"},
            }
        )
        entries.append({"resource": t, "request": {"method": "POST", "url": "Task"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def over_http(duration: str, transactions: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "CALAIM_FHIR_BASE_URL": f"{base}/fhir"}
        cmd = [
            str(ROOT / ".venv" / "bin" / "calaim-fhir"),
            "serve",
            "--database-url",
            f"sqlite:///{tmp}/b.db",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        started = time.perf_counter()
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        try:
            with httpx.Client(base_url=f"{base}/fhir/", timeout=60) as client:
                while True:
                    try:
                        if client.get("metadata").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.02)
                out["startup_s"] = round(time.perf_counter() - started, 2)
                resources = examples()
                bundle = {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {
                            "resource": r,
                            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                        }
                        for r in resources
                    ],
                }
                assert (
                    client.post(
                        "", json=bundle, headers={"Content-Type": "application/fhir+json"}
                    ).status_code
                    == 200
                )
                by_name = {f"{r['resourceType']}-{r['id']}": r for r in resources}
                referral = by_name["ServiceRequest-ecm-referral-example"]
                task = by_name["Task-ecm-referral-task-example"]
                body = Path(tmp) / "sr.json"
                body.write_bytes(orjson.dumps({k: v for k, v in referral.items() if k != "id"}))
                wrk = subprocess.run(
                    [
                        "wrk",
                        "-t1",
                        "-c16",
                        f"-d{duration}",
                        "--latency",
                        "-s",
                        str(ROOT / "bench" / "create.lua"),
                        base,
                    ],
                    env={**os.environ, "BENCH_DIR": str(ROOT / "bench"), "BENCH_BODY": str(body)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                lines = wrk.stdout.splitlines()
                rate = next(line for line in lines if line.startswith("Requests/sec"))
                non2xx = [line for line in lines if "Non-2xx" in line]
                out["create_profiled_sr_per_s"] = float(rate.split()[1])
                out["create_non_2xx"] = non2xx[0].strip() if non2xx else "0"
                times: list[float] = []
                for i in range(transactions + 3):
                    payload = orjson.dumps(transaction_bundle(referral, task, 50))
                    t = time.perf_counter()
                    response = client.post(
                        "",
                        content=payload,
                        headers={
                            "Content-Type": "application/fhir+json",
                            "Prefer": "return=minimal",
                        },
                    )
                    elapsed = (time.perf_counter() - t) * 1000
                    assert response.status_code == 200, response.text[:500]
                    if i >= 3:  # warm-up
                        times.append(elapsed)
                out["transaction_100_profiled"] = {
                    "p50_ms": round(median(times), 1),
                    "p95_ms": round(pct(times, 95), 1),
                    "n": len(times),
                }
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--transactions", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = {
        "in_process": in_process(args.rounds),
        "http": over_http(args.duration, args.transactions),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
