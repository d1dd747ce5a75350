"""CPU and wall time per 100-entry transaction, in process (Starlette TestClient, no HTTP
server): 10 warm-up transactions, then 40 measured, sequentially. Measures any checkout from
outside: the checkout given is put first on the import path.

    .venv/bin/python bench/writes/transaction_cpu.py <checkout> [--profile]
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

from bundle_gen import bundle  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=f"sqlite:///{folder}/bench.db", base_url="http://b/fhir")
        with TestClient(create_app(settings)) as client:
            for i in range(10):
                assert client.post("/fhir", json=bundle(100, seed=i)).status_code == 200
            n = 40
            profile = cProfile.Profile() if "--profile" in sys.argv else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            for i in range(n):
                client.post("/fhir", json=bundle(100, seed=100 + i))
            if profile:
                profile.disable()
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
                print(out.getvalue())
            cpu_ms = (time.process_time() - cpu) / n * 1000
            wall_ms = (time.perf_counter() - wall) / n * 1000
            print(f"{CHECKOUT}: CPU {cpu_ms:.2f} ms, wall {wall_ms:.2f} ms per transaction")


if __name__ == "__main__":
    main()
