"""The edge (``server/api/edge.py``): an exception raised in the edge's own steps, before or
after the answer began, never leaves the application (a server would print its traceback and
message): before, it is answered 500 with an OperationOutcome naming the request id; after,
the answer stands and only the error's class and place are logged. Every answer still carries
the edge's headers and its request line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.api import audit_layer, authentication
from tests.api.test_logging import _Collect
from tests.support import Loopback, TestClient, outcome, sqlite_url

SECRET = "Zyxwvutsrq-secret"


class Broken(RuntimeError):
    pass


@contextmanager
def collecting() -> Iterator[list[logging.LogRecord]]:
    """What the ``calaim_fhir`` loggers emit (after the lifespan configured them: it replaces
    their handlers and stops their propagation)."""
    collect = _Collect()
    root = logging.getLogger("calaim_fhir")
    root.addHandler(collect)
    try:
        yield collect.records
    finally:
        root.removeHandler(collect)


def _app(tmp_path: Path) -> object:
    from server.app import create_app
    from server.settings import Settings

    return create_app(
        Settings(database_url=sqlite_url(tmp_path / "edge.db"), auth="off", audit_reads="batch")
    )


def _raise(*args: object, **kwargs: object) -> None:
    raise Broken(f"content {SECRET}")


def test_an_error_before_the_answer_is_answered_500_with_the_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*args: object) -> None:
        _raise()

    monkeypatch.setattr(authentication, "admit", failing)
    monkeypatch.setattr("server.api.edge.admit", failing)
    with (
        TestClient(Loopback(_app(tmp_path)), raise_server_exceptions=True) as client,
        collecting() as records,
    ):
        response = client.get("/fhir/Patient/p1")
    outcome(response, 500)
    request_id = response.headers["x-request-id"]
    assert request_id in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    text = "\n".join(r.getMessage() for r in records)
    assert "Broken" in text and request_id in text
    assert SECRET not in text


def test_an_error_after_the_answer_leaves_the_answer_and_logs_its_class_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_layer, "captured", _raise)
    with (
        TestClient(Loopback(_app(tmp_path)), raise_server_exceptions=True) as client,
        collecting() as records,
    ):
        response = client.get("/fhir/Patient/missing")  # audited: the record fails
    outcome(response, 404)
    text = "\n".join(r.getMessage() for r in records)
    assert "Broken" in text and response.headers["x-request-id"] in text
    assert SECRET not in text
    lines = [r.getMessage() for r in records if r.name == "calaim_fhir.request"]
    assert any('"status":404' in line for line in lines)
