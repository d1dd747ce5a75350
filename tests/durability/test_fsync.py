"""Every acknowledged write was synced to disk before its answer: a build that skipped the
sync (``synchronous=OFF`` or ``NORMAL`` in WAL mode, ``synchronous_commit=off``) fails here,
which the kill tests cannot show (a killed process loses nothing the kernel holds).

SQLite: the server process is traced (``strace``) while it acknowledges N sequential writes;
each commit must have made its own ``fsync``/``fdatasync``. PostgreSQL: the database's own
count of WAL syncs (``pg_stat_wal.wal_sync``) must grow by at least N (the background WAL
writer alone syncs a few times a second, far fewer than one per write)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.durability.conftest import ServerFactory, patient, sql_rows

WRITES = 30


def _tracers(pid: int) -> set[int]:
    """The tracer of every thread of ``pid`` (0: not traced)."""
    out = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        out.add(int(re.search(r"TracerPid:\s+(\d+)", text).group(1)))  # type: ignore[union-attr]
    return out


@pytest.mark.slow
def test_every_acknowledged_sqlite_write_was_synced(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    strace = shutil.which("strace")
    assert strace is not None, "strace is needed (Debian package strace)"
    server = start_server(f"sqlite:///{tmp_path / 'fhir.db'}")
    trace, said = tmp_path / "syncs.txt", tmp_path / "strace.log"
    with said.open("wb") as log:
        tracer = subprocess.Popen(
            [strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace),
             "-p", str(server.pid)],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _tracers(server.pid) != {tracer.pid}:  # every thread is traced
            assert tracer.poll() is None, said.read_text()
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.05)
        with server.client() as client:
            for n in range(WRITES):
                response = client.post("/Patient", json=patient("synced", n))
                assert response.status_code == 201, response.text
    finally:
        tracer.send_signal(signal.SIGINT)  # detach; the trace is complete once it exits
        tracer.wait(30)
    syncs = [line for line in trace.read_text().splitlines() if "sync(" in line]
    assert len(syncs) >= WRITES, f"{len(syncs)} syncs for {WRITES} acknowledged writes"


@pytest.mark.slow
@pytest.mark.postgres
def test_every_acknowledged_postgresql_write_was_synced(
    start_server: ServerFactory, fresh_pg_database: str
) -> None:
    def wal_syncs() -> int:
        return int(sql_rows(fresh_pg_database, "SELECT wal_sync FROM pg_stat_wal")[0][0])

    server = start_server(fresh_pg_database)
    with server.client() as client:  # the server's connections are open and idle
        assert client.post("/Patient", json=patient("warm", 0)).status_code == 201
    before = wal_syncs()
    with server.client() as client:
        for n in range(WRITES):
            response = client.post("/Patient", json=patient("synced", n))
            assert response.status_code == 201, response.text
    server.kill()  # its database sessions end and report their statistics
    deadline = time.monotonic() + 30
    while (syncs := wal_syncs() - before) < WRITES and time.monotonic() < deadline:
        time.sleep(0.2)
    assert syncs >= WRITES, f"{syncs} WAL syncs for {WRITES} acknowledged writes"
