"""Sequential creates of the profiled ECM referral, in process, through the ASGI application.

    .venv/bin/python bench/validation/create_inprocess.py [--creates 1000] [--profile FILE]

No HTTP server and no client on the other core: the application (``create_app``, SQLite in a
temp folder, every commit durable) is called directly, one ``POST ServiceRequest`` at a time
(``Prefer: return=minimal``), after loading every example of examples/resources and 100
warm-up creates. Reports wall ms per create (including the wait for each commit's fsync) and
CPU ms per create (every thread of the process): the CPU cost is what bounds the ``wrk`` rate
of bench/validation/run.py, where concurrent requests share their commits.
``--profile FILE`` also writes cProfile's table (cumulative and own time) of a second pass.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import asgi_call  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402

EXAMPLES = ROOT / "examples" / "resources"
JSON = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}


class App:
    """Call an ASGI application in this event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def start(self) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        self._lifespan = asyncio.create_task(
            self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
        )
        started = await outbox.get()
        if started["type"] != "lifespan.startup.complete":
            raise SystemExit(f"start-up failed: {started}")

    async def call(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        pairs = [(k.encode(), v.encode()) for k, v in headers.items()]
        status, _ = await asgi_call(self.app, method, path, pairs, body)
        return status


async def run(creates: int, profile: Path | None) -> dict[str, Any]:
    resources = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    with tempfile.TemporaryDirectory() as tmp:
        app = App(create_app(Settings(database_url=f"sqlite:///{tmp}/store.db", auth="off")))
        await app.start()
        entries = [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        if await app.call("POST", "/fhir", orjson.dumps(bundle), JSON) != 200:
            raise SystemExit("loading the examples failed")
        referral = next(
            r
            for r in resources
            if r["resourceType"] == "ServiceRequest" and r["id"] == "ecm-referral-example"
        )
        minimal = {**JSON, "prefer": "return=minimal"}
        made = 0

        def bodies(n: int) -> list[bytes]:
            """``n`` referrals, each with an identifier of its own: the same identifier again
            is the same referral (intake answers 200 with the stored one, no create)."""
            nonlocal made
            out = []
            for _ in range(n):
                made += 1
                identifier = [{"system": "urn:bench:referral", "value": f"r{made}"}]
                fields = {k: v for k, v in referral.items() if k not in ("id", "identifier")}
                out.append(orjson.dumps({**fields, "identifier": identifier}))
            return out

        async def creates_of(n: int) -> tuple[float, float]:
            pending = bodies(n)
            started, cpu = time.perf_counter(), time.process_time()
            for body in pending:
                if await app.call("POST", "/fhir/ServiceRequest", body, minimal) != 201:
                    raise SystemExit("a create failed")
            return time.perf_counter() - started, time.process_time() - cpu

        await creates_of(100)
        seconds, cpu_seconds = await creates_of(creates)
        if profile is not None:
            profiler = cProfile.Profile()
            profiler.enable()
            await creates_of(creates)
            profiler.disable()
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            stats.sort_stats("cumulative").print_stats(60)
            stats.sort_stats("tottime").print_stats(30)
            profile.write_text(text.getvalue())
    return {
        "creates": creates,
        "ms_per_create": round(seconds / creates * 1000, 2),
        "cpu_ms_per_create": round(cpu_seconds / creates * 1000, 2),
        "creates_per_s": round(creates / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--profile", type=Path, help="also write a cProfile table here")
    args = parser.parse_args()
    result = asyncio.run(run(args.creates, args.profile))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
