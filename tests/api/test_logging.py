"""Request logs: one JSON line per request with its id, interaction, status and duration,
and never any resource content (PHI)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Loopback, TestClient, fhir_client, outcome, sqlite_url

FAMILY = "Zyxwvutsrq"
GIVEN = "Qponmlkjih"
SECRET_ID_VALUE = "CIN-98765-SECRET"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[TestClient, _Collect, io.StringIO]]:
    """A client, plus everything the ``calaim_fhir`` loggers emit while it runs: the records
    and the text the server's own StreamHandler writes (its stream swapped for a buffer)."""
    with fhir_client(sqlite_url(tmp_path / "log.db")) as client:
        root = logging.getLogger("calaim_fhir")  # the lifespan configured it (propagate=False)
        collect = _Collect()
        stream = io.StringIO()
        swapped: list[tuple[logging.StreamHandler[io.TextIOWrapper], object]] = []
        for handler in root.handlers:
            if isinstance(handler, logging.StreamHandler):
                swapped.append((handler, handler.setStream(stream)))  # type: ignore[arg-type]
        root.addHandler(collect)
        try:
            yield client, collect, stream
        finally:
            root.removeHandler(collect)
            for handler, old in swapped:
                handler.setStream(old)  # type: ignore[arg-type]


def _exercise(client: TestClient) -> list[str]:
    """Requests that carry the PHI in bodies, URLs and headers; returns their request ids."""
    body = {"resourceType": "Patient", "name": [{"family": FAMILY, "given": [GIVEN]}],
            "identifier": [{"system": "urn:calaim:cin", "value": SECRET_ID_VALUE}]}
    responses = [client.post("/fhir/Patient", json=body)]
    assert responses[0].status_code == 201, responses[0].text
    pid = responses[0].json()["id"]
    responses += [
        client.get(f"/fhir/Patient/{pid}"),
        client.get("/fhir/Patient", params={"identifier": f"urn:calaim:cin|{SECRET_ID_VALUE}"}),
        client.get(f"/fhir/Patient/{pid}/_history"),
        client.put(f"/fhir/Patient/{pid}", json={**body, "id": pid}),
        client.post("/fhir/Patient", json={**body, "birthDate": FAMILY}),  # invalid: 400
        client.get("/fhir/Patient", params={"family:sounds": FAMILY}),  # unknown modifier: 400
        client.post("/fhir/Patient", json=body,
                    headers={"If-None-Exist": f"identifier=urn:calaim:cin|{SECRET_ID_VALUE}"}),
        client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": body, "request": {"method": "POST", "url": "Patient"}}]}),
    ]
    assert responses[1].json()["name"][0]["family"] == FAMILY
    outcome(responses[5], 400)
    outcome(responses[6], 400)
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), "every response carries X-Request-Id"
    assert len(set(ids)) == len(ids), "request ids are unique"
    return [i for i in ids if i]


def test_request_lines_are_logged_without_phi(
    logged: tuple[TestClient, _Collect, io.StringIO],
) -> None:
    client, collect, stream = logged
    request_ids = _exercise(client)
    messages = [r.getMessage() for r in collect.records]
    text = "\n".join(messages) + "\n" + stream.getvalue()
    for secret in (FAMILY, GIVEN, SECRET_ID_VALUE):
        assert secret not in text, f"{secret!r} leaked into the logs"
    lines = [json.loads(m) for m in messages if m.startswith("{")]
    by_id = {line.get("request_id"): line for line in lines}
    for request_id in request_ids:
        line = by_id.get(request_id)
        assert line is not None, f"no request line for {request_id}: {messages}"
        for key in ("request_id", "interaction", "status", "duration_ms"):
            assert key in line, f"{key} missing from {line}"
        assert isinstance(line["status"], int)
        assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert by_id[request_ids[0]]["interaction"] == "create"
    assert by_id[request_ids[0]]["status"] == 201
    assert by_id[request_ids[1]]["interaction"] == "read"
    assert by_id[request_ids[2]]["interaction"] == "search-type"
    assert by_id[request_ids[5]]["status"] == 400
    assert stream.getvalue().strip(), "the server's own handler wrote the request lines"


def test_a_safe_client_request_id_is_echoed_and_an_unsafe_one_replaced(
    logged: tuple[TestClient, _Collect, io.StringIO],
) -> None:
    client, collect, _ = logged
    ok = client.get("/fhir/metadata", headers={"X-Request-Id": "client-abc.123"})
    assert ok.headers["x-request-id"] == "client-abc.123"
    unsafe = f"{FAMILY} <script>"
    bad = client.get("/fhir/metadata", headers={"X-Request-Id": unsafe})
    assert bad.headers["x-request-id"] and bad.headers["x-request-id"] != unsafe
    messages = "\n".join(r.getMessage() for r in collect.records)
    assert "client-abc.123" in messages
    assert FAMILY not in messages


def test_server_errors_log_no_resource_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 whose exception message carries request content (here: the search values and the
    id) is answered with an OperationOutcome naming the request id, logged with the error's
    class and the request id, and never leaves the application (a server would print its
    traceback and message): the client raises any exception that does."""
    from server.api import bundles, routes
    from server.app import create_app
    from server.settings import Settings

    class Broken(RuntimeError):
        pass

    def broken(reader: object, request: Any, settings: object, *bound: object) -> None:
        raise Broken(f"cannot read {request.id} {request.query}")

    monkeypatch.setattr(routes, "run_read", broken)
    monkeypatch.setattr(bundles, "run_read", broken)
    app = create_app(Settings(database_url=sqlite_url(tmp_path / "e.db"), auth="off"))
    caplog.set_level(logging.DEBUG)
    with TestClient(Loopback(app), raise_server_exceptions=True) as client:
        root = logging.getLogger("calaim_fhir")
        collect = _Collect()
        root.addHandler(collect)
        try:
            responses = [
                client.get(f"/fhir/Patient/p1?_elements={GIVEN}"),  # the fast path
                client.get("/fhir/Patient", params={"family": FAMILY}),  # a routed search
                client.get("/fhir/Patient", params={"identifier": SECRET_ID_VALUE}),
                client.post("/fhir/Patient/_search", data={"given": GIVEN}),
            ]
            batch = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch",
                                               "entry": [{"request": {"method": "GET",
                                                          "url": f"Patient?family={FAMILY}"}}]})
        finally:
            root.removeHandler(collect)
    for response in [*responses, batch]:
        body = outcome(response, 500)
        request_id = response.headers["x-request-id"]
        assert request_id in body["issue"][0]["diagnostics"]
        assert FAMILY not in response.text and SECRET_ID_VALUE not in response.text
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    messages = [r.getMessage() for r in [*collect.records, *server_side]]
    text = "\n".join(messages)
    for secret in (FAMILY, GIVEN, SECRET_ID_VALUE):
        assert secret not in text, f"{secret!r} leaked into the logs"
    for response in [*responses, batch]:
        request_id = response.headers["x-request-id"]
        errors = [m for m in messages if "unhandled Broken" in m and request_id in m]
        assert errors, f"no error line for {request_id}: {messages}"


def test_an_unknown_type_in_the_url_is_not_logged(
    logged: tuple[TestClient, _Collect, io.StringIO],
) -> None:
    """A mistyped URL (``GET /fhir/<a name>``) must not put the name into the log: only
    supported resource types are safe to log."""
    client, collect, stream = logged
    outcome(client.get(f"/fhir/{FAMILY}"), 404)
    outcome(client.get(f"/fhir/{FAMILY}/_history"), 404)
    text = "\n".join(r.getMessage() for r in collect.records) + stream.getvalue()
    assert FAMILY not in text, f"{FAMILY!r} leaked into the logs: {text}"
