"""``$ecm-assign`` preview latency with 1,000 candidate providers and 20,000 members stored.

    .venv/bin/python bench/ecm_assign.py [--providers 1000] [--members 20000]
        [--assigned 5000] [--previews 500] [--database-url URL] [--loaded] [--json FILE]
        [--write-between]

Starts ``calaim-fhir serve`` (one worker) on a fresh SQLite file in a temp folder (or on
``--database-url``) and loads, as the operator, in 500-entry transactions:

- ``--providers`` provider Organizations, each with one active ``ecm-provider-service``
  HealthcareService (two adult Populations of Focus of eight, chosen round-robin, so a quarter
  of them serve ``birth-equity-adult``; English plus one other language; ``panelSize`` 50) and
  one Lead Care Manager PractitionerRole;
- ``--members`` ``ecm-member`` Patients;
- ``--assigned`` active assignments (``filler-order`` ServiceRequests naming a provider and its
  service), spread over the services: the capacity counts have rows to count;
- 200 authorized cases (an ``ecm-referral`` for ``birth-equity-adult``, the plan's accepted
  Task, the planned ``ecm-enrollment``) among the members.

Then one client calls ``POST Patient/[id]/$ecm-assign`` (``mode`` preview, the ``referral``)
``--previews`` times over the 200 cases, after 20 warm-up calls, and reports p50/p95/p99 of the
round trip. Each preview filters every ECM service by Population of Focus and network, counts
the capacity in use of the remaining ones (one grouped index count) and explains every
candidate; the parsed services and the counts are kept under the store's stamps of their types
between previews. ``--write-between`` writes a ServiceRequest (a revoked order of another
member, outside the timing) before each preview: every preview counts afresh.
Load averages are printed before and after. ``--loaded`` (with ``--database-url``) skips the
load: the store was loaded by an earlier run with the same sizes (before/after comparisons of
two builds on one store, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from harness import Server, stats  # noqa: E402

EXAMPLES = ROOT / "examples" / "resources"
FHIR_JSON = "application/fhir+json"
BASE = "http://calaim-fhir.org/fhir"
CIN = "https://calaim-fhir.org/fhir/sid/medi-cal-cin"
PLAN = "Organization/golden-poppy-health-plan"
POFS = ["homelessness-adult", "avoidable-utilization-adult", "smh-sud-adult",
        "justice-involved-adult", "ltc-risk-adult", "nf-transition-adult", "birth-equity-adult",
        "idd-youth"]
LANGUAGES = ["es", "vi", "zh", "hmn", "tl"]
CASES = 200


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return body


def _provider(i: int) -> list[dict[str, Any]]:
    service = _example("HealthcareService-ecm-provider-service-example")
    service.pop("identifier")
    service["id"] = f"svc-{i}"
    service["name"] = f"Provider {i} ECM"
    service["providedBy"] = {"reference": f"Organization/prov-{i}"}
    pofs = [POFS[i % 8], POFS[(i // 8 + i + 1) % 8]]
    if pofs[0] == pofs[1]:
        pofs[1] = POFS[(i + 3) % 8]
    service["extension"] = [
        e for e in service["extension"]
        if not e["url"].endswith(("population-of-focus", "service-capacity"))
    ] + [
        {"url": f"{BASE}/StructureDefinition/population-of-focus",
         "valueCodeableConcept": _concept(f"{BASE}/CodeSystem/ecm-population-of-focus", p)}
        for p in pofs
    ] + [{"url": f"{BASE}/StructureDefinition/service-capacity", "extension": [
        {"url": "openSlots", "valueUnsignedInt": 10},
        {"url": "panelSize", "valueUnsignedInt": 50}]}]
    service["communication"] = [_concept("urn:ietf:bcp:47", "en"),
                                _concept("urn:ietf:bcp:47", LANGUAGES[i % 5])]
    return [
        {"resourceType": "Organization", "id": f"prov-{i}", "active": True,
         "name": f"Provider {i}"},
        service,
        {"resourceType": "PractitionerRole", "id": f"lcm-{i}", "active": True,
         "organization": {"reference": f"Organization/prov-{i}"},
         "code": [_concept(f"{BASE}/CodeSystem/ecm-care-team-role", "lead-care-manager")]},
    ]


def _member(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"m-{n}",
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-member"]},
        "identifier": [{"system": CIN, "value": f"8{n:07d}C", "type": _concept(
            "http://terminology.hl7.org/CodeSystem/v2-0203", "MA")}],
        "name": [{"family": f"Bench{n}", "given": ["Member"]}],
        "gender": "female",
        "birthDate": "1990-05-0" + str(1 + n % 9),
        "address": [{"city": "Eureka", "state": "CA", "postalCode": "95501"}],
        "communication": [{"language": _concept("urn:ietf:bcp:47", "en"), "preferred": True}],
    }


def _referral(n: int) -> dict[str, Any]:
    body = _example("ServiceRequest-ecm-referral-example")
    body["id"] = f"ref-{n}"
    body.pop("identifier")
    body.pop("supportingInfo")
    body["subject"] = {"reference": f"Patient/m-{n}"}
    body["requester"] = {"reference": "Organization/casa-segura-housing"}
    body["performer"] = [{"reference": PLAN}]
    return body


def _assignment(n: int, provider: int) -> dict[str, Any]:
    order = _referral(n)
    order.pop("id")
    order.update(intent="filler-order", requester={"reference": PLAN},
                 performer=[{"reference": f"Organization/prov-{provider}"},
                            {"reference": f"HealthcareService/svc-{provider}"}])
    return order


def _case(n: int) -> list[dict[str, Any]]:
    task = {
        "resourceType": "Task", "id": f"plan-task-{n}",
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-referral-task"]},
        "status": "accepted",
        "businessStatus": _concept(f"{BASE}/CodeSystem/dhcs-referral-status", "authorized"),
        "intent": "order",
        "code": _concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": f"ServiceRequest/ref-{n}"}, "for": {"reference": f"Patient/m-{n}"},
        "authoredOn": "2026-12-01T10:00:00-08:00",
        "requester": {"reference": "Organization/casa-segura-housing"},
        "owner": {"reference": PLAN},
    }
    episode = {
        "resourceType": "EpisodeOfCare", "id": f"auth-{n}",
        "meta": {"profile": [f"{BASE}/StructureDefinition/ecm-enrollment"]},
        "extension": [
            {"url": f"{BASE}/StructureDefinition/population-of-focus",
             "valueCodeableConcept": _concept(f"{BASE}/CodeSystem/ecm-population-of-focus",
                                              "birth-equity-adult")},
            {"url": f"{BASE}/StructureDefinition/authorization-period",
             "valuePeriod": {"start": "2026-12-01", "end": "2027-05-31"}}],
        "status": "planned",
        "type": [_concept(f"{BASE}/CodeSystem/calaim-program", "ecm")],
        "patient": {"reference": f"Patient/m-{n}"},
        "period": {"start": "2026-12-01"},
        "referralRequest": [{"reference": f"ServiceRequest/ref-{n}"}],
    }
    return [_referral(n), task, episode]


def _chunks(items: list[dict[str, Any]], size: int = 500) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _put_all(client: httpx.Client, resources: list[dict[str, Any]]) -> None:
    for chunk in _chunks(resources):
        entries = []
        for r in chunk:
            if "id" in r:
                entries.append({"resource": r, "request": {
                    "method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}})
            else:
                entries.append({"resource": r, "request": {
                    "method": "POST", "url": r["resourceType"]}})
        answer = client.post("", json={"resourceType": "Bundle", "type": "transaction",
                                       "entry": entries})
        if answer.status_code != 200:
            raise SystemExit(f"load failed: {answer.status_code} {answer.text[:500]}")


def load(client: httpx.Client, providers: int, members: int, assigned: int) -> float:
    started = time.perf_counter()
    base = [{"resourceType": "Organization", "id": "golden-poppy-health-plan",
             "name": "Golden Poppy"},
            {"resourceType": "Organization", "id": "casa-segura-housing", "name": "Casa"}]
    _put_all(client, base + [r for i in range(providers) for r in _provider(i)])
    _put_all(client, [_member(n) for n in range(members)])
    # assignments for members other than the cases, spread over every provider
    _put_all(client, [_assignment(CASES + n, n % providers) for n in range(assigned)])
    _put_all(client, [r for n in range(CASES) for r in _case(n)])
    return time.perf_counter() - started


def _preview(client: httpx.Client, n: int) -> dict[str, Any]:
    answer = client.post(f"/Patient/m-{n}/$ecm-assign", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "referral", "valueReference": {"reference": f"ServiceRequest/ref-{n}"}}]})
    if answer.status_code != 200:
        raise SystemExit(f"preview failed: {answer.status_code} {answer.text[:500]}")
    body: dict[str, Any] = answer.json()
    return body


def run(base: str, providers: int, members: int, assigned: int, previews: int,
        loaded: bool = False, write_between: bool = False) -> dict[str, Any]:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
        load_s = 0.0 if loaded else load(client, providers, members, assigned)
        for n in range(20):
            _preview(client, n)
        sample = _preview(client, 0)
        candidates = [p for p in sample["parameter"] if p["name"] == "candidate"]
        counted = [c for c in candidates
                   if any(part["name"] == "openCapacity" for part in c["part"])]
        load_before = os.getloadavg()
        latencies = []
        touched = {**_assignment(CASES, 0), "id": "bench-touched", "status": "revoked"}
        for i in range(previews):
            if write_between:
                touched["note"] = [{"text": f"bench write {i}"}]  # a new version each time
                answer = client.put("/ServiceRequest/bench-touched", json=touched)
                if answer.status_code not in (200, 201):
                    raise SystemExit(f"write failed: {answer.status_code} {answer.text[:500]}")
            started = time.perf_counter()
            _preview(client, i % CASES)
            latencies.append(time.perf_counter() - started)
        load_after = os.getloadavg()
    timing = stats([1000 * t for t in latencies])
    return {
        "providers": providers,
        "members": members,
        "assigned": assigned,
        "previews": previews,
        "load_s": round(load_s, 1),
        "candidates_listed": len(candidates),
        "answer_bytes": len(orjson.dumps(sample)),
        "capacity_counted": len(counted),
        "write_between": write_between,
        **{k: v for k, v in timing.items() if k != "n"},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--members", type=int, default=20000)
    parser.add_argument("--assigned", type=int, default=5000)
    parser.add_argument("--previews", type=int, default=500)
    parser.add_argument("--database-url")
    parser.add_argument("--loaded", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--write-between", action="store_true")
    args = parser.parse_args()
    if args.loaded and not args.database_url:
        parser.error("--loaded needs --database-url (the store loaded before)")
    folder = Path(tempfile.mkdtemp(prefix="ecm-assign-"))
    url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
    server = Server(url, 1, folder)
    try:
        server.start()
        result = run(f"{server.base}/fhir", args.providers, args.members, args.assigned,
                     args.previews, args.loaded, args.write_between)
        result["store"] = url.split(":", 1)[0]
        result["command"] = server.command.replace(str(folder), "<tmp>")
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
