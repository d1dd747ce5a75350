"""Asynchronous requests on both stores: ``[base]/_async/{job}`` (status, result, failure,
cancellation, expiry, stale workers, another worker process), and long-running and
system-level operations (``Prefer: respond-async``), with fake operations and jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from server.auth.principal import LOCAL
from server.errors import Unprocessable
from server.jobs import JobContext, JobRunner, Work
from server.operations.call import Call
from server.ports import Unit
from server.store.authorized import AuthorizedRepository
from server.store.base import Job
from server.writes.write import Write
from tests.support import (
    BASE,
    FHIR_JSON,
    TestClient,
    defined_operation,
    extra_operations,
    outcome,
)

RESULT = {"resourceType": "Parameters", "parameter": [{"name": "answer", "valueInteger": 42}]}
HOUR = 3600 * 1_000_000


# -- fakes ------------------------------------------------------------------------------------


class Gate:
    """Holds fake work until the test opens it (always opened at the end of a test)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.cancel_seen = threading.Event()

    def hold(self) -> None:
        self.open.clear()

    def wait(self, cancelled: Callable[[], bool]) -> bool:
        """Wait until open; False if cancelled first."""
        self.entered.set()
        while not self.open.wait(0.01):
            if cancelled():
                self.cancel_seen.set()
                return False
        return True


GATE = Gate()


@pytest.fixture(autouse=True)
def _gate() -> Iterator[Gate]:
    global GATE
    GATE = Gate()
    yield GATE
    GATE.open.set()


def _count(call: Call) -> dict[str, Any]:
    count = int((call.params.get("count") or [3])[0])
    call.progress(0, count)
    if not GATE.wait(call.cancelled):
        raise Unprocessable("The run was cancelled")
    for done in range(1, count + 1):
        call.progress(done, count)
    assert call.write is not None
    basic_run = {"resourceType": "Basic", "code": {"text": "run"}}
    written = call.write(Write("create", "Basic", resource=basic_run))
    assert written.result is not None and written.result.version is not None
    basic = written.result.version.id
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "basic", "valueReference": {"reference": f"Basic/{basic}"}},
            {"name": "level", "valueString": call.level},
            {"name": "async", "valueBoolean": call.prefer_async},
            {"name": "base", "valueString": call.fhir_base},
            {"name": "group", "valueString": (call.instance or {}).get("id", "")},
        ],
    }


def _quick(call: Call) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "level", "valueString": call.level}],
    }


COUNT = (("count", "integer"),)
SLOW_SYSTEM = defined_operation(
    "slow-count",
    _count,
    system=True,
    affects_state=True,
    parameters=COUNT,
    long_running=True,
    progress_unit="members",
)
SLOW_GROUP = defined_operation(
    "slow-count",
    _count,
    resource=("Group",),
    instance=True,
    affects_state=True,
    parameters=COUNT,
    long_running=True,
    progress_unit="members",
)
QUICK_SYSTEM = defined_operation("quick-count", _quick, system=True, parameters=COUNT)


@pytest.fixture
def fake_operations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with extra_operations(monkeypatch, SLOW_SYSTEM, SLOW_GROUP, QUICK_SYSTEM):
        yield


def _jobs(client: TestClient) -> JobRunner:
    jobs: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]
    return jobs


def _submit(
    client: TestClient,
    work: Callable[[JobContext], tuple[int, dict[str, Any]]],
    unit: str = "members",
) -> str:
    access = AuthorizedRepository(client.app.state.runner, LOCAL)  # type: ignore[attr-defined]
    return _jobs(client).submit(
        "test", {"method": "POST", "url": f"{BASE}/$test"}, work, access=access, unit=unit
    )


def _poll(client: TestClient, url: str, timeout: float = 10) -> Any:
    """GET the status URL until the job has ended."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        if response.status_code != 202:
            return response
        assert time.monotonic() < deadline, f"{url} still running"
        time.sleep(0.02)


def _wait(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _entry(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "batch-response"
    assert len(bundle["entry"]) == 1
    entry: dict[str, Any] = bundle["entry"][0]
    return entry


def _param(parameters: dict[str, Any], name: str) -> Any:
    for p in parameters["parameter"]:
        if p["name"] == name:
            return next(v for k, v in p.items() if k.startswith("value"))
    raise KeyError(name)


# -- the status URL ---------------------------------------------------------------------------


def _held(done: int, total: int | None = None) -> Work:
    """Work that reports ``done`` (of ``total``), then waits at the gate (or until cancelled)."""

    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        ctx.progress(done, total)
        GATE.wait(ctx.cancelled)
        return 200, RESULT

    return work


def test_a_running_job_answers_202_with_progress(client: TestClient) -> None:
    GATE.hold()

    id = _submit(client, _held(2, 5))
    _wait(GATE.entered.is_set)
    response = client.get(f"/fhir/_async/{id}")
    assert response.status_code == 202, response.text
    assert response.headers["x-progress"] == "2 of 5 members"
    assert response.headers["retry-after"] == "2"
    body = outcome(response, 202)
    assert body["issue"][0]["severity"] == "information"
    GATE.open.set()
    assert _entry(_poll(client, f"/fhir/_async/{id}"))["resource"] == RESULT


def test_progress_without_a_total(client: TestClient) -> None:
    GATE.hold()

    id = _submit(client, _held(7))
    _wait(GATE.entered.is_set)
    assert client.get(f"/fhir/_async/{id}").headers["x-progress"] == "7 done"


def test_a_completed_job_answers_a_batch_response_with_its_result(client: TestClient) -> None:
    id = _submit(client, lambda ctx: (200, RESULT))
    response = _poll(client, f"/fhir/_async/{id}")
    entry = _entry(response)
    assert entry == {"resource": RESULT, "response": {"status": "200 OK"}}
    expires = parsedate_to_datetime(response.headers["expires"]).timestamp()
    assert 23.9 * 3600 < expires - time.time() <= 24 * 3600 + 5
    pretty = client.get(f"/fhir/_async/{id}?_pretty=true")
    assert pretty.status_code == 200 and "\n  " in pretty.text


def test_a_failed_job_answers_its_status_and_outcome(client: TestClient) -> None:
    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        raise Unprocessable("The Group has no members", expression="Group.member")

    id = _submit(client, work)
    entry = _entry(_poll(client, f"/fhir/_async/{id}"))
    assert "resource" not in entry
    assert entry["response"]["status"] == "422 Unprocessable Entity"
    issue = entry["response"]["outcome"]["issue"][0]
    assert issue["diagnostics"] == "The Group has no members"


def test_an_unexpected_failure_answers_500_without_details(client: TestClient) -> None:
    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        raise KeyError("member 123-45-6789")

    id = _submit(client, work)
    entry = _entry(_poll(client, f"/fhir/_async/{id}"))
    assert entry["response"]["status"] == "500 Internal Server Error"
    assert "6789" not in str(entry)


def test_unknown_jobs_are_404(client: TestClient) -> None:
    outcome(client.get("/fhir/_async/0123456789abcdef"), 404)
    outcome(client.delete("/fhir/_async/0123456789abcdef"), 404)
    outcome(client.get("/fhir/_async/not_an_id"), 404)
    outcome(client.get("/fhir/_async/a/b"), 404)
    outcome(client.put("/fhir/_async/0123456789abcdef", json={}), 405)


def test_delete_cancels_a_running_job(client: TestClient) -> None:
    GATE.hold()
    returned: list[bool] = []

    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        GATE.wait(ctx.cancelled)
        returned.append(True)
        return 200, RESULT

    id = _submit(client, work)
    _wait(GATE.entered.is_set)
    response = client.delete(f"/fhir/_async/{id}")
    assert outcome(response, 202)["issue"][0]["severity"] == "information"
    assert GATE.cancel_seen.wait(10)
    _wait(lambda: bool(returned))
    outcome(client.get(f"/fhir/_async/{id}"), 404)
    outcome(client.delete(f"/fhir/_async/{id}"), 404)
    row = client.app.state.store.jobs.get(id)  # type: ignore[attr-defined]
    assert row is None or (row.state == "cancelled" and row.result is None)


def test_delete_removes_the_result_of_an_ended_job(client: TestClient) -> None:
    id = _submit(client, lambda ctx: (200, RESULT))
    _poll(client, f"/fhir/_async/{id}")
    outcome(client.delete(f"/fhir/_async/{id}"), 202)
    outcome(client.get(f"/fhir/_async/{id}"), 404)
    outcome(client.delete(f"/fhir/_async/{id}"), 404)


def test_results_expire_after_24_hours(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    id = _submit(client, lambda ctx: (200, RESULT))
    _poll(client, f"/fhir/_async/{id}")
    jobs = _jobs(client)
    start = jobs.clock()
    monkeypatch.setattr(jobs, "clock", lambda: start + 23 * HOUR)
    assert client.get(f"/fhir/_async/{id}").status_code == 200
    monkeypatch.setattr(jobs, "clock", lambda: start + 25 * HOUR)
    monkeypatch.setattr(jobs, "purge_every", 0)
    outcome(client.get(f"/fhir/_async/{id}"), 404)
    assert client.app.state.store.jobs.get(id) is None  # type: ignore[attr-defined]


def test_a_job_whose_worker_stopped_is_reported_failed(client: TestClient) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    now = _jobs(client).clock()
    for id, age in (("stale", 301), ("fresh", 299)):
        updated = now - age * 1_000_000
        store.jobs.create(
            Job(
                id=id,
                kind="test",
                state="running",
                request={},
                principal=LOCAL.key,
                unit="members",
                done=1,
                total=4,
                created=updated,
                updated=updated,
                expires=now + HOUR,
                owner="gone:1",
            )
        )
    entry = _entry(client.get("/fhir/_async/stale"))
    assert entry["response"]["status"] == "500 Internal Server Error"
    assert "stopped" in entry["response"]["outcome"]["issue"][0]["diagnostics"]
    fresh = client.get("/fhir/_async/fresh")
    assert fresh.status_code == 202 and fresh.headers["x-progress"] == "1 of 4 members"


def test_another_worker_process_answers_and_cancels(
    client: TestClient, make_client: Callable[..., AbstractContextManager[TestClient]]
) -> None:
    GATE.hold()

    id = _submit(client, _held(1, 2))
    _wait(GATE.entered.is_set)
    with make_client() as other:
        response = other.get(f"/fhir/_async/{id}")
        assert response.status_code == 202 and response.headers["x-progress"] == "1 of 2 members"
        outcome(other.delete(f"/fhir/_async/{id}"), 202)
    assert GATE.cancel_seen.wait(10)  # the first worker saw it in the database
    outcome(client.get(f"/fhir/_async/{id}"), 404)


def test_a_job_writes_through_group_commit(client: TestClient) -> None:
    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        def create(unit: Unit) -> str:
            result = unit.create("Basic", {"resourceType": "Basic", "code": {"text": "job"}})
            assert result.version is not None
            return result.version.id

        basic = ctx.write(create)
        return 200, {
            "resourceType": "Parameters",
            "parameter": [{"name": "id", "valueString": basic}],
        }

    id = _submit(client, work)
    basic = _param(_entry(_poll(client, f"/fhir/_async/{id}"))["resource"], "id")
    assert client.get(f"/fhir/Basic/{basic}").status_code == 200


# -- long-running and system-level operations -------------------------------------------------

COUNT_3 = {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 3}]}
ASYNC = {"Content-Type": FHIR_JSON, "Prefer": "respond-async"}


@pytest.mark.usefixtures("fake_operations")
def test_respond_async_answers_202_with_a_status_url(client: TestClient) -> None:
    GATE.hold()
    response = client.post("/fhir/$slow-count", json=COUNT_3, headers=ASYNC)
    assert response.status_code == 202, response.text
    location = response.headers["content-location"]
    assert location.startswith(f"{BASE}/_async/")
    outcome(response, 202)
    _wait(GATE.entered.is_set)
    running = client.get(location)
    assert running.status_code == 202
    assert running.headers["x-progress"] == "0 of 3 members"
    GATE.open.set()
    result = _entry(_poll(client, location))
    parameters = result["resource"]
    assert result["response"]["status"] == "200 OK"
    assert _param(parameters, "level") == "system"
    assert _param(parameters, "async") is True
    assert _param(parameters, "base") == BASE
    basic = _param(parameters, "basic")["reference"]
    assert client.get(f"/fhir/{basic}").status_code == 200
    job = client.app.state.store.jobs.get(location.rsplit("/", 1)[1])  # type: ignore[attr-defined]
    assert job.kind == "slow-count" and (job.done, job.total) == (3, 3)
    assert job.request == {"method": "POST", "url": f"{BASE}/$slow-count"}


@pytest.mark.usefixtures("fake_operations")
def test_without_respond_async_a_long_operation_answers_at_once(client: TestClient) -> None:
    response = client.post("/fhir/$slow-count", json=COUNT_3, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    parameters = response.json()
    assert _param(parameters, "async") is False
    assert _param(parameters, "level") == "system"
    basic = _param(parameters, "basic")["reference"]
    assert client.get(f"/fhir/{basic}").status_code == 200


@pytest.mark.usefixtures("fake_operations")
def test_an_instance_level_long_operation_checks_the_instance_first(client: TestClient) -> None:
    outcome(client.post("/fhir/Group/nope/$slow-count", json=COUNT_3, headers=ASYNC), 404)
    group = {"resourceType": "Group", "id": "g1", "type": "person", "actual": True}
    put = client.put("/fhir/Group/g1", json=group, headers={"Content-Type": FHIR_JSON})
    assert put.status_code == 201, put.text
    response = client.post("/fhir/Group/g1/$slow-count", json=COUNT_3, headers=ASYNC)
    assert response.status_code == 202, response.text
    parameters = _entry(_poll(client, response.headers["content-location"]))["resource"]
    assert _param(parameters, "level") == "instance"
    assert _param(parameters, "group") == "g1"
    outcome(client.post("/fhir/Patient/p/$slow-count", json=COUNT_3, headers=ASYNC), 404)


@pytest.mark.usefixtures("fake_operations")
def test_cancelling_an_operation_job(client: TestClient) -> None:
    GATE.hold()
    response = client.post("/fhir/$slow-count", json=COUNT_3, headers=ASYNC)
    location = response.headers["content-location"]
    _wait(GATE.entered.is_set)
    outcome(client.delete(location), 202)
    assert GATE.cancel_seen.wait(10)
    outcome(client.get(location), 404)
    assert client.get("/fhir/Basic").json().get("total", 0) == 0


@pytest.mark.usefixtures("fake_operations")
def test_system_level_routes(client: TestClient) -> None:
    quick = client.get("/fhir/$quick-count")
    assert quick.status_code == 200, quick.text
    assert _param(quick.json(), "level") == "system"
    assert (
        client.post(
            "/fhir/$quick-count", json=COUNT_3, headers={"Content-Type": FHIR_JSON}
        ).status_code
        == 200
    )
    outcome(client.get("/fhir/$slow-count"), 405)  # it changes data: POST only
    outcome(
        client.post("/fhir/$no-such-operation", json=COUNT_3, headers={"Content-Type": FHIR_JSON}),
        404,
    )
    outcome(client.put("/fhir/$slow-count", json=COUNT_3), 405)
    outcome(client.get("/fhir/$validate"), 404)  # defined on types, not on the system
    # a system-level operation is not a type-level one
    outcome(
        client.post(
            "/fhir/Patient/$quick-count", json=COUNT_3, headers={"Content-Type": FHIR_JSON}
        ),
        404,
    )


@pytest.mark.usefixtures("fake_operations")
def test_respond_async_among_other_preferences(client: TestClient) -> None:
    headers = {"Content-Type": FHIR_JSON, "Prefer": "return=minimal, respond-async"}
    response = client.post("/fhir/$slow-count", json=COUNT_3, headers=headers)
    assert response.status_code == 202, response.text
    assert _entry(_poll(client, response.headers["content-location"]))["resource"]


@pytest.mark.usefixtures("fake_operations")
def test_respond_async_is_ignored_by_quick_operations(client: TestClient) -> None:
    response = client.get("/fhir/$quick-count", headers={"Prefer": "respond-async"})
    assert response.status_code == 200 and response.json()["resourceType"] == "Parameters"


@pytest.mark.usefixtures("fake_operations")
def test_the_capability_statement_lists_system_operations(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    rest = statement["rest"][0]
    names = [op["name"] for op in rest["operation"]]
    assert {"quick-count", "slow-count", "ecm-eligibility"} <= set(names)
    assert "respond-async" in rest["documentation"]
    by_type = {r["type"]: [op["name"] for op in r.get("operation", [])] for r in rest["resource"]}
    assert "slow-count" in by_type["Group"]
    assert "slow-count" not in by_type["Patient"]
    assert "quick-count" not in by_type["Patient"]
