"""CPU and wall time per 100-entry transaction, in process (Starlette TestClient, no HTTP
server, authentication off): 10 warm-up transactions, then 40 measured, sequentially. With
``--create``: per plain create instead (``POST /ServiceRequest`` of
``bench/data/servicerequest.json``, 200 warm-up, 2,000 measured). Measures any checkout from
outside: the checkout given is put first on the import path.

    .venv/bin/python bench/writes/transaction_cpu.py <checkout> [--create] [--profile]
"""

from __future__ import annotations

import cProfile
import io
import logging
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

CHECKOUT = sys.argv[1]
sys.path.insert(0, CHECKOUT)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")

from bundle_gen import HERE, bundle  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{folder}/bench.db", base_url="http://b/fhir", auth="off"
        )
        create = "--create" in sys.argv
        body = (HERE / "data" / "servicerequest.json").read_bytes()
        headers = {"Content-Type": "application/fhir+json"}
        what = "create" if create else "transaction"
        app = create_app(settings)
        # auth off answers loopback requests only
        loopback = ("127.0.0.1", 50000)
        with TestClient(app, base_url="http://127.0.0.1", client=loopback) as client:

            def send(i: int) -> int:
                if create:
                    return client.post(
                        "/fhir/ServiceRequest", content=body, headers=headers
                    ).status_code
                return client.post("/fhir", json=bundle(100, seed=i)).status_code

            for i in range(200 if create else 10):
                assert send(i) in (200, 201)
            n = 2000 if create else 40
            profile = cProfile.Profile() if "--profile" in sys.argv else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            for i in range(n):
                send(1000 + i)
            if profile:
                profile.disable()
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
                print(out.getvalue())
            cpu_ms = (time.process_time() - cpu) / n * 1000
            wall_ms = (time.perf_counter() - wall) / n * 1000
            print(f"{CHECKOUT}: CPU {cpu_ms:.3f} ms, wall {wall_ms:.3f} ms per {what}")


if __name__ == "__main__":
    main()
