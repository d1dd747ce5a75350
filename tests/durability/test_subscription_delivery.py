"""Subscription delivery across real server processes: ``kill -9`` mid-delivery loses nothing
(a duplicate is a re-send of the same number), and two processes on one database never both
deliver an event. A real receiver on 127.0.0.1 records every notification."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.durability.conftest import CLI, ROOT, ServerFactory
from tests.subscriptions.receiver import Receiver, receiver
from tests.subscriptions.test_subscriptions import kind, params, subscription, task

SETTINGS = {
    "subscription_allow_http_loopback": "true",
    "subscription_poll_seconds": "0.1",
    "subscription_backoff_max_seconds": "0.5",
    "subscription_timeout_seconds": "1",
}
PROCESS = {**SETTINGS, "subscription_delivery": "process"}


def _events(rec: Receiver) -> list[tuple[int, str]]:
    """(number, focus) of every event notification received, in arrival order."""
    out = []
    for bundle in rec.bundles():
        if kind(bundle) != "event-notification":
            continue
        for ev in params(bundle).get("notification-event", []):
            parts = {p["name"]: p for p in ev["part"]}
            focus = parts["focus"]["valueReference"]["reference"] if "focus" in parts else ""
            out.append((int(parts["event-number"]["valueString"]), focus))
    return out


def _subscribe(client: httpx.Client, rec: Receiver) -> str:
    response = client.post("/Subscription", json=subscription(rec.url))
    assert response.status_code == 201, response.text
    id = str(response.json()["id"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.get(f"/Subscription/{id}").json()["status"] == "active":
            return id
        time.sleep(0.05)
    raise AssertionError("no handshake")


def _write_tasks(client: httpx.Client, count: int) -> int:
    for _ in range(count):
        assert client.post("/Task", json=task()).status_code == 201
    return count


def _complete(rec: Receiver, count: int, seconds: float = 60) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = _events(rec)
        if {n for n, _ in got} >= set(range(1, count + 1)):
            return got
        time.sleep(0.05)
    got = _events(rec)
    missing = sorted(set(range(1, count + 1)) - {n for n, _ in got})
    raise AssertionError(f"missing event numbers {missing[:20]} of {count}")


def _consistent(got: list[tuple[int, str]], count: int) -> None:
    """Every number 1..count, each number always naming the same version; first arrivals in
    order (a re-send repeats a number already sent, never skips ahead)."""
    by_number: dict[int, set[str]] = {}
    for number, focus in got:
        by_number.setdefault(number, set()).add(focus)
    assert sorted(by_number) == list(range(1, count + 1))
    assert all(len(f) == 1 for f in by_number.values()), "a number named two versions"
    firsts: list[int] = []
    for number, _ in got:
        if number not in firsts:
            firsts.append(number)
    assert firsts == sorted(firsts)


@pytest.mark.slow
def test_kill_9_mid_delivery_loses_nothing(start_server: ServerFactory, database_url: str
                                           ) -> None:
    with receiver() as rec:
        server = start_server(database_url, settings=SETTINGS)
        with server.client() as client:
            _subscribe(client, rec)
            written = _write_tasks(client, 40)
        # killed while notifications are still going out (or queued)
        server.kill()
        before = len(_events(rec))
        restarted = start_server(database_url, settings=SETTINGS)
        with restarted.client() as client:
            written += _write_tasks(client, 10)
        got = _complete(rec, written)
        _consistent(got, written)
        assert before <= written


@pytest.mark.slow
def test_two_processes_never_both_deliver(start_server: ServerFactory, database_url: str) -> None:
    with receiver() as rec:
        a = start_server(database_url, settings=SETTINGS)
        b = start_server(database_url, settings=SETTINGS)
        with a.client() as client:
            _subscribe(client, rec)
        count = 60

        def write(server: Any, n: int) -> None:
            with server.client() as client:
                for _ in range(n):
                    assert client.post("/Task", json=task()).status_code == 201

        threads = [threading.Thread(target=write, args=(s, count // 2)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        got = _complete(rec, count)
        _consistent(got, count)
        assert len(got) == count, "an event was delivered twice"


# -- delivery in a process of its own (subscription_delivery=process) ------------------------


def _children(pid: int, word: str) -> list[int]:
    """The live processes whose parent is ``pid`` and whose command line holds ``word``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid and word in cmdline:
            found.append(int(entry.name))
    return found


def _one_deliverer(server: Any, other_than: int | None = None, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [p for p in _children(server.pid, " deliver ") if p != other_than]
        if len(pids) == 1:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no single delivery process:\n{server.log()}")


def _priority(pid: int, expected: int, seconds: float = 30) -> int:
    """The priority of ``pid`` once it is ``expected``, or as it stands after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = os.getpriority(os.PRIO_PROCESS, pid)
        if found == expected:
            return found
        time.sleep(0.05)
    return os.getpriority(os.PRIO_PROCESS, pid)


def _gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_delivery_process_delivers_and_its_kill_9_loses_nothing(
    start_server: ServerFactory, database_url: str
) -> None:
    """``serve`` with subscription_delivery=process: the handshake and every notification come
    from its ``calaim-fhir deliver`` child at lower priority; a ``kill -9`` of that child
    mid-delivery is followed by a new one that sends everything, in order, gap-free; a SIGTERM
    of the server stops the child too."""
    with receiver() as rec:
        server = start_server(database_url, settings=PROCESS)
        child = _one_deliverer(server)
        niceness = os.getpriority(os.PRIO_PROCESS, server.pid)
        # the child lowers its own priority first thing after start-up (its imports take a
        # while on a loaded machine): wait for it, bounded
        assert _priority(child, min(19, niceness + 10)) == min(19, niceness + 10)
        with server.client() as client:
            _subscribe(client, rec)
            written = _write_tasks(client, 40)
            deadline = time.monotonic() + 30
            while not _events(rec) and time.monotonic() < deadline:
                time.sleep(0.01)
            before = {n for n, _ in _events(rec)}
            os.kill(child, signal.SIGKILL)  # mid-delivery: some sent, the rest not yet
            assert _gone(child)
            written += _write_tasks(client, 10)
            successor = _one_deliverer(server, other_than=child)
            got = _complete(rec, written)
            _consistent(got, written)
            assert before, "the delivery process sent nothing before it was killed"
            assert server.alive()
        server.proc.terminate()
        server.wait_exit(30)
        assert _gone(successor), "the delivery process outlived the server"


@pytest.mark.slow
def test_delivery_process_stops_when_the_server_is_killed(
    start_server: ServerFactory, database_url: str
) -> None:
    """A ``kill -9`` of the server alone (not its process group) leaves no deliverer behind."""
    server = start_server(database_url, settings=PROCESS)
    child = _one_deliverer(server)
    os.kill(server.pid, signal.SIGKILL)
    server.wait_exit()
    assert _gone(child, 10), "the delivery process outlived a killed server"


@pytest.mark.slow
def test_deliver_command_beside_servers_that_do_not_deliver(
    start_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    """subscription_delivery=off: the server never delivers; a ``calaim-fhir deliver`` of
    its own on the same database handshakes and sends every event, and stops on SIGTERM."""
    settings = {**SETTINGS, "subscription_delivery": "off"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALAIM_FHIR_")}
    env.update({f"CALAIM_FHIR_{k.upper()}": v for k, v in SETTINGS.items()})
    with receiver() as rec, open(tmp_path / "deliver.log", "wb") as log:
        server = start_server(database_url, settings=settings)
        with server.client() as client:
            id = client.post("/Subscription", json=subscription(rec.url)).json()["id"]
            written = _write_tasks(client, 5)
            time.sleep(1.5)  # several poll intervals: nobody delivers
            assert client.get(f"/Subscription/{id}").json()["status"] == "requested"
            assert _events(rec) == []
            deliverer = subprocess.Popen(
                [str(CLI), "deliver", "--database-url", database_url],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                written += _write_tasks(client, 5)
                _consistent(_complete(rec, written), written)
                assert client.get(f"/Subscription/{id}").json()["status"] == "active"
            finally:
                deliverer.terminate()
                code = deliverer.wait(30)
        assert code == 0, (tmp_path / "deliver.log").read_text()
