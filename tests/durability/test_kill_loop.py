"""A bounded loop of real ``kill -9``s of a busy server: every acknowledged write survives."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.durability.conftest import (
    Server,
    ServerFactory,
    counter_of,
    digest,
    etag_version,
    patient,
    sql_rows,
    sqlite_integrity,
    store_consistency,
)

ITERATIONS = 5
WRITERS = 2
pytestmark = pytest.mark.slow


class Ledger:
    """Every acknowledged (2xx) write: (id, versionId) -> digest of the returned resource."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acks: dict[tuple[str, int], str] = {}
        self.latest: dict[str, int] = {}

    def record(self, response: httpx.Response) -> dict[str, Any]:
        body: dict[str, Any] = response.json()
        version = etag_version(response)
        assert body["meta"]["versionId"] == str(version)
        with self.lock:
            key = (body["id"], version)
            assert key not in self.acks, f"version {key} acknowledged twice"
            self.acks[key] = digest(body)
            self.latest[body["id"]] = max(self.latest.get(body["id"], 0), version)
        return body


def _writer(server: Server, ledger: Ledger, rng: random.Random, stop: threading.Event,
            owned: dict[str, int], problems: list[str]) -> None:
    """Creates and updates until the server dies (a transport error) or ``stop`` is set."""
    try:
        with server.client(timeout=10) as client:
            while not stop.is_set():
                if len(owned) < 3 or rng.random() < 0.3:
                    response = client.post("/Patient", json=patient(f"k{rng.random()}", 0))
                    wanted = 201
                else:
                    id = rng.choice(sorted(owned))
                    response = client.put(f"/Patient/{id}",
                                          json=patient(f"k-{id}", owned[id] + 1, id=id))
                    wanted = 200
                if response.status_code != wanted:
                    problems.append(
                        f"{response.status_code}: {response.text[:300]}\n{server.log()}"
                    )
                    return
                body = ledger.record(response)
                owned[body["id"]] = counter_of(body)
    except httpx.TransportError:
        return  # the server was killed under us: that request is unacknowledged
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        problems.append(repr(exc))


def _verify(server: Server, url: str, ledger: Ledger, rng: random.Random) -> None:
    stored = {
        (id, int(version)): digest(orjson.loads(bytes(body)))
        for id, version, body in sql_rows(
            url, "SELECT id, version, body FROM resource_history WHERE rtype = 'Patient'"
        )
    }
    missing = [key for key in ledger.acks if key not in stored]
    assert missing == [], f"{len(missing)} acknowledged versions lost, e.g. {missing[:5]}"
    changed = [key for key, d in ledger.acks.items() if stored[key] != d]
    assert changed == [], f"acknowledged versions with other content: {changed[:5]}"
    current = dict(sql_rows(url, "SELECT id, version FROM resource WHERE rtype = 'Patient'"))
    behind = [(id, v, current.get(id)) for id, v in ledger.latest.items()
              if current.get(id, 0) < v]
    assert behind == [], f"resources behind their last acknowledged version: {behind[:5]}"
    # the same through the API, for the latest acknowledged versions and a sample of older ones
    keys = sorted(ledger.acks)
    sample = [(id, v) for id, v in ledger.latest.items()]
    sample += rng.sample(keys, min(20, len(keys)))
    with server.client() as client:
        for id, version in sample:
            vread = client.get(f"/Patient/{id}/_history/{version}")
            assert vread.status_code == 200, vread.text
            assert digest(vread.json()) == ledger.acks[(id, version)]
            read = client.get(f"/Patient/{id}")
            assert read.status_code == 200 and etag_version(read) >= ledger.latest[id]


def test_kill_minus_nine_loop(start_server: ServerFactory, database_url: str, store: str) -> None:
    rng = random.Random(f"calaim-fhir-kill-loop-{store}")
    ledger = Ledger()
    owned: list[dict[str, int]] = [{} for _ in range(WRITERS)]
    problems: list[str] = []
    server = start_server(database_url)
    acked_per_round: list[int] = []
    for _ in range(ITERATIONS):
        before = len(ledger.acks)
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_writer, daemon=True,
                args=(server, ledger, random.Random(rng.random()), stop, owned[w], problems),
            )
            for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill()  # SIGKILL to the server's process group, mid-write
        assert not server.alive()
        stop.set()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads), "a writer hung after the kill"
        assert problems == []
        acked_per_round.append(len(ledger.acks) - before)

        # the dead server's store, opened directly
        if store == "sqlite":
            sqlite_integrity(database_url)
        store_consistency(database_url)
        server = start_server(database_url)  # reopens cleanly (recovery, migrations no-op)
        _verify(server, database_url, ledger, rng)
    print(f"kill loop [{store}]: acknowledged writes per round {acked_per_round}")
    assert sum(acked_per_round) >= ITERATIONS, f"too few acknowledged writes: {acked_per_round}"
