"""CPU per request without an access policy and with the compartment policy, in process.

The same scenarios and store as ``ab.py`` (which measures throughput over HTTP), but each
request is handled by the application in this process (``httpx.ASGITransport``, lifespan
run) and timed in CPU seconds of the process (``time.process_time``), so other processes
competing for the CPUs change the figures far less than they change wall-clock throughput.
Rounds alternate the two applications (ABBA...); the table gives the median CPU per request
of each and how much more the policy costs.

    .venv/bin/python bench/access/cpu.py [--rounds 12] [--requests 200]
        [--database-url postgresql://...] [--scenario search-include ...]

Without ``--database-url`` the store is a new SQLite file; a PostgreSQL database given must
be empty (``scripts/pg-test-cluster`` starts a throwaway one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH.parent))

from bench.access.ab import SCENARIOS, bundles, p1_reads  # noqa: E402
from server.app import create_app  # noqa: E402
from server.auth.policies import CompartmentPolicy  # noqa: E402
from server.auth.principal import Principal  # noqa: E402
from server.settings import Settings  # noqa: E402

CALLER = Principal("bench-app", user="Patient/p1")


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


async def seed(client: httpx.AsyncClient) -> list[str]:
    for bundle in bundles():
        (await client.post("/fhir", json=bundle)).raise_for_status()
    return p1_reads()


async def cpu_per_request(client: httpx.AsyncClient, paths: list[str], n: int) -> float:
    start = time.process_time()
    for i in range(n):
        response = await client.get(paths[i % len(paths)])
        assert response.status_code == 200, response.text
    return (time.process_time() - start) / n * 1e6  # µs


async def main(
    rounds: int, requests: int, database_url: str | None, scenarios: list[str] | None
) -> None:
    if database_url is None:
        work = Path(tempfile.mkdtemp(prefix="bench-access-cpu-"))
        database_url = f"sqlite:///{work / 'store.db'}"
    settings = Settings(database_url=database_url, auth="off")
    none = create_app(settings)
    policy = create_app(settings, principals=lambda request: CALLER, policies=[CompartmentPolicy()])
    async with running(none) as a, running(policy) as b:
        reads = await seed(a)
        clients = {"none": a, "compartment": b}
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print()
        print("| scenario | no policy µs CPU/request | compartment µs CPU/request | more CPU |")
        print("|---|---:|---:|---:|")
        for name, fixed in SCENARIOS.items():
            if scenarios and name not in scenarios:
                continue
            paths = fixed or reads
            for client in clients.values():  # warm-up
                await cpu_per_request(client, paths, requests)
            figures: dict[str, list[float]] = {"none": [], "compartment": []}
            for r in range(rounds):
                order = ("none", "compartment") if r % 2 == 0 else ("compartment", "none")
                for key in order:
                    figures[key].append(await cpu_per_request(clients[key], paths, requests))
            med = {k: statistics.median(v) for k, v in figures.items()}
            more = med["compartment"] / med["none"] - 1
            print(f"| {name} | {med['none']:,.0f} | {med['compartment']:,.0f} | {more:+.1%} |")
        print()
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests, args.database_url, args.scenario))
