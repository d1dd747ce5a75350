"""CPU per read by id in one process, the whole application (every ASGI layer, the request log
line) called directly — no socket, no HTTP client — so the figure is the server's own cost.

Two applications on one SQLite store (300 Patients, 8 Observations each, 40 for p1; the ECM
provider's EpisodeOfCare with p1..p150 and p1's release of information naming it):

- ``on``: ``auth=smart`` with a bearer token of a client acting for ``Organization/ecm``
  (``system/*.rs``), ``access_relationships`` on (care relationships and consent), read audit
  ``batch`` (the defaults users run);
- ``off``: ``auth=off`` (the local operator), read audit off.

Rounds alternate the two (ABBA...); each round reads p1's Observations ``--reads`` times and
records CPU seconds of the process (``time.process_time``) per read. Prints one JSON line:
the per-round µs of each mode. The code measured is whatever ``server`` imports (put a checkout
first on ``PYTHONPATH``); ``bench/edge/ab.py`` runs this against two checkouts in alternation.
The request log goes to stderr: redirect it to a file, as a served process would.

    PYTHONPATH=<checkout> .venv/bin/python bench/edge/read_cpu.py [--reads 2000] [--rounds 4]
        [--profile FILE]   # cProfile of the "on" reads after the rounds
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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from access.ab import bundles, p1_reads  # noqa: E402
from harness import asgi_call as call  # noqa: E402

from server.app import create_app  # noqa: E402
from server.auth.clients import Client, new_client  # noqa: E402
from server.auth.scopes import ScopeSet  # noqa: E402
from server.auth.tokens import issue  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.auth.partners import Partner  # noqa: E402

BASE = "http://127.0.0.1/fhir"


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    async with app.router.lifespan_context(app):
        yield app


def client_token(app: Any, organization: str, scope: str, lifetime: int) -> str:
    """A token of a new client acting for ``organization`` with ``scope``, issued by ``app``
    (running, ``auth=smart``)."""
    auth = app.state.auth
    row = new_client(
        name="bench-client",
        organization=organization,
        scope=scope,
        jwks={"keys": [Partner("RS384").jwk]},
    )
    auth.store.add_client(row)
    return issue(
        auth.keys,
        Client.of(row),
        ScopeSet.of(scope),
        base=app.state.settings.fhir_base,
        now=time.time(),
        lifetime=lifetime,
    )


def ecm_token(app: Any, lifetime: int) -> str:
    """A token of a new client acting for ``Organization/ecm`` (``system/*.rs``)."""
    return client_token(app, "Organization/ecm", "system/*.rs", lifetime)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    url = f"sqlite:///{folder / 'store.db'}"
    json_headers = [(b"content-type", b"application/fhir+json")]
    seeder = create_app(Settings(database_url=url, auth="off", audit_reads="off"))
    async with running(seeder):
        for bundle in bundles("relationships"):
            status, answer = await call(
                seeder, "POST", "/fhir", json_headers, json.dumps(bundle).encode()
            )
            assert status == 200, answer[:500]
    off = create_app(Settings(database_url=url, auth="off", audit_reads="off"))
    on = create_app(
        Settings(
            database_url=url,
            auth="smart",
            base_url="http://127.0.0.1",
            access_relationships=True,
            audit_reads="batch",
        )
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(off))
        await stack.enter_async_context(running(on))
        token = ecm_token(on, 300)
        accept = (b"accept", b"application/fhir+json")
        headers = {
            "off": [(b"host", b"127.0.0.1"), accept],
            "on": [(b"host", b"127.0.0.1"), accept, (b"authorization", f"Bearer {token}".encode())],
        }
        apps = {"off": off, "on": on}
        paths = p1_reads()

        async def reads(mode: str, n: int) -> float:
            app, hdrs = apps[mode], headers[mode]
            start = time.process_time()
            for i in range(n):
                status, answer = await call(app, "GET", paths[i % len(paths)], hdrs)
                if status != 200:
                    raise SystemExit(f"{mode}: {status} {answer[:300]!r}")
            return (time.process_time() - start) / n * 1e6

        for mode in ("off", "on"):  # warm-up
            await reads(mode, 300)
        out: dict[str, Any] = {"off": [], "on": [], "load": [os.getloadavg()[0]]}
        for r in range(args.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                out[mode].append(round(await reads(mode, args.reads), 1))
            out["load"].append(os.getloadavg()[0])
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await reads("on", args.reads)
            profile.disable()
            profile.dump_stats(args.profile)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
