"""Asynchronous jobs (server/jobs.py) on a real SQLite store: progress, results, failures,
cancellation, retention with an injected clock, stale heartbeats, shutdown."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.auth.principal import LOCAL, Principal
from server.errors import Unprocessable
from server.fhir.instant import now_us
from server.jobs import JobCancelled, JobContext, JobRunner, ThreadWrites
from server.ports import Reader, Unit
from server.store.authorized import AuthorizedRepository
from server.store.base import Job
from server.store.runner import Runner
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import SQLiteDialect

HOUR = 3600 * 1_000_000
RESULT = {"resourceType": "Parameters", "parameter": [{"name": "answer", "valueInteger": 42}]}


class Clock:
    """Microseconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = now_us()

    def __call__(self) -> int:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += int(hours * HOUR)


@dataclass
class Env:
    repo: SqlRepository
    jobs: JobRunner
    access: AuthorizedRepository
    clock: Clock
    loop: asyncio.AbstractEventLoop

    def submit(self, work: Callable[[JobContext], tuple[int, dict[str, Any]]], **kw: Any) -> str:
        return self.jobs.submit(
            "test", {"method": "POST", "url": "x/$test"}, work, access=self.access, **kw
        )

    def row(self, id: str) -> Job | None:
        return self.repo.jobs.get(id)

    def ended(self, id: str, timeout: float = 10) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.row(id)
            assert job is not None
            if job.state != "running":
                return job
            time.sleep(0.01)
        raise AssertionError(f"job {id} still running")


def _wait(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def _running(tmp_path: Path, **kw: Any) -> Iterator[Env]:
    repo = SqlRepository(SQLiteDialect(str(tmp_path / "jobs.db")))
    repo.migrate()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = Runner(repo, 1)
    clock = Clock()
    options: dict[str, Any] = {"clock": clock, "check_interval": 0, "purge_every": 0}
    options.update(kw)
    jobs = JobRunner(repo.jobs, **options)
    jobs.start(loop)
    env = Env(repo, jobs, AuthorizedRepository(runner, LOCAL), clock, loop)
    try:
        yield env
    finally:
        jobs.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        runner.close()
        loop.close()
        repo.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with _running(tmp_path) as env:
        yield env


def test_a_job_runs_reports_progress_and_keeps_its_result(env: Env) -> None:
    release = threading.Event()

    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        ctx.progress(0, 5)
        ctx.progress(2, 5)
        release.wait(10)
        ctx.progress(5, 5)
        return 200, RESULT

    id = env.submit(work, unit="members")
    _wait(lambda: (job := env.row(id)) is not None and job.done == 2)
    running = env.jobs.status(id, LOCAL.key)
    assert running is not None and running.state == "running"
    assert (running.done, running.total, running.unit, running.kind) == (2, 5, "members", "test")
    assert running.request == {"method": "POST", "url": "x/$test"}
    assert running.owner == env.jobs.owner and running.principal == LOCAL.key
    release.set()
    job = env.ended(id)
    assert job.state == "completed" and job.status == 200
    assert job.result is not None and orjson.loads(job.result) == RESULT
    assert (job.done, job.total) == (5, 5)
    assert job.expires == env.clock.now + 24 * HOUR


def test_progress_is_throttled_but_the_last_step_is_recorded(tmp_path: Path) -> None:
    with _running(tmp_path, check_interval=60) as env:

        def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
            for done in range(100):
                ctx.progress(done, 100)
                if done == 50:
                    job = env.row(ctx.id)
                    assert job is not None and job.done == 0  # only the first was written
            ctx.progress(100, 100)
            return 200, RESULT

        job = env.ended(env.submit(work))
        assert job.state == "completed" and (job.done, job.total) == (100, 100)


def test_work_reads_and_writes_through_the_store(env: Env) -> None:
    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        def create(unit: Unit) -> str:
            result = unit.create("Patient", {"resourceType": "Patient"})
            assert result.version is not None
            return result.version.id

        pid = ctx.write(create)

        def read(reader: Reader) -> int:
            found = reader.read("Patient", pid)
            assert found is not None
            return found.version

        return 200, {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "id", "valueString": pid},
                {"name": "v", "valueInteger": ctx.read(read)},
            ],
        }

    job = env.ended(env.submit(work))
    assert job.state == "completed", job.result
    assert job.result is not None
    params = orjson.loads(job.result)["parameter"]
    with env.repo.reader() as reader:
        stored = reader.read("Patient", params[0]["valueString"])
    assert stored is not None and params[1]["valueInteger"] == 1


def test_a_fhir_error_fails_the_job_with_its_status_and_outcome(env: Env) -> None:
    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        raise Unprocessable("The Group has no members", expression="Group.member")

    job = env.ended(env.submit(work))
    assert job.state == "failed" and job.status == 422
    assert job.result is not None
    issue = orjson.loads(job.result)["issue"][0]
    assert issue["code"] == "processing"
    assert issue["diagnostics"] == "The Group has no members"
    assert issue["expression"] == ["Group.member"]


def test_an_unexpected_exception_fails_with_500_and_logs_no_content(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("calaim_fhir.jobs")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="calaim_fhir.jobs")
    try:

        def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
            raise ValueError("Jane Doe born 1980-01-01")

        id = env.submit(work)
        job = env.ended(id)
    finally:
        logger.removeHandler(caplog.handler)
    assert job.state == "failed" and job.status == 500
    assert job.result is not None
    issue = orjson.loads(job.result)["issue"][0]
    assert issue["severity"] == "fatal" and id in issue["diagnostics"]
    assert "Jane" not in job.result.decode()
    assert "ValueError" in caplog.text and "Jane" not in caplog.text


def test_a_result_that_is_not_json_fails_the_job(env: Env) -> None:
    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        return 200, {"resourceType": "Parameters", "bad": object()}

    job = env.ended(env.submit(work))
    assert job.state == "failed" and job.status == 500


def test_cancel_stops_the_work_and_discards_its_result(env: Env) -> None:
    started = threading.Event()
    saw: list[bool] = []

    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        started.set()
        while not ctx.cancelled():
            time.sleep(0.005)
        saw.append(True)
        return 200, RESULT  # returned after the cancellation: discarded

    id = env.submit(work)
    assert started.wait(10)
    assert env.jobs.cancel(id, LOCAL.key) == "cancelled"
    _wait(lambda: bool(saw))
    _wait(lambda: id not in env.jobs._held)
    row = env.row(id)
    assert row is not None and row.state == "cancelled" and row.result is None
    assert env.jobs.status(id, LOCAL.key) is None
    assert env.jobs.cancel(id, LOCAL.key) is None  # already cancelled
    env.clock.advance(0.001)
    env.jobs.status("whatever", LOCAL.key)  # a poll purges: cancelled rows expire at once
    assert env.row(id) is None


def test_check_raises_once_cancelled(env: Env) -> None:
    started = threading.Event()

    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        started.set()
        while True:
            ctx.check()
            time.sleep(0.005)

    id = env.submit(work)
    assert started.wait(10)
    assert env.jobs.cancel(id, LOCAL.key) == "cancelled"
    _wait(lambda: id not in env.jobs._held)
    row = env.row(id)
    assert row is not None and row.state == "cancelled"


def test_cancelled_reads_the_state_at_most_once_per_interval(tmp_path: Path) -> None:
    with _running(tmp_path, check_interval=60) as env:
        started, go_on = threading.Event(), threading.Event()
        answers: list[bool] = []

        def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
            answers.append(ctx.cancelled())  # reads the row: running
            started.set()
            go_on.wait(10)
            answers.append(ctx.cancelled())  # within the interval: not read again
            return 200, RESULT

        id = env.submit(work)
        assert started.wait(10)
        assert env.jobs.cancel(id, LOCAL.key) == "cancelled"
        go_on.set()
        _wait(lambda: len(answers) == 2)
        assert answers == [False, False]
        _wait(lambda: id not in env.jobs._held)
        row = env.row(id)
        assert row is not None and row.state == "cancelled" and row.result is None


def test_deleting_an_ended_job_removes_its_result(env: Env) -> None:
    id = env.submit(lambda ctx: (200, RESULT))
    env.ended(id)
    assert env.jobs.cancel(id, LOCAL.key) == "deleted"
    assert env.row(id) is None
    assert env.jobs.cancel(id, LOCAL.key) is None
    assert env.jobs.status(id, LOCAL.key) is None


def test_a_job_is_seen_only_by_the_principal_that_asked(env: Env) -> None:
    id = env.submit(lambda ctx: (200, RESULT))
    env.ended(id)
    assert env.jobs.status(id, "someone-else") is None
    assert env.jobs.cancel(id, "someone-else") is None
    assert env.jobs.status(id, LOCAL.key) is not None


def test_work_cannot_read_what_its_principal_may_not(env: Env) -> None:
    nobody = AuthorizedRepository(env.access._runner, Principal("nobody"))

    def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
        ctx.read(lambda reader: reader.scan("Patient", None, 10))
        return 200, RESULT

    id = env.jobs.submit("test", {}, work, access=nobody)
    job = env.ended(id)
    assert job.state == "failed" and job.status == 403


def test_results_expire_after_the_retention_period(env: Env) -> None:
    id = env.submit(lambda ctx: (200, RESULT))
    env.ended(id)
    env.clock.advance(23.9)
    assert env.jobs.status(id, LOCAL.key) is not None
    env.clock.advance(0.2)
    assert env.jobs.status(id, LOCAL.key) is None  # expired (and purged by that poll)
    assert env.row(id) is None


def test_retention_is_a_setting(tmp_path: Path) -> None:
    with _running(tmp_path, retention_seconds=3600) as env:
        id = env.submit(lambda ctx: (200, RESULT))
        job = env.ended(id)
        assert job.expires == env.clock.now + HOUR
        env.clock.advance(1.01)
        assert env.jobs.status(id, LOCAL.key) is None


def test_a_running_job_is_never_purged(env: Env) -> None:
    release = threading.Event()
    id = env.submit(lambda ctx: (release.wait(10), (200, RESULT))[1])
    env.clock.advance(48)
    env.repo.jobs.touch([id], env.clock.now)  # its worker is alive
    job = env.jobs.status(id, LOCAL.key)
    assert job is not None and job.state == "running"
    release.set()
    assert env.ended(id).state == "completed"


def _orphan(env: Env, updated: int) -> str:
    """A running job whose worker (another process) is gone."""
    now = env.clock.now
    job = Job(
        id="orphan",
        kind="test",
        state="running",
        request={},
        principal=LOCAL.key,
        unit="members",
        done=3,
        total=10,
        created=updated,
        updated=updated,
        expires=now + 24 * HOUR,
        owner="elsewhere:1",
    )
    env.repo.jobs.create(job)
    return job.id


def test_a_job_whose_worker_stopped_is_reported_failed(env: Env) -> None:
    id = _orphan(env, env.clock.now - 301 * 1_000_000)
    job = env.jobs.status(id, LOCAL.key)
    assert job is not None and job.state == "failed" and job.status == 500
    assert job.result is not None
    assert "stopped" in orjson.loads(job.result)["issue"][0]["diagnostics"]


def test_a_job_heard_from_recently_is_still_running(env: Env) -> None:
    id = _orphan(env, env.clock.now - 299 * 1_000_000)
    job = env.jobs.status(id, LOCAL.key)
    assert job is not None and job.state == "running" and job.done == 3


def test_the_heartbeat_keeps_a_quiet_job_alive(tmp_path: Path) -> None:
    # the injected clock moves past the stale limit twice while the job makes no progress
    # call; each time the heartbeat records the clock's new time (waited for, however slow
    # the machine), so whoever polls still sees the job running
    with _running(tmp_path, stale_seconds=300, beat_every=0.01) as env:
        release = threading.Event()
        id = env.submit(lambda ctx: (release.wait(30), (200, RESULT))[1])
        _wait(lambda: env.row(id) is not None and env.row(id).state == "running")  # type: ignore[union-attr]
        for _ in range(2):
            env.clock.advance(200 / 3600)  # 200 s: 400 s in all, past the 300 s limit
            _wait(lambda: env.row(id).updated == env.clock.now)  # type: ignore[union-attr]
            job = env.jobs.status(id, LOCAL.key)
            assert job is not None and job.state == "running"
        release.set()
        assert env.ended(id).state == "completed"


def test_without_a_heartbeat_the_same_quiet_job_is_reported_failed(tmp_path: Path) -> None:
    with _running(tmp_path, stale_seconds=300, beat_every=3600) as env:
        release = threading.Event()
        id = env.submit(lambda ctx: (release.wait(30), (200, RESULT))[1])
        _wait(lambda: env.row(id) is not None and env.row(id).state == "running")  # type: ignore[union-attr]
        env.clock.advance(400 / 3600)
        job = env.jobs.status(id, LOCAL.key)
        assert job is not None and job.state == "failed"
        release.set()


def test_closing_fails_running_and_queued_jobs(tmp_path: Path) -> None:
    with _running(tmp_path, workers=1) as env:
        started = threading.Event()

        def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
            started.set()
            while not ctx.cancelled():
                time.sleep(0.005)
            raise JobCancelled(ctx.id)

        running = env.submit(work)
        queued = env.submit(work)
        assert started.wait(10)
        env.jobs.close()
        for id in (running, queued):
            job = env.row(id)
            assert job is not None and job.state == "failed" and job.status == 503
        with pytest.raises(Exception, match="stopping"):
            env.submit(work)


def test_a_job_that_finishes_while_stopping_keeps_its_result(tmp_path: Path) -> None:
    with _running(tmp_path) as env:
        started, release = threading.Event(), threading.Event()

        def work(ctx: JobContext) -> tuple[int, dict[str, Any]]:
            started.set()
            release.wait(10)
            return 200, RESULT

        id = env.submit(work)
        assert started.wait(10)
        closing = threading.Thread(target=env.jobs.close)
        closing.start()
        _wait(env.jobs.stopping)
        release.set()
        closing.join(10)
        job = env.row(id)
        assert job is not None and job.state == "completed"


def test_thread_writes_refuse_the_event_loop_thread(env: Env) -> None:
    writes = ThreadWrites(env.access, env.loop)

    async def on_the_loop() -> None:
        with pytest.raises(RuntimeError, match="event loop"):
            writes(lambda unit: None)

    asyncio.run_coroutine_threadsafe(on_the_loop(), env.loop).result(10)
