"""Concurrent If-Match updates never lose an update, in one process and across processes."""

from __future__ import annotations

import threading

import orjson
import pytest

from tests.durability.conftest import (
    Server,
    ServerFactory,
    counter_of,
    etag_version,
    patient,
    sql_rows,
    store_consistency,
)

THREADS = 8
INCREMENTS = 10
MAX_ATTEMPTS = 400  # per thread: 10 successes among at most this many tries
# no deadline on the whole: each request waits at most its client timeout, each thread makes
# at most MAX_ATTEMPTS tries, and pytest's timeout guards against a hang


def _servers(start_server: ServerFactory, url: str, store: str, topology: str) -> list[Server]:
    if topology == "one-process":
        return [start_server(url)]
    if store == "postgresql":
        return [start_server(url, workers=2)]  # uvicorn supervisor + two worker processes
    # two independent servers on the same SQLite file
    servers = [start_server(url, ready=False) for _ in range(2)]
    for server in servers:
        server.wait_ready()
    return servers


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["one-process", "two-processes"])
def test_concurrent_if_match_updates_lose_nothing(
    start_server: ServerFactory, database_url: str, store: str, topology: str
) -> None:
    servers = _servers(start_server, database_url, store, topology)
    with servers[0].client() as client:
        created = client.post("/Patient", json=patient("counter", 0))
        assert created.status_code == 201, created.text
        id = created.json()["id"]

    successes = [0] * THREADS
    conflicts = [0] * THREADS
    unexpected: list[str] = []
    barrier = threading.Barrier(THREADS, timeout=30)

    def worker(i: int) -> None:
        try:
            with servers[i % len(servers)].client(timeout=30) as c:
                barrier.wait()
                for _ in range(MAX_ATTEMPTS):
                    if successes[i] == INCREMENTS:
                        return
                    read = c.get(f"/Patient/{id}")
                    if read.status_code != 200:
                        unexpected.append(f"read {read.status_code}: {read.text[:200]}")
                        return
                    version = etag_version(read)
                    body = read.json()
                    new = patient("counter", counter_of(body) + 1, id=id)
                    put = c.put(f"/Patient/{id}", json=new,
                                headers={"If-Match": f'W/"{version}"'})
                    if put.status_code == 200:
                        assert etag_version(put) == version + 1
                        successes[i] += 1
                    elif put.status_code == 412:
                        conflicts[i] += 1
                    else:
                        unexpected.append(f"put {put.status_code}: {put.text[:200]}")
                        return
        except BaseException as exc:  # noqa: BLE001 - reported below
            unexpected.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert unexpected == []
    total = sum(successes)
    assert successes == [INCREMENTS] * THREADS, (successes, conflicts)

    with servers[-1].client() as client:
        final = client.get(f"/Patient/{id}")
        assert final.status_code == 200
        assert counter_of(final.json()) == total, "an acknowledged update was lost"
        assert etag_version(final) == 1 + total
        # every version in history holds the counter value of its own version
        for version in (1, total // 2, 1 + total):
            vread = client.get(f"/Patient/{id}/_history/{version}")
            assert vread.status_code == 200
            assert counter_of(vread.json()) == version - 1
    assert store_consistency(database_url) == {"resources": 1, "history": 1 + total}
    rows = sql_rows(database_url, "SELECT version, body FROM resource_history ORDER BY seq")
    assert [(v, counter_of(orjson.loads(bytes(b)))) for v, b in rows] == [
        (v, v - 1) for v in range(1, total + 2)
    ], "history is not one increment per version, in commit order"
