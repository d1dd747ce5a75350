"""The FHIR server (SQLite or PostgreSQL, one process) with two measurements added from the
outside, so the same script measures any version of the code (put its checkout first on
PYTHONPATH):

- **lock hold**: from the moment a write group holds the writers' lock (``try_begin`` or
  ``begin`` returned) to the end of its commit, per group, and the writes in each group
  (this includes the commit's fsync and the commit thread's wait for the GIL);
- **work under the lock**: the time the group's writes themselves take (``run_jobs``: the
  units' statements and whatever CPU work runs inside them), per write;
- **event-loop lag**: how late a 5 ms timer on the server's event loop fires.

SIGUSR1 appends one JSON line of the figures since the previous signal to ``--stats`` and
starts over. Run by ``bench/writes/ab.py``.

    PYTHONPATH=<checkout> .venv/bin/python bench/writes/serve_instrumented.py \
        --database-url sqlite:///<tmp>/bench.db --port 8080 --stats <tmp>/stats.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from server.app import create_app
from server.settings import Settings
from server.store.sql import dialect as dialects
from server.store.sql.adapter import SqlRepository

TICK = 0.005


class Figures:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.held_ns: list[int] = []
        self.writes = 0
        self.jobs_ns = 0
        self.lag_ms: list[float] = []

    def snapshot(self) -> dict[str, Any]:
        held = sorted(self.held_ns)
        lag = sorted(self.lag_ms)

        def pct(values: list[Any], p: float) -> float:
            return float(values[min(len(values) - 1, int(p * len(values)))]) if values else 0.0

        return {
            "groups": len(held),
            "writes": self.writes,
            "held_ms_total": sum(held) / 1e6,
            "held_us_per_write": (sum(held) / 1e3 / self.writes) if self.writes else 0.0,
            "work_us_per_write": (self.jobs_ns / 1e3 / self.writes) if self.writes else 0.0,
            "held_ms_p50": pct(held, 0.5) / 1e6,
            "held_ms_max": (held[-1] / 1e6) if held else 0.0,
            "lag_ms_p50": pct(lag, 0.5),
            "lag_ms_p99": pct(lag, 0.99),
            "lag_ms_max": lag[-1] if lag else 0.0,
            "lag_ms_mean": statistics.fmean(lag) if lag else 0.0,
        }


FIGURES = Figures()
_started: dict[int, int] = {}


def _instrument(cls: Any) -> None:
    try_begin, begin, commit = cls.try_begin, cls.begin, cls.commit

    def timed_try_begin(self: Any, conn: Any) -> bool:
        ok: bool = try_begin(self, conn)
        if ok:
            _started[id(conn)] = time.perf_counter_ns()
        return ok

    def timed_begin(self: Any, conn: Any) -> None:
        begin(self, conn)
        _started[id(conn)] = time.perf_counter_ns()

    def timed_commit(self: Any, conn: Any) -> None:
        try:
            commit(self, conn)
        finally:
            start = _started.pop(id(conn), None)
            if start is not None:
                FIGURES.held_ns.append(time.perf_counter_ns() - start)

    cls.try_begin, cls.begin, cls.commit = timed_try_begin, timed_begin, timed_commit


_instrument(dialects.SQLiteDialect)
_instrument(dialects.PostgresDialect)
_run_jobs = SqlRepository.run_jobs


def _counted(self: Any, conn: Any, jobs: Any) -> Any:
    FIGURES.writes += len(jobs)
    start = time.perf_counter_ns()
    try:
        return _run_jobs(self, conn, jobs)
    finally:
        FIGURES.jobs_ns += time.perf_counter_ns() - start


SqlRepository.run_jobs = _counted  # type: ignore[method-assign]


class Lagged:
    """The app, with an event-loop lag monitor started with its lifespan."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and self.task is None:
            self.task = asyncio.get_running_loop().create_task(_monitor())
        await self.app(scope, receive, send)


async def _monitor() -> None:
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(TICK)
        FIGURES.lag_ms.append(max(0.0, (loop.time() - start - TICK) * 1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()

    def dump(*_: Any) -> None:
        with args.stats.open("ab") as fh:
            fh.write(orjson.dumps(FIGURES.snapshot()) + b"\n")
        FIGURES.reset()

    signal.signal(signal.SIGUSR1, dump)
    settings = Settings(database_url=args.database_url, host="127.0.0.1", port=args.port, workers=1)
    uvicorn.run(
        Lagged(create_app(settings)),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
        server_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
