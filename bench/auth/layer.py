"""The per-request cost of authentication in process: the same application code on one
SQLite store, auth off (the local operator) against auth smart (a wildcard admin token), each
request through the whole ASGI application (httpx's ASGI transport, no socket), interleaved.

    .venv/bin/python bench/auth/layer.py [--requests 2000] [--rounds 5] [--profile]

Prints the median µs per request of a read and of a search (``Patient?_count=10``) per mode
and their difference; ``--profile`` prints the top of a cProfile of the smart reads.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from server.app import create_app  # noqa: E402
from server.auth.clients import Client, new_client  # noqa: E402
from server.auth.scopes import ScopeSet  # noqa: E402
from server.auth.tokens import issue  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.auth.partners import Partner  # noqa: E402

HEADERS = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--search", default="Patient?_count=10", help="the search request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'layer.db'}"
        off = create_app(Settings(database_url=url, auth="off"))
        on = create_app(Settings(database_url=url, auth="smart", base_url="http://127.0.0.1"))
        async with off.router.lifespan_context(off), on.router.lifespan_context(on):
            base = "http://127.0.0.1/fhir/"
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=off),
                                         base_url=base, headers=HEADERS) as local:
                for i in range(50):
                    body = {"resourceType": "Patient", "id": f"p{i}", "name": [{"family": "B"}]}
                    (await local.put(f"Patient/p{i}", json=body)).raise_for_status()
                row = new_client(name="bench", organization=None, role="admin",
                                 scope="system/*.rs", jwks={"keys": [Partner("RS384").jwk]})
                auth = on.state.auth
                auth.store.add_client(row)
                token = issue(auth.keys, Client.of(row), ScopeSet.of("system/*.rs"),
                              base=on.state.settings.fhir_base, now=time.time(), lifetime=3600)
                smart = httpx.AsyncClient(transport=httpx.ASGITransport(app=on), base_url=base,
                                          headers={**HEADERS, "Authorization": f"Bearer {token}"})
                clients = {"off": local, "smart": smart}
                times: dict[tuple[str, str], list[float]] = {}
                load = [os.getloadavg()[0]]
                for round in range(args.rounds):
                    for path, name in (("Patient/p1", "read"), (args.search, "search")):
                        order = ("off", "smart") if round % 2 == 0 else ("smart", "off")
                        for mode in order:
                            client = clients[mode]
                            (await client.get(path)).raise_for_status()
                            start = time.perf_counter()
                            for _ in range(args.requests):
                                await client.get(path)
                            spent = (time.perf_counter() - start) / args.requests * 1e6
                            times.setdefault((name, mode), []).append(spent)
                    load.append(os.getloadavg()[0])
                print(f"load average (1 min) {min(load):.1f}–{max(load):.1f}; "
                      f"{args.rounds} rounds × {args.requests} requests, alternating order\n")
                print("| request | auth off µs | auth smart µs | difference µs |")
                print("|---|---|---|---|")
                for name in ("read", "search"):
                    a = statistics.median(times[(name, "off")])
                    b = statistics.median(times[(name, "smart")])
                    print(f"| {name} | {a:.0f} | {b:.0f} | {b - a:+.0f} |")
                if args.profile:
                    profile = cProfile.Profile()
                    profile.enable()
                    for _ in range(args.requests):
                        await smart.get("Patient/p1")
                    profile.disable()
                    pstats.Stats(profile).sort_stats("tottime").print_stats(30)
                    profile.dump_stats(os.environ.get("BENCH_PROFILE", "/dev/null"))
                await smart.aclose()


if __name__ == "__main__":
    asyncio.run(main())
