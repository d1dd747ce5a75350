"""CPU per create and per update with ``If-Match`` in one process, the whole application (every
ASGI layer, the request log line, the group commit and its fsync on the writer's thread)
called directly — no socket, no HTTP client — with auth, care relationships, consent and read
audit on, as ``bench/compare.py --auth on`` serves them.

The store: the directory resources of ``bench/compare.py`` and ``--seed`` ServiceRequests
(``bench/data/servicerequest.json``), written with auth off. The writes: a client acting for
the plan (``system/*.cruds``, the plan named in the access matrix) POSTs the same
ServiceRequest, then PUTs the seeded ones in turn with ``If-Match`` on their current version.
Rounds alternate create and update; each records CPU seconds of the process
(``time.process_time``, every thread) per write. Prints one JSON line: the per-round µs of
each. Put a checkout first on ``PYTHONPATH``; ``bench/edge/ab.py --script write_cpu.py``
runs it against two checkouts in alternation.

    PYTHONPATH=<checkout> .venv/bin/python bench/edge/write_cpu.py [--writes 500] [--rounds 4]
        [--profile FILE]   # cProfile of creates and updates after the rounds
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "edge"))

from bundle_gen import PLAN_ID, feed_directory  # noqa: E402
from harness import asgi_call as call  # noqa: E402
from read_cpu import client_token, running  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402

SCOPE = "system/*.cruds"
JSON = (b"content-type", b"application/fhir+json")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=200)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    url = f"sqlite:///{folder / 'store.db'}"
    matrix = folder / "matrix.json"
    matrix.write_text(json.dumps({"plans": [f"Organization/{PLAN_ID}"]}))
    body = (BENCH / "data" / "servicerequest.json").read_bytes()
    template = json.loads(body)
    ids: list[str] = []
    versions: dict[str, str] = {}
    seeder = create_app(Settings(database_url=url, auth="off", audit_reads="off"))
    async with running(seeder):
        for r in feed_directory():
            status, answer = await call(
                seeder, "PUT", f"/fhir/{r['resourceType']}/{r['id']}", [JSON],
                json.dumps(r).encode(),
            )  # fmt: skip
            assert status < 300, answer[:500]
        for i in range(args.seed):
            sr = {**template, "identifier": [{**template["identifier"][0], "value": f"s{i}"}]}
            status, answer = await call(
                seeder, "POST", "/fhir/ServiceRequest", [JSON], json.dumps(sr).encode()
            )
            assert status == 201, answer[:500]
            made = json.loads(answer)
            ids.append(made["id"])
            versions[made["id"]] = made["meta"]["versionId"]
    on = create_app(
        Settings(
            database_url=url,
            auth="smart",
            base_url="http://127.0.0.1",
            access_relationships=True,
            access_matrix=str(matrix),
            audit_reads="batch",
        )
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(on))
        token = client_token(on, f"Organization/{PLAN_ID}", SCOPE, 3600)
        auth = (b"authorization", f"Bearer {token}".encode())
        headers = [(b"host", b"127.0.0.1"), JSON, auth]
        bodies = {id: json.dumps({**template, "id": id}).encode() for id in ids}
        turn = 0

        async def create(n: int) -> float:
            start = time.process_time()
            for _ in range(n):
                status, answer = await call(on, "POST", "/fhir/ServiceRequest", headers, body)
                if status != 201:
                    raise SystemExit(f"create: {status} {answer[:300]!r}")
            return (time.process_time() - start) / n * 1e6

        async def update(n: int) -> float:
            nonlocal turn
            start = time.process_time()
            for _ in range(n):
                id = ids[turn % len(ids)]
                turn += 1
                match = (b"if-match", f'W/"{versions[id]}"'.encode())
                status, answer = await call(
                    on, "PUT", f"/fhir/ServiceRequest/{id}", [*headers, match], bodies[id]
                )
                if status != 200:
                    raise SystemExit(f"update: {status} {answer[:300]!r}")
                versions[id] = json.loads(answer)["meta"]["versionId"]
            return (time.process_time() - start) / n * 1e6

        runs = {"create": create, "update": update}
        for kind in runs:  # warm-up
            await runs[kind](100)
        out: dict[str, Any] = {"create": [], "update": [], "load": [os.getloadavg()[0]]}
        for r in range(args.rounds):
            for kind in ("create", "update") if r % 2 == 0 else ("update", "create"):
                out[kind].append(round(await runs[kind](args.writes), 1))
            out["load"].append(os.getloadavg()[0])
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await create(args.writes)
            await update(args.writes)
            profile.disable()
            profile.dump_stats(args.profile)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
