"""The server for ``bench/access/ab.py``: ``create_app`` without a policy, with the compartment
policy, or with the care-relationship policy.

``BENCH_ACCESS_POLICY``: ``none`` (every request is the local operator, nothing narrowed) or
``compartment`` (every request acts for ``Patient/$BENCH_ACCESS_PATIENT`` under
``CompartmentPolicy``) or ``relationships`` (every request acts for ``Organization/ecm`` under
``RelationshipPolicy`` with the default matrix and consent on). Settings come from the
environment (``CALAIM_FHIR_*``).

    BENCH_ACCESS_POLICY=compartment BENCH_ACCESS_PATIENT=p1 \\
        uvicorn --factory bench.access.app:create --port 8080
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.requests import Request

from server.app import create_app
from server.auth.policies import CompartmentPolicy
from server.auth.policy import Policy
from server.auth.principal import Principal
from server.auth.relationships import RelationshipPolicy


def create() -> FastAPI:
    policy = os.environ.get("BENCH_ACCESS_POLICY", "none")
    if policy == "none":
        return create_app()
    if policy == "relationships":
        # an ECM provider: care relationships, release of information, Part 2 labels
        caller = Principal("bench-ecm", organization="Organization/ecm")
        policies: list[Policy] = [RelationshipPolicy()]
    elif policy == "compartment":
        caller = Principal("bench-app", user=f"Patient/{os.environ['BENCH_ACCESS_PATIENT']}")
        policies = [CompartmentPolicy()]
    else:
        raise SystemExit(
            f"BENCH_ACCESS_POLICY must be none, compartment or relationships, not {policy!r}"
        )

    def principals(request: Request) -> Principal:
        return caller

    return create_app(principals=principals, policies=policies)
