"""Asynchronous jobs: long requests answered later (FHIR asynchronous request pattern,
``Prefer: respond-async``).

``JobRunner.submit`` records a job in the database (``async_job``, through the store's
``JobStore``) and runs its work on a worker thread of a small pool. The work gets a
``JobContext``: ``read`` and ``write`` reach the store (a reader on the worker thread; write
units through the application's group commit, handed to the event loop), ``progress`` records
how far it got, ``cancelled`` says whether to stop. The work returns ``(status, resource)``;
the job then holds that resource as its result. A ``FhirError`` it raises becomes a failed job
with that error's status and OperationOutcome; any other exception a failed job with 500 and
a generic OperationOutcome (the exception is logged by type and place only: no PHI in logs).

The job's state lives in the database, not in this process, so any worker process can answer
a poll or a cancellation:

* **cancellation** marks the row ``cancelled``; the work sees it at its next ``cancelled()``
  (the row is read at most once per ``check_interval``) and stops; whatever it returns or
  raises then is discarded (every ending is conditional on the row still running);
* **heartbeat**: every ``progress`` call, and a heartbeat thread for the jobs this process
  holds (running or queued, every quarter of ``stale_seconds``), update the row's ``updated``;
  a running job not heard from for ``stale_seconds`` is reported failed by whoever polls it
  (its worker process died or hung);
* **retention**: a job's row and result are kept ``retention_seconds`` after it ends, then
  purged lazily (on submit and on poll, at most once a minute per process).

Stopping the runner (``close``, at application shutdown) makes ``cancelled()`` true for every
job it holds and fails those that did not finish ("the server stopped"); call it off the event
loop (a job may be waiting for the loop to run its write).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, TypeVar

import orjson

from server.auth.principal import Principal
from server.errors import FhirError, ServiceUnavailable
from server.fhir.instant import now_us
from server.fhir.outcome import Issue, operation_outcome
from server.logs import error_place
from server.ports import Reader, Unit
from server.store.base import Job, JobStore

T = TypeVar("T")
logger = logging.getLogger("calaim_fhir.jobs")

_STOPPED = "The server stopped while running this request; submit it again"
_STALE = "The worker running this request stopped before it finished; submit it again"


class JobCancelled(Exception):
    """Raised by ``JobContext.check`` when the job is to stop (cancelled, or the server is
    stopping)."""


class Access(Protocol):
    """What a job reaches the store through: the submitting request's authorized repository
    (``server.store.authorized.AuthorizedRepository``)."""

    principal: Principal

    def reader(self) -> AbstractContextManager[Reader]: ...

    async def writing(self, fn: Callable[[Unit], T]) -> T: ...


class ThreadWrites:
    """``server.ports.Writes`` for a worker thread: the unit runs through the event loop's
    group commit; the thread waits until it is durable."""

    def __init__(
        self,
        access: Access,
        loop: asyncio.AbstractEventLoop,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._access = access
        self._loop = loop
        self._stopping = stopping

    def __call__(self, fn: Callable[[Unit], T], /) -> T:
        if self._stopping():
            raise ServiceUnavailable("The server is stopping")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("a blocking write on the event loop's thread would never end")
        return asyncio.run_coroutine_threadsafe(self._access.writing(fn), self._loop).result()


class JobContext:
    """What a job's work can do: read, write, report progress, learn it should stop."""

    def __init__(self, runner: JobRunner, id: str, access: Access) -> None:
        self.id = id
        self._runner = runner
        self._access = access
        self._writes = ThreadWrites(access, runner.loop, runner.stopping)
        self._ended = False  # the row no longer runs (cancelled, failed as stale, removed)
        self._checked = float("-inf")
        self._reported = float("-inf")

    def read(self, fn: Callable[[Reader], T]) -> T:
        """Run ``fn`` with a reader on this thread (authorized as the submitting request)."""
        with self._access.reader() as reader:
            return fn(reader)

    def write(self, fn: Callable[[Unit], T], /) -> T:
        """Run ``fn`` as one write unit (group commit); returns once it is durable."""
        return self._writes(fn)

    def progress(self, done: int, total: int | None = None) -> None:
        """Record progress (at most once per ``check_interval``, and always the last step:
        ``done == total``); also the job's heartbeat."""
        clock = time.monotonic()
        final = total is not None and done >= total
        if not final and clock - self._reported < self._runner.check_interval:
            return
        self._reported = clock
        try:
            if not self._runner.store.progress(self.id, done, total, self._runner.clock()):
                self._ended = True
        except FhirError:  # the database is unavailable: progress is best effort
            logger.warning("job %s: progress not recorded (database unavailable)", self.id)

    def cancelled(self) -> bool:
        """True once the job should stop: cancelled by its client (the row is read at most
        once per ``check_interval``), no longer running, or the server is stopping."""
        if self._ended or self._runner.stopping():
            return True
        clock = time.monotonic()
        if clock - self._checked < self._runner.check_interval:
            return False
        self._checked = clock
        try:
            self._ended = self._runner.store.state(self.id) != "running"
        except FhirError:  # the database is unavailable: keep going
            logger.warning("job %s: state not read (database unavailable)", self.id)
        return self._ended

    def check(self) -> None:
        """Raise ``JobCancelled`` if the job should stop."""
        if self.cancelled():
            raise JobCancelled(self.id)


Work = Callable[[JobContext], tuple[int, dict[str, Any]]]


class JobRunner:
    """Runs and tracks asynchronous jobs (see the module docstring). Thread-safe; its methods
    block on the database, so request handlers call them through ``asyncio.to_thread``."""

    def __init__(
        self,
        store: JobStore,
        *,
        retention_seconds: float = 24 * 3600,
        stale_seconds: float = 300,
        workers: int = 2,
        clock: Callable[[], int] = now_us,
        check_interval: float = 1.0,
        purge_every: float = 60.0,
        owner: str | None = None,
        beat_every: float | None = None,
    ) -> None:
        self.store = store
        self.retention_us = int(retention_seconds * 1_000_000)
        self.stale_us = int(stale_seconds * 1_000_000)
        self.clock = clock  # microseconds since the epoch (tests move it)
        self.check_interval = check_interval  # seconds between reads of a job's state
        self.purge_every = purge_every  # seconds between lazy purges, per process
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="async-job")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._held: set[str] = set()  # jobs of this process not yet ended: queued or running
        self._lock = threading.Lock()
        self._purged = float("-inf")
        # seconds between heartbeats (default: a quarter of the stale limit)
        self._beat_every = beat_every if beat_every is not None else max(stale_seconds / 4, 0.01)
        self._beat: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the job runner has not been started")
        return self._loop

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the event loop that runs write units, and start the heartbeat."""
        self._loop = loop
        self._beat = threading.Thread(target=self._heartbeat, name="async-job-beat", daemon=True)
        self._beat.start()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop: running jobs see ``cancelled()``; wait for them; fail every job of this
        process that did not finish. Blocking: never on the event loop's thread."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left = sorted(self._held)
            self._held.clear()
        for id in left:
            self._fail(id, 503, _STOPPED)
        if self._beat is not None:
            self._beat.join()

    # -- the API of the routes ----------------------------------------------------------------

    def submit(
        self, kind: str, request: dict[str, Any], work: Work, *, access: Access, unit: str = "items"
    ) -> str:
        """Record a new running job and queue ``work``; its id. ``request`` says what was asked
        (``{"method": ..., "url": ...}``); ``unit`` what its progress counts."""
        if self._loop is None:
            raise RuntimeError("the job runner has not been started")
        if self.stopping():
            raise ServiceUnavailable("The server is stopping")
        now = self.clock()
        self._purge(now)
        id = uuid.uuid4().hex
        job = Job(
            id=id,
            kind=kind,
            state="running",
            request=request,
            principal=access.principal.key,
            unit=unit,
            done=0,
            total=None,
            created=now,
            updated=now,
            expires=now + self.retention_us,
            owner=self.owner,
        )
        self.store.create(job)
        context = JobContext(self, id, access)
        with self._lock:
            self._held.add(id)
        try:
            self._pool.submit(self._execute, id, kind, work, context)
        except RuntimeError as exc:  # shut down in between
            with self._lock:
                self._held.discard(id)
            self._fail(id, 503, _STOPPED)
            raise ServiceUnavailable("The server is stopping") from exc
        logger.info("job %s (%s) submitted", id, kind)
        return id

    def running(self, kind: str, principal: str) -> int:
        """How many jobs of ``kind`` of ``principal`` run now (a stale one does not count)."""
        return self.store.running(kind, principal, self.clock() - self.stale_us)

    def stale(self, job: Job) -> bool:
        """Whether a running job's worker has not been heard from for ``stale_seconds``."""
        return job.state == "running" and job.updated < self.clock() - self.stale_us

    def resume(self, job: Job, work: Work, *, access: Access) -> bool:
        """Take over a stale running job (its worker died) and run ``work`` for it on this
        process; False if another worker took it first or it is no longer stale. ``work``
        must pick up from what the dead worker left (the job's ``request`` and its output)."""
        if self.stopping():
            raise ServiceUnavailable("The server is stopping")
        now = self.clock()
        if not self.store.claim(job.id, self.owner, now, now - self.stale_us):
            return False
        context = JobContext(self, job.id, access)
        with self._lock:
            self._held.add(job.id)
        try:
            self._pool.submit(self._execute, job.id, job.kind, work, context)
        except RuntimeError as exc:  # shut down in between
            with self._lock:
                self._held.discard(job.id)
            self._fail(job.id, 503, _STOPPED)
            raise ServiceUnavailable("The server is stopping") from exc
        logger.warning("job %s (%s) resumed: its worker stopped", job.id, job.kind)
        return True

    def status(self, id: str, principal: str) -> Job | None:
        """The job as its client may see it (``principal``: the asking ``Principal.key``): None
        if unknown, not theirs, cancelled or expired.
        A running job not heard from for ``stale_seconds`` is failed first."""
        now = self.clock()
        self._purge(now)
        job = self.store.get(id)
        if job is None or job.principal != principal or job.state == "cancelled":
            return None
        if job.state != "running":
            return job if job.expires >= now else None
        if job.updated < now - self.stale_us:
            outcome = operation_outcome([Issue("error", "incomplete", _STALE)])
            self.store.finish(
                id,
                "failed",
                orjson.dumps(outcome),
                500,
                now,
                now + self.retention_us,
                stale_before=now - self.stale_us,
            )
            logger.warning("job %s (%s) reported failed: its worker stopped", id, job.kind)
            return self.status(id, principal)
        return job

    def cancel(self, id: str, principal: str) -> Literal["cancelled", "deleted"] | None:
        """Cancel a running job, or delete an ended one (its result); None if there is none
        (unknown, not theirs, already cancelled or expired)."""
        job = self.status(id, principal)
        if job is None:
            return None
        now = self.clock()
        if job.state == "running":
            if self.store.cancel(id, now):
                logger.info("job %s (%s) cancelled", id, job.kind)
                return "cancelled"
            job = self.status(id, principal)  # it ended in between: delete its result
            if job is None:
                return None
        return "deleted" if self.store.delete(id) else None

    # -- workers ------------------------------------------------------------------------------

    def _execute(self, id: str, kind: str, work: Work, context: JobContext) -> None:
        started = time.perf_counter()
        try:
            self._finish(id, kind, work, context)
        finally:
            with self._lock:
                self._held.discard(id)
            logger.info("job %s (%s) ended after %.3f s", id, kind, time.perf_counter() - started)

    def _finish(self, id: str, kind: str, work: Work, context: JobContext) -> None:
        status: int
        result: bytes
        try:
            if self.stopping():
                raise JobCancelled(id)
            status, resource = work(context)
            result = orjson.dumps(resource)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's answer
            if self.stopping():
                self._fail(id, 503, _STOPPED)
                return
            if isinstance(exc, JobCancelled):
                return  # cancelled: the row says so already
            if isinstance(exc, FhirError):
                self._end(id, "failed", orjson.dumps(exc.outcome()), exc.status)
                return
            _log_unexpected(id, kind, exc)
            outcome = operation_outcome(
                [Issue("fatal", "exception", f"Internal server error (job {id})")]
            )
            self._end(id, "failed", orjson.dumps(outcome), 500)
            return
        self._end(id, "completed", result, status)

    def _end(
        self, id: str, state: Literal["completed", "failed"], result: bytes, status: int
    ) -> None:
        now = self.clock()
        try:
            self.store.finish(id, state, result, status, now, now + self.retention_us)
        except FhirError:  # the row stays running; with no heartbeat it is reported stale
            logger.error("job %s: its end was not recorded (database unavailable)", id)

    def _fail(self, id: str, status: int, message: str) -> None:
        outcome = operation_outcome([Issue("error", "transient", message)])
        self._end(id, "failed", orjson.dumps(outcome), status)

    def _purge(self, now: int) -> None:
        clock = time.monotonic()
        if clock - self._purged < self.purge_every:
            return
        self._purged = clock
        try:
            self.store.purge(now)
        except FhirError:
            logger.warning("expired jobs not purged (database unavailable)")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._beat_every):
            with self._lock:
                held = sorted(self._held)
            if not held:
                continue
            try:
                self.store.touch(held, self.clock())
            except FhirError:
                logger.warning("job heartbeat not recorded (database unavailable)")


def _log_unexpected(id: str, kind: str, exc: BaseException) -> None:
    """The exception's type and place only: its message and locals may carry resource content."""
    where = error_place(exc)
    logger.error("job %s (%s) failed: unhandled %s at %s", id, kind, type(exc).__name__, where)
