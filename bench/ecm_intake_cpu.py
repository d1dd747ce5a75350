"""CPU per ECM referral intake with screening, in process: any checkout, for interleaved A/B.

    .venv/bin/python bench/ecm_intake_cpu.py <checkout> [--intakes 120] [--profile]

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
ARGS = parser.parse_args()
sys.path.insert(0, ARGS.checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent))
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")

import httpx  # noqa: E402
from ecm_intake import EXAMPLES, FHIR_JSON, _intake  # noqa: E402

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

                async def one(n: int) -> None:
                    answer = await client.post("", json=_intake(n))
                    assert answer.status_code == 200, answer.text
                    location = answer.json()["entry"][3]["response"]["location"]
                    task = location.split("/_history")[0]
                    screened = await client.post(
                        f"/{task}/$ecm-screen",
                        json={"resourceType": "Parameters", "parameter": []},
                    )
                    assert screened.status_code == 200, screened.text

                for n in range(10_000_000, 10_000_030):  # warm-up
                    await one(n)
                profile = cProfile.Profile() if ARGS.profile else None
                cpu = time.process_time()
                if profile:
                    profile.enable()
                for n in range(ARGS.intakes):
                    await one(n)
                if profile:
                    profile.disable()
                cpu = time.process_time() - cpu
                if profile:
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
                    print(out.getvalue())
                print(f"{ARGS.checkout}: CPU {1000 * cpu / ARGS.intakes:.2f} ms per intake")


if __name__ == "__main__":
    asyncio.run(main())
