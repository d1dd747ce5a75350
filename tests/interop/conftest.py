"""Interoperability scenarios: real FHIR clients against a real ``calaim-fhir serve`` process.

The server fixtures are the durability suite's (a process group on a free loopback port,
SIGKILLed at teardown; SQLite and PostgreSQL). Every client runs the same list of operations,
``OPERATIONS``; a scenario records, per operation, ``"ok"`` or what went wrong, so one run
shows every client × operation that fails, not only the first.
"""

from __future__ import annotations

import copy
import json
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.durability.conftest import (  # noqa: F401 - fixtures shared with the durability suite
    Server,
    ServerFactory,
    database_url,
    start_server,
    store,
)

HERE = Path(__file__).resolve().parent
AS_OF = "2024-08-31"
# what every client does, in this order (later operations use what earlier ones made)
OPERATIONS = [
    "create",
    "read",
    "conditional-create",
    "update-with-version",
    "stale-version-refused",
    "patch",
    "search-paging",
    "transaction",
    "ecm-eligibility",
    "delete",
]
PAGE_SIZE = 3
PAGED = 7  # resources the paging search must return, over ceil(7 / 3) = 3 pages


def member_transaction(member: str) -> dict[str, Any]:
    """The shipped transaction (a plan, an eligible member with coverage, five emergency
    visits and an attestation) with the member's identifier set to ``member``."""
    bundle: dict[str, Any] = json.loads((HERE / "member-transaction.json").read_text())
    bundle = copy.deepcopy(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["identifier"][0]["value"] = member
    return bundle


def created_id(transaction_response: dict[str, Any], resource_type: str) -> str:
    """The id of the ``resource_type`` entry a transaction-response created."""
    assert transaction_response["resourceType"] == "Bundle", transaction_response
    assert transaction_response["type"] == "transaction-response", transaction_response["type"]
    for entry in transaction_response["entry"]:
        assert entry["response"]["status"].startswith(("200", "201")), entry["response"]
        location = entry["response"]["location"]
        if location.startswith(f"{resource_type}/"):
            return str(location.split("/")[1])
    raise AssertionError(f"no {resource_type} in {transaction_response}")


def assert_eligible(parameters: dict[str, Any]) -> None:
    """``$ecm-eligibility`` found the transaction's member eligible (avoidable utilization)."""
    assert parameters["resourceType"] == "Parameters", parameters
    values = {p["name"]: p for p in parameters["parameter"]}
    assert values["eligible"]["valueBoolean"] is True, parameters
    assert values["determination"]["valueCode"] == "eligible", parameters
    assert values["asOf"]["valueDate"] == AS_OF, parameters


class Scenario:
    """The operations of one client (``@scenario.step(name)``), run once each in the order of
    ``OPERATIONS`` by ``check``, which keeps what happened to each and asserts they all passed."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.steps: dict[str, Callable[[], None]] = {}
        self.results: dict[str, str] = {}

    def step(self, operation: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
        assert operation in OPERATIONS, operation

        def add(fn: Callable[[], None]) -> Callable[[], None]:
            self.steps[operation] = fn
            return fn

        return add

    def check(self) -> None:
        for operation in OPERATIONS:
            if operation not in self.steps:
                continue
            try:
                self.steps[operation]()
            except Exception as exc:  # noqa: BLE001 - every failure is reported, per operation
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self.results[operation] = detail[:600]
            else:
                self.results[operation] = "ok"
        assert_report(self.client, self.results)


def assert_report(client: str, results: dict[str, str]) -> None:
    """Every operation ran, and every one passed."""
    missing = [op for op in OPERATIONS if op not in results]
    failed = {op: why for op, why in results.items() if why != "ok"}
    lines = [f"{client} {op}: {why}" for op, why in failed.items()]
    lines += [f"{client} {op}: did not run" for op in missing]
    assert not lines, "\n".join(lines)


@pytest.fixture
def server(start_server: ServerFactory, database_url: str) -> Iterator[Server]:  # noqa: F811
    yield start_server(database_url)
