"""Subscription delivery across real server processes: ``kill -9`` mid-delivery loses nothing
(a duplicate is a re-send of the same number), and two processes on one database never both
deliver an event. A real receiver on 127.0.0.1 records every notification."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.durability.conftest import ServerFactory
from tests.subscriptions.receiver import Receiver, receiver
from tests.subscriptions.test_subscriptions import kind, params, subscription, task

SETTINGS = {
    "subscription_allow_http_loopback": "true",
    "subscription_poll_seconds": "0.1",
    "subscription_backoff_max_seconds": "0.5",
    "subscription_timeout_seconds": "1",
}


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
            written = 0
            for _ in range(40):
                assert client.post("/Task", json=task()).status_code == 201
                written += 1
        # killed while notifications are still going out (or queued)
        server.kill()
        before = len(_events(rec))
        restarted = start_server(database_url, settings=SETTINGS)
        with restarted.client() as client:
            for _ in range(10):
                assert client.post("/Task", json=task()).status_code == 201
                written += 1
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
