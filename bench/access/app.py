"""The server for ``bench/access/ab.py``: ``create_app`` with or without the compartment policy.

``BENCH_ACCESS_POLICY``: ``none`` (every request is the local operator, nothing narrowed) or
``compartment`` (every request acts for ``Patient/$BENCH_ACCESS_PATIENT`` under
``CompartmentPolicy``). Settings come from the environment (``CALAIM_FHIR_*``).

    BENCH_ACCESS_POLICY=compartment BENCH_ACCESS_PATIENT=p1 \\
        uvicorn --factory bench.access.app:create --port 8080
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.requests import Request

from server.app import create_app
from server.auth.policies import CompartmentPolicy
from server.auth.principal import Principal


def create() -> FastAPI:
    policy = os.environ.get("BENCH_ACCESS_POLICY", "none")
    if policy == "none":
        return create_app()
    if policy != "compartment":
        raise SystemExit(f"BENCH_ACCESS_POLICY must be none or compartment, not {policy!r}")
    caller = Principal("bench-app", user=f"Patient/{os.environ['BENCH_ACCESS_PATIENT']}")

    def principals(request: Request) -> Principal:
        return caller

    return create_app(principals=principals, policies=[CompartmentPolicy()])
