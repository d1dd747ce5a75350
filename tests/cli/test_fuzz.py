"""Schemathesis against the served OpenAPI document, over a real server process: every
operation of ``/openapi.json`` gets generated requests (a fixed seed, a bounded number of
examples each); no answer may be a 5xx, and every error answer must be an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.cli.conftest import Server, serve

EXAMPLES = 12  # per operation: ~75 operations, about a minute on this machine


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


def _problem(case: Any, response: Any) -> str | None:
    """What is wrong with one answer (None: nothing)."""
    where = f"{case.method} {case.formatted_path}"
    if response.status_code >= 500:
        return f"{where}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return f"{where}: {response.status_code} is not JSON: {response.text[:200]!r}"
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            return f"{where}: {response.status_code} is not an OperationOutcome"
    return None


@pytest.mark.slow
def test_generated_requests_get_no_5xx_and_only_operation_outcome_errors(
    fuzzed: Server,
) -> None:
    origin = fuzzed.base.removesuffix("/fhir")
    schema = schemathesis.openapi.from_url(f"{origin}/openapi.json")
    problems: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the same requests on every run
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=origin, timeout=30)
            problem = _problem(case, response)
            if problem is not None and problem not in problems:
                problems.append(problem)

        run()
    assert calls > 100
    assert problems == [], "\n".join(problems[:40])
