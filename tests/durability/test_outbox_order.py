"""The outbox's sequence order is the commit order, with two server processes on one store.

A consumer that reads ``seq > cursor`` while two processes write must end up with exactly the
outbox as it finally stands: an event that became visible behind the consumer's cursor (a
smaller sequence committed after a larger one) would be missing from what it saw.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.durability.conftest import (
    Server,
    ServerFactory,
    outbox_matches_history,
    patient,
    sql_rows,
)

THREADS = 6
WRITES = 40  # per thread: a create, then updates of it


def _servers(start_server: ServerFactory, url: str) -> list[Server]:
    servers = [start_server(url, ready=False) for _ in range(2)]
    for server in servers:
        server.wait_ready()
    return servers


@pytest.mark.slow
def test_a_consumer_reading_by_sequence_sees_every_event_in_commit_order(
    start_server: ServerFactory, database_url: str
) -> None:
    servers = _servers(start_server, database_url)
    errors: list[str] = []
    done = threading.Event()
    seen: list[tuple[int, str, str, int, int]] = []

    def consume() -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read once more after the writers stopped
            rows = sql_rows(
                database_url,
                "SELECT seq, rtype, id, version, committed FROM outbox WHERE seq > ?"
                " ORDER BY seq LIMIT 500",
                (cursor,),
            )
            seen.extend(rows)
            if rows:
                cursor = rows[-1][0]
            elif finished:
                return
            else:
                time.sleep(0.005)

    def write(i: int) -> None:
        try:
            with servers[i % 2].client(timeout=30) as client:
                created = client.post("/Patient", json=patient(f"order-{i}"))
                assert created.status_code == 201, created.text
                id = created.json()["id"]
                for n in range(1, WRITES):
                    put = client.put(f"/Patient/{id}", json=patient(f"order-{i}", n, id=id))
                    assert put.status_code == 200, put.text
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    consumer = threading.Thread(target=consume)
    consumer.start()
    writers = [threading.Thread(target=write, args=(i,)) for i in range(THREADS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    done.set()
    consumer.join(60)
    assert not consumer.is_alive() and all(not t.is_alive() for t in writers)
    assert errors == []
    final = sql_rows(
        database_url, "SELECT seq, rtype, id, version, committed FROM outbox ORDER BY seq"
    )
    assert len(final) == THREADS * WRITES
    assert seen == final  # nothing appeared behind the consumer's cursor
    stamps = [row[4] for row in final]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    outbox_matches_history(database_url)
