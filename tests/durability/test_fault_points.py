"""Deterministic fault injection (``CALAIM_FHIR_FAULTS``) on real server processes.

Hit numbering: every write transaction counts, and the first one of every server process is
the start-up schema migration (``SqlRepository.migrate`` runs in ``dialect.writing()``), so
the first *request* write of a process is hit 2 (``FIRST_REQUEST_WRITE``).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import httpx
import pytest

from tests.durability.conftest import (
    ServerFactory,
    counter_of,
    etag_version,
    patient,
    search_ids,
    sqlite_integrity,
    store_consistency,
)

FIRST_REQUEST_WRITE = 2  # hit 1 is the start-up migration transaction


def _killed(server: Any) -> None:
    code = server.wait_exit()
    assert code == -signal.SIGKILL, f"expected death by SIGKILL, got {code}:\n{server.log()}"


def _after_crash(url: str) -> None:
    if url.startswith("sqlite:///"):
        sqlite_integrity(url)


def _type_history(client: httpx.Client, type: str = "Patient") -> list[dict[str, Any]]:
    response = client.get(f"/{type}/_history?_count=1000")
    assert response.status_code == 200, response.text
    return list(response.json().get("entry", []))


def test_kill_in_first_migration_leaves_a_store_that_reopens(
    start_server: ServerFactory, database_url: str
) -> None:
    """Hit 1 of ``before-commit`` is the schema migration of a brand-new database: the
    process dies before the schema commits, and the next start migrates from scratch."""
    dying = start_server(database_url, faults="before-commit=kill@1", ready=False)
    _killed(dying)
    _after_crash(database_url)
    server = start_server(database_url)
    with server.client() as client:
        assert client.post("/Patient", json=patient("after-migration-crash")).status_code == 201
    assert store_consistency(database_url) == {"resources": 1, "history": 1}


def test_kill_before_commit_loses_the_unacknowledged_create(
    start_server: ServerFactory, database_url: str
) -> None:
    dying = start_server(database_url, faults=f"before-commit=kill@{FIRST_REQUEST_WRITE}")
    with dying.client() as client, pytest.raises(httpx.TransportError):
        client.post("/Patient", json=patient("before-commit"))
    _killed(dying)
    _after_crash(database_url)

    server = start_server(database_url)
    with server.client() as client:
        assert _type_history(client) == []
        assert search_ids(client, "identifier=urn:test|before-commit") == []
        assert store_consistency(database_url) == {"resources": 0, "history": 0}
        created = client.post("/Patient", json=patient("next"))
        assert created.status_code == 201, created.text
        read = client.get(f"/Patient/{created.json()['id']}")
        assert read.status_code == 200 and read.json() == created.json()
    assert store_consistency(database_url) == {"resources": 1, "history": 1}


def test_kill_after_commit_keeps_one_consistent_version(
    start_server: ServerFactory, database_url: str
) -> None:
    dying = start_server(database_url, faults=f"after-commit=kill@{FIRST_REQUEST_WRITE}")
    with dying.client() as client, pytest.raises(httpx.TransportError):
        client.post("/Patient", json=patient("after-commit", 7))
    _killed(dying)
    _after_crash(database_url)

    server = start_server(database_url)
    with server.client() as client:
        # unacknowledged, but COMMIT had returned: it is there, once, at version 1
        ids = search_ids(client, "identifier=urn:test|after-commit")
        assert len(ids) == 1, ids
        read = client.get(f"/Patient/{ids[0]}")
        assert read.status_code == 200, read.text
        assert read.json()["meta"]["versionId"] == "1" and counter_of(read.json()) == 7
        history = _type_history(client)
        assert [e["resource"]["id"] for e in history] == ids
        vread = client.get(f"/Patient/{ids[0]}/_history/1")
        assert vread.status_code == 200 and vread.json() == read.json()
        assert client.post("/Patient", json=patient("next")).status_code == 201
    assert store_consistency(database_url) == {"resources": 2, "history": 2}


def test_acknowledged_writes_survive_a_kill_before_commit(
    start_server: ServerFactory, database_url: str
) -> None:
    """Creates and If-Match updates, all acknowledged; the next write dies before COMMIT."""
    creates, updates_each = 3, 2
    acknowledged = creates + creates * updates_each
    kill_at = FIRST_REQUEST_WRITE + acknowledged  # the write after the acknowledged ones
    dying = start_server(database_url, faults=f"before-commit=kill@{kill_at}")
    acks: dict[tuple[str, int], dict[str, Any]] = {}
    latest: dict[str, int] = {}
    with dying.client() as client:
        for n in range(creates):
            response = client.post("/Patient", json=patient(f"seq-{n}", 0))
            assert response.status_code == 201, response.text
            body = response.json()
            acks[(body["id"], 1)] = body
            latest[body["id"]] = 1
        for step in range(1, updates_each + 1):
            for id, version in list(latest.items()):
                new = patient(f"seq-{id}", step, id=id)
                response = client.put(f"/Patient/{id}", json=new,
                                      headers={"If-Match": f'W/"{version}"'})
                assert response.status_code == 200, response.text
                assert etag_version(response) == version + 1
                acks[(id, version + 1)] = response.json()
                latest[id] = version + 1
        assert len(acks) == acknowledged
        victim = next(iter(latest))
        with pytest.raises(httpx.TransportError):
            client.put(f"/Patient/{victim}", json=patient("lost", 99, id=victim),
                       headers={"If-Match": f'W/"{latest[victim]}"'})
    _killed(dying)
    _after_crash(database_url)

    server = start_server(database_url)
    with server.client() as client:
        for (id, version), body in acks.items():
            vread = client.get(f"/Patient/{id}/_history/{version}")
            assert vread.status_code == 200, vread.text
            assert vread.json() == body
        for id, version in latest.items():
            read = client.get(f"/Patient/{id}")
            assert read.status_code == 200
            assert read.json() == acks[(id, version)], "the write that died must not be there"
            assert etag_version(read) == version
        assert search_ids(client, "identifier=urn:test|lost") == []
    assert store_consistency(database_url) == {"resources": creates, "history": acknowledged}


# -- conditional interactions racing between the criteria search and the write ----------------


def _fire(servers: list[Any], n: int, send: Any) -> list[httpx.Response | BaseException]:
    """``n`` threads, released together, thread i talking to ``servers[i % len(servers)]``."""
    barrier = threading.Barrier(n, timeout=30)
    results: list[httpx.Response | BaseException] = [RuntimeError("did not run")] * n

    def run(i: int) -> None:
        try:
            with servers[i % len(servers)].client(timeout=60) as client:
                barrier.wait()
                results[i] = send(client)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a request thread hung"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
def test_concurrent_conditional_writes_create_exactly_one(
    start_server: ServerFactory, database_url: str, processes: int
) -> None:
    """8 identical conditional creates, then 8 identical conditional updates on no match, with
    every request sleeping 0.3 s between its criteria search and its write."""
    n = 8
    servers = [start_server(database_url, faults="after-match=sleep:0.3", ready=False)
               for _ in range(processes)]
    for server in servers:
        server.wait_ready()

    created = _fire(servers, n, lambda c: c.post(
        "/Patient", json=patient("cc"), headers={"If-None-Exist": "identifier=urn:test|cc"}))
    statuses = sorted(r.status_code for r in created)  # type: ignore[union-attr]
    assert statuses == [200] * (n - 1) + [201], [(r.status_code, r.text[:200]) for r in created]  # type: ignore[union-attr]
    assert len({r.json()["id"] for r in created}) == 1  # type: ignore[union-attr]

    updated = _fire(servers, n, lambda c: c.put(
        "/Patient?identifier=urn:test|cu", json=patient("cu")))
    statuses = sorted(r.status_code for r in updated)  # type: ignore[union-attr]
    assert statuses == [200] * (n - 1) + [201], [(r.status_code, r.text[:200]) for r in updated]  # type: ignore[union-attr]
    ids = {r.json()["id"] for r in updated}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert sorted(etag_version(r) for r in updated) == list(range(1, n + 1))  # type: ignore[arg-type]

    # the search parameters of a create URL are a conditional create with the same lock
    by_url = _fire(servers, n, lambda c: c.post("/Patient?identifier=urn:test|cq",
                                                json=patient("cq")))
    statuses = sorted(r.status_code for r in by_url)  # type: ignore[union-attr]
    assert statuses == [200] * (n - 1) + [201], [(r.status_code, r.text[:200]) for r in by_url]  # type: ignore[union-attr]

    with servers[0].client() as client:
        assert len(search_ids(client, "identifier=urn:test|cc")) == 1
        assert search_ids(client, "identifier=urn:test|cu") == list(ids)
        assert len(search_ids(client, "identifier=urn:test|cq")) == 1
    assert store_consistency(database_url) == {"resources": 3, "history": 2 + n}
