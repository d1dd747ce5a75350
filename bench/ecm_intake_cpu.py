"""CPU per ECM referral intake with screening, in process: any checkout, for interleaved A/B.

    .venv/bin/python bench/ecm_intake_cpu.py <checkout> [--intakes 120] [--batch 1]
        [--screen-bundle batch|transaction] [--profile]

The app of ``<checkout>`` (put first on the import path) on a fresh SQLite file, called through
``httpx.ASGITransport`` on one event loop (no HTTP server, no sockets): the example
organisations loaded, 30 warm-up intakes, then ``--intakes`` sequential intakes, each the
transaction and ``$ecm-screen`` of ``bench/ecm_intake.py``. Prints the process CPU time per
intake (the in-process client included, the same for every checkout). ``--profile``: cProfile
of the measured intakes (event-loop thread only), top functions by internal time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("checkout")
parser.add_argument("--intakes", type=int, default=120)
parser.add_argument("--profile", action="store_true")
parser.add_argument("--batch", type=int, default=1, help="referrals per transaction")
parser.add_argument("--screen-bundle", choices=("batch", "transaction"),
                    help="screen a transaction's referrals by one Bundle of $ecm-screen calls")
ARGS = parser.parse_args()
sys.path.insert(0, ARGS.checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent))
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")

import httpx  # noqa: E402
from ecm_intake import EMPTY, EXAMPLES, FHIR_JSON, intakes, screenings, tasks  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402

BASE = "http://127.0.0.1/fhir"


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=f"sqlite:///{folder}/bench.db", base_url=BASE,
                            auth="off")
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
            async with httpx.AsyncClient(transport=transport, base_url=BASE,
                                         headers=headers) as client:
                entries = []
                for path in sorted(EXAMPLES.glob("*.json")):
                    resource = json.loads(path.read_text())
                    if resource["resourceType"] not in ("Task", "ServiceRequest"):
                        url = f"{resource['resourceType']}/{resource['id']}"
                        entries.append({"resource": resource,
                                        "request": {"method": "PUT", "url": url}})
                loaded = await client.post("", json={"resourceType": "Bundle",
                                                     "type": "transaction", "entry": entries})
                loaded.raise_for_status()

                async def one(ns: range) -> None:
                    answer = await client.post("", json=intakes(ns))
                    assert answer.status_code == 200, answer.text
                    if ARGS.screen_bundle:
                        bundle = screenings(tasks(answer.json()), ARGS.screen_bundle)
                        screened = await client.post("", json=bundle)
                        assert screened.status_code == 200, screened.text
                        statuses = {e["response"]["status"] for e in screened.json()["entry"]}
                        assert statuses == {"200 OK"}, screened.text
                        return
                    for task in tasks(answer.json()):
                        screened = await client.post(f"/{task}/$ecm-screen", json=EMPTY)
                        assert screened.status_code == 200, screened.text

                def batches(start: int, stop: int) -> list[range]:
                    return [range(n, min(n + ARGS.batch, stop))
                            for n in range(start, stop, ARGS.batch)]

                for ns in batches(10_000_000, 10_000_030):  # warm-up
                    await one(ns)
                profile = cProfile.Profile() if ARGS.profile else None
                cpu = time.process_time()
                if profile:
                    profile.enable()
                for ns in batches(0, ARGS.intakes):
                    await one(ns)
                if profile:
                    profile.disable()
                cpu = time.process_time() - cpu
                if profile:
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
                    print(out.getvalue())
                print(f"{ARGS.checkout}: CPU {1000 * cpu / ARGS.intakes:.2f} ms per intake "
                      f"({ARGS.batch} per transaction, screened "
                      f"{'by one ' + ARGS.screen_bundle if ARGS.screen_bundle else 'one by one'})")


if __name__ == "__main__":
    asyncio.run(main())
