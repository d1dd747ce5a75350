"""CPU per ECM referral a community organisation sends, care relationships on (the default
with authentication on) against off, in process.

Each referral is one transaction (the ``ecm-referral`` ServiceRequest and its referral Task,
``owner`` the plan, ``requester`` the CBO) for a member the CBO does not serve (it is the
intake of decision 0027: no-self-granting's intake exception, the requester's write class);
every referral names another member, so none is a duplicate. Both applications serve the same
SQLite store with SMART authentication on; the caller is the CBO's client (scopes
``system/ServiceRequest.crs system/Task.crus``). Rounds alternate the arms (ABBA...), timed
in CPU seconds of this process (``time.process_time``); the table gives the median CPU per
referral of each arm and the difference.

    .venv/bin/python bench/access/intake_ab.py [--rounds 8] [--referrals 25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH.parent))

from bench.access.cpu import running  # noqa: E402
from server.app import create_app  # noqa: E402
from server.auth.clients import Client, new_client  # noqa: E402
from server.auth.scopes import ScopeSet  # noqa: E402
from server.auth.tokens import issue  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.auth.partners import Partner  # noqa: E402

PLAN = "Organization/bench-plan"
CBO = "Organization/bench-cbo"
POF = "http://calaim-fhir.org/fhir/CodeSystem/ecm-population-of-focus"
SCOPE = "system/ServiceRequest.crs system/Task.crus"
EXAMPLE = BENCH.parent / "examples" / "resources" / "ServiceRequest-ecm-referral-example.json"


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _members(n: int) -> dict[str, Any]:
    """The plan, the CBO, and ``n`` members each with the plan's active Coverage."""
    entries: list[dict[str, Any]] = []
    org_type = "http://terminology.hl7.org/CodeSystem/organization-type"
    for id, code in (("bench-plan", "pay"), ("bench-cbo", "cg")):
        entries.append({"resource": {"resourceType": "Organization", "id": id, "name": id,
                                     "type": [_concept(org_type, code)]},
                        "request": {"method": "PUT", "url": f"Organization/{id}"}})
    for i in range(n):
        entries.append({"resource": {"resourceType": "Patient", "id": f"bm{i}"},
                        "request": {"method": "PUT", "url": f"Patient/bm{i}"}})
        entries.append({"resource": {"resourceType": "Coverage", "id": f"bc{i}",
                                     "status": "active",
                                     "beneficiary": {"reference": f"Patient/bm{i}"},
                                     "payor": [{"reference": PLAN}]},
                        "request": {"method": "PUT", "url": f"Coverage/bc{i}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _referral(i: int) -> dict[str, Any]:
    referral: dict[str, Any] = json.loads(EXAMPLE.read_text())
    for element in ("id", "supportingInfo", "performer"):
        referral.pop(element)
    member = {"reference": f"Patient/bm{i}"}
    referral.update(identifier=[{"system": "https://calaim-fhir.org/fhir/sid/ecm-referral",
                                 "value": f"BENCH-{i}"}],
                    subject=member, requester={"reference": CBO},
                    authoredOn="2026-11-02T10:00:00-08:00",
                    reasonCode=[_concept(POF, "justice-involved-adult")])
    url = f"urn:uuid:5b0c7d2e-0000-4000-8000-{i:012d}"
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "meta": {"profile": ["http://calaim-fhir.org/fhir/StructureDefinition/"
                                 "ecm-referral-task"]},
            "code": _concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
            "focus": {"reference": url}, "for": member,
            "requester": {"reference": CBO}, "owner": {"reference": PLAN}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": referral,
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": task, "request": {"method": "POST", "url": "Task"}}]}


def _bearer(app: FastAPI) -> dict[str, str]:
    """The CBO client's token, issued by ``app`` (running)."""
    auth = app.state.auth
    row = new_client(name="bench-cbo", organization=CBO, scope=SCOPE,
                     jwks={"keys": [Partner("RS384").jwk]})
    auth.store.add_client(row)
    token = issue(auth.keys, Client.of(row), ScopeSet.of(SCOPE),
                  base=app.state.settings.fhir_base, now=time.time(), lifetime=3600)
    return {"Authorization": f"Bearer {token}"}


async def _cpu(client: httpx.AsyncClient, first: int, n: int) -> tuple[float, float]:
    """CPU and wall ms per referral of ``n`` referrals."""
    bundles = [_referral(first + i) for i in range(n)]
    headers = client.headers
    start, wall = time.process_time(), time.perf_counter()
    for bundle in bundles:
        response = await client.post("/fhir", json=bundle, headers=headers)
        assert response.status_code == 200, response.text[:800]
    return (time.process_time() - start) / n * 1e3, (time.perf_counter() - wall) / n * 1e3


def _app(url: str, relationships: bool) -> FastAPI:
    settings = Settings(database_url=url, auth="smart", base_url="http://127.0.0.1",
                        access_relationships=relationships, audit_reads="off")
    return create_app(settings)


async def main(rounds: int, referrals: int) -> None:
    folder = tempfile.mkdtemp(prefix="intake-ab-")
    url = f"sqlite:///{os.path.join(folder, 'intake.db')}"
    members = rounds * 2 * referrals + 40
    seeder = create_app(Settings(database_url=url, auth="off", audit_reads="off"))
    async with running(seeder) as client:
        (await client.post("/fhir", json=_members(members))).raise_for_status()
    times: dict[str, list[float]] = {"on": [], "off": []}
    walls: dict[str, list[float]] = {"on": [], "off": []}
    apps = {"on": _app(url, True), "off": _app(url, False)}
    async with running(apps["on"]) as on, running(apps["off"]) as off:
        arms = {"on": on, "off": off}
        for name, client in arms.items():
            client.headers.update(_bearer(apps[name]))
        await _cpu(on, members - 40, 20)  # warm-up of each arm
        await _cpu(off, members - 20, 20)
        next_member = 0
        for round in range(rounds):
            order = ("on", "off") if round % 2 == 0 else ("off", "on")
            for name in order:
                cpu, wall = await _cpu(arms[name], next_member, referrals)
                times[name].append(cpu)
                walls[name].append(wall)
                next_member += referrals
    on_ms, off_ms = statistics.median(times["on"]), statistics.median(times["off"])
    print(f"load average {os.getloadavg()}; {rounds} rounds x {referrals} referrals per arm")
    print("| arm | CPU per referral (median ms) | wall per referral (median ms) | CPU rounds |")
    print("|---|---:|---:|---|")
    for name, arm in (("relationships off", "off"), ("relationships on", "on")):
        runs = ", ".join(f"{t:.2f}" for t in times[arm])
        cpu, wall = statistics.median(times[arm]), statistics.median(walls[arm])
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {runs} |")
    print(f"on/off: {100 * (on_ms / off_ms - 1):+.1f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--referrals", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.referrals))
