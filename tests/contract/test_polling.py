"""Polling for changed Tasks (R4 search + Gravity SDOHCC "checking task status").

A coordination platform without subscriptions polls
``Task?_lastUpdated=gt<last seen>&_sort=_lastUpdated`` and follows ``next`` links. This only
works if a version the server has acknowledged can never slip in *behind* the stamp a poller
has already moved past: every write must be found by the poll that starts after it was
acknowledged (as that version, or as a later version of the same Task, since a search returns
current versions only).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.support import FHIR_JSON, TestClient

WRITERS = 3
WRITE_SECONDS = 3.0
DEADLINE_SECONDS = 30.0
PAGE = 10
SEED = 25  # Tasks written before polling starts, so the first poll pages through them
START = "2000-01-01T00:00:00Z"


def _task(writer: int, n: int, status: str, id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "description": f"writer {writer} change {n}",
        "businessStatus": {"text": f"step {n}"},
    }
    if id is not None:
        body["id"] = id
    return body


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Acks:
    """What the server acknowledged, in acknowledgement order: ``(id, version)``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    items: list[tuple[str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, response: Any) -> str:
        body = response.json()
        with self.lock:
            self.items.append((body["id"], int(body["meta"]["versionId"])))
        return str(body["id"])

    def snapshot(self) -> list[tuple[str, int]]:
        with self.lock:
            return list(self.items)


def _writer(client: TestClient, index: int, acks: Acks, stop: threading.Event) -> None:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    mine: list[str] = []
    n = 0
    try:
        while not stop.is_set():
            n += 1
            if not mine or n % 3 == 0:
                response = client.post(
                    "/fhir/Task", json=_task(index, n, "requested"), headers=headers
                )
                if response.status_code != 201:
                    acks.errors.append(f"create {response.status_code}: {response.text[:300]}")
                    return
                mine.append(acks.add(response))
            else:
                id = mine[n % len(mine)]
                status = ("accepted", "in-progress", "completed")[n % 3]
                response = client.put(
                    f"/fhir/Task/{id}", json=_task(index, n, status, id), headers=headers
                )
                if response.status_code != 200:
                    acks.errors.append(f"update {response.status_code}: {response.text[:300]}")
                    return
                acks.add(response)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        acks.errors.append(f"writer {index}: {exc!r}")


@dataclass
class Poller:
    client: TestClient
    last: str = START
    seen: dict[str, int] = field(default_factory=dict)  # id -> highest version seen
    pairs: set[tuple[str, int]] = field(default_factory=set)
    cycles: int = 0
    next_links: int = 0

    def cycle(self) -> int:
        """One poll: every page after ``last``; returns how many entries it read."""
        self.cycles += 1
        response = self.client.get(
            "/fhir/Task",
            params={"_lastUpdated": f"gt{self.last}", "_sort": "_lastUpdated", "_count": str(PAGE)},
            headers={"Accept": FHIR_JSON},
        )
        read, newest, previous_stamp = 0, self.last, None
        pages = 0
        while True:
            assert response.status_code == 200, f"{response.status_code}: {response.text[:800]}"
            bundle = response.json()
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                stamp = resource["meta"]["lastUpdated"]
                assert _instant(stamp) > _instant(self.last), "an entry not after _lastUpdated"
                if previous_stamp is not None:
                    assert _instant(stamp) >= _instant(previous_stamp), "not sorted by _lastUpdated"
                previous_stamp = stamp
                version = int(resource["meta"]["versionId"])
                self.pairs.add((resource["id"], version))
                self.seen[resource["id"]] = max(version, self.seen.get(resource["id"], 0))
                if _instant(stamp) > _instant(newest):
                    newest = stamp
                read += 1
            link = next(
                (lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None
            )
            if link is None:
                break
            pages += 1
            self.next_links += 1
            assert pages < 1000, "paging does not end"
            response = self.client.get(link, headers={"Accept": FHIR_JSON})
        self.last = newest
        return read

    def missed(self, acknowledged: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Acknowledged versions neither seen nor superseded by a seen version."""
        return [(id, v) for id, v in acknowledged if self.seen.get(id, 0) < v]


def test_polling_by_last_updated_misses_no_acknowledged_write(client: TestClient) -> None:
    acks = Acks()
    stop = threading.Event()
    for n in range(SEED):
        seeded = client.post(
            "/fhir/Task", json=_task(-1, n, "requested"), headers={"Content-Type": FHIR_JSON}
        )
        assert seeded.status_code == 201, seeded.text
        acks.add(seeded)
    threads = [
        threading.Thread(target=_writer, args=(client, i, acks, stop), daemon=True)
        for i in range(WRITERS)
    ]
    poller = Poller(client)
    violations: list[str] = []
    deadline = time.monotonic() + DEADLINE_SECONDS
    for thread in threads:
        thread.start()
    writes_end = time.monotonic() + WRITE_SECONDS
    try:
        while time.monotonic() < writes_end:
            before = acks.snapshot()  # acknowledged before this poll started
            poller.cycle()
            missed = poller.missed(before)
            if missed:
                violations.append(f"cycle {poller.cycles} missed {missed[:5]} (last={poller.last})")
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(DEADLINE_SECONDS)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert acks.errors == []

    final = acks.snapshot()
    while poller.cycle() and time.monotonic() < deadline:
        pass
    assert violations == [], "a poll missed writes acknowledged before it started"
    assert poller.missed(final) == []
    assert len(final) >= SEED + WRITERS, f"every writer acknowledged a write: {len(final)}"
    assert poller.next_links >= SEED // PAGE, "the polls followed next links"

    # after the writers stop, the poller holds exactly the current version of every Task
    latest: dict[str, int] = {}
    for id, version in final:
        latest[id] = max(version, latest.get(id, 0))
    assert poller.seen == latest
    assert set(latest.items()) <= poller.pairs
