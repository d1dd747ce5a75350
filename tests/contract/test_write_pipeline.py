"""The write pipeline, over HTTP on both stores: program rules on every kind of write, derived
writes, operation writes validated, and exactly one outbox event per committed version.

The rules below are test rules handed to the app through ``create_app(rules=...)``; each one
exercises one capability of the rule contract (``server/writes/rules.py``). They act on
``Basic`` resources according to ``Basic.code.text``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from server.auth.principal import Principal
from server.errors import Conflict, Forbidden, Unprocessable
from server.operations.call import Call
from server.operations.registry import Operation
from server.ports import HistoryQuery, Version
from server.store.base import Event
from server.writes.rules import ALLOW, Change, Rule, Verdict, amend, derive, refuse
from server.writes.write import Write
from tests.support import (
    TestClient,
    clear_store,
    defined_operation,
    expressions,
    extra_operations,
    fhir_client,
    outcome,
)


def basic(text: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Basic", "code": {"text": text}, **extra}


def _text(resource: dict[str, Any] | None) -> str | None:
    return None if resource is None else resource.get("code", {}).get("text")


RECORDED: list[dict[str, Any]] = []
ACTING_FOR = Principal("rule-acts-for", allow_all=True, organization="Organization/platform")


class Recorder(Rule):
    """Records what it sees of every Basic write."""

    name = "test-recorder"
    types = frozenset({"Basic"})

    def check(self, change: Change) -> Verdict:
        RECORDED.append(
            {
                "interaction": change.interaction,
                "id": change.id,
                "stored": None if change.stored is None else change.stored.version,
                "previous": _text(change.previous),
                "next": _text(change.next),
                "depth": change.depth,
                "client": change.principal.id,
            }
        )
        return ALLOW


class Policy(Rule):
    """Refuses, checks through its reader and derives writes, by ``code.text``."""

    name = "test-policy"
    types = frozenset({"Basic"})

    def prepare(
        self, write: Write, resource: dict[str, Any], stored: Version | None
    ) -> dict[str, Any] | None:
        if _text(resource) != "prepare-stamp":  # stamped outside the unit, from ``stored``
            return None
        return {**resource, "created": "2011-01-01" if stored is None else "2012-01-01"}

    def check(self, change: Change) -> Verdict:
        if _text(change.next) == "prepare-stamp" and not change.prepared:
            return amend({**(change.next or {}), "created": "2022-02-02"})  # decided again
        text = _text(change.next)
        if change.next is None and _text(change.previous) == "keep":
            return refuse(Conflict("A kept Basic cannot be deleted", expression="Basic"))
        if text == "refuse":
            return refuse(Unprocessable("Refused by policy", expression="Basic.code.text"))
        if text == "forbid":
            return refuse(Forbidden("Not yours to write", expression="Basic"))
        if text in ("stamp", "stamp-invalid"):  # a server-owned element, set by the rule
            stamp = "2020-02-02" if text == "stamp" else "the second of February"
            return amend({**(change.next or {}), "created": stamp})
        if text == "needs-subject":
            subject = (change.next or {}).get("subject", {}).get("reference", "")
            type, _, id = subject.partition("/")
            found = change.reader.read(type, id) if id else None
            if found is None or found.deleted:
                return refuse(Unprocessable(f"{subject} is not stored", expression="Basic.subject"))
            return ALLOW
        made = {
            "derive": basic("derived", subject={"reference": f"Basic/{change.id}"}),
            "derive-invalid": {"resourceType": "Basic", "subject": {"reference": "Basic/x"}},
            "derive-refused": basic("refuse"),
            "loop": basic("loop"),
        }.get(text or "")
        if made is not None and change.interaction == "create":
            return derive(Write("create", "Basic", resource=made))
        if text == "derive-as" and change.interaction == "create":  # for another principal
            made = basic("derived", subject={"reference": f"Basic/{change.id}"})
            return derive(Write("create", "Basic", resource=made, principal=ACTING_FOR))
        return ALLOW


@pytest.fixture(scope="module")
def _ruled(database_url: str) -> Iterator[TestClient]:
    with fhir_client(database_url, rules=[Recorder(), Policy()]) as client:
        yield client


@pytest.fixture
def ruled(_ruled: TestClient, database_url: str) -> TestClient:
    clear_store(database_url)
    RECORDED.clear()
    return _ruled


def _events(client: TestClient) -> list[Event]:
    return client.app.state.store.outbox.read(0, 100_000)  # type: ignore[attr-defined,no-any-return]


def _history(client: TestClient) -> set[tuple[str, str, int]]:
    with client.app.state.store.reader() as reader:  # type: ignore[attr-defined]
        page = reader.history(HistoryQuery(count=100_000))
    return {(v.type, v.id, v.version) for v in page.items}


def _one_event_per_version(client: TestClient) -> list[Event]:
    events = _events(client)
    keys = [(e.type, e.id, e.version) for e in events]
    assert len(keys) == len(set(keys)), "an outbox event is duplicated"
    assert set(keys) == _history(client), "outbox events and history versions differ"
    return events


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


# -- rules see previous and next on every kind of write ---------------------------------------


def test_a_rule_sees_previous_and_next_on_every_kind_of_write(ruled: TestClient) -> None:
    created = ruled.post(
        "/fhir/Basic", json=basic("one", identifier=[{"system": "s", "value": "1"}])
    )
    assert created.status_code == 201, created.text
    id = created.json()["id"]
    body = created.json()
    body["code"]["text"] = "two"
    assert ruled.put(f"/fhir/Basic/{id}", json=body).status_code == 200
    patch = [{"op": "replace", "path": "/code/text", "value": "three"}]
    patched = ruled.patch(
        f"/fhir/Basic/{id}",
        content=orjson.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    body["code"]["text"] = "four"
    del body["id"]
    assert ruled.put("/fhir/Basic?identifier=s|1", json=body).status_code == 200
    entry_body = {**body, "id": id, "code": {"text": "five"}}
    bundle = _transaction(
        {"resource": entry_body, "request": {"method": "PUT", "url": f"Basic/{id}"}}
    )
    assert ruled.post("/fhir", json=bundle).status_code == 200
    assert ruled.delete(f"/fhir/Basic/{id}").status_code == 200
    assert (
        ruled.post(
            "/fhir/Basic", json=basic("six", identifier=[{"system": "s", "value": "2"}])
        ).status_code
        == 201
    )
    assert ruled.delete("/fhir/Basic?identifier=s|2").status_code == 200
    seen = [(r["interaction"], r["stored"], r["previous"], r["next"]) for r in RECORDED]
    assert seen == [
        ("create", None, None, "one"),
        ("update", 1, "one", "two"),
        ("patch", 2, "two", "three"),
        ("update", 3, "three", "four"),
        ("update", 4, "four", "five"),
        ("delete", 5, "five", None),
        ("create", None, None, "six"),
        ("delete", 1, "six", None),
    ]
    assert {r["client"] for r in RECORDED} == {"local"}
    assert {r["depth"] for r in RECORDED} == {0}


def test_rules_do_not_run_for_writes_that_store_nothing(ruled: TestClient) -> None:
    created = ruled.post(
        "/fhir/Basic", json=basic("one", identifier=[{"system": "s", "value": "1"}])
    )
    again = ruled.post(
        "/fhir/Basic", json=basic("one"), headers={"If-None-Exist": "identifier=s|1"}
    )
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    assert ruled.delete("/fhir/Basic/never-stored").status_code == 200
    assert [r["interaction"] for r in RECORDED] == ["create"]


# -- refusals -----------------------------------------------------------------------------------


def _nothing_written(client: TestClient) -> None:
    assert client.get("/fhir/Basic?_summary=count").json()["total"] == 0
    assert _events(client) == []


@pytest.mark.parametrize(
    ("text", "status", "code", "expression"),
    [("refuse", 422, "processing", "Basic.code.text"), ("forbid", 403, "forbidden", "Basic")],
)
def test_a_refusal_answers_its_status_and_issues_and_writes_nothing(
    ruled: TestClient, text: str, status: int, code: str, expression: str
) -> None:
    body = outcome(ruled.post("/fhir/Basic", json=basic(text)), status)
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["expression"] == [expression]
    _nothing_written(ruled)
    # the same rule on an update, a patch and a transaction entry
    created = ruled.post("/fhir/Basic", json=basic("fine")).json()
    events = len(_events(ruled))
    outcome(
        ruled.put(f"/fhir/Basic/{created['id']}", json={**created, "code": {"text": text}}), status
    )
    patch = [{"op": "replace", "path": "/code/text", "value": text}]
    outcome(
        ruled.patch(
            f"/fhir/Basic/{created['id']}",
            content=orjson.dumps(patch),
            headers={"Content-Type": "application/json-patch+json"},
        ),
        status,
    )
    bundle = _transaction(_post(basic("fine")), _post(basic(text)))
    failed = outcome(ruled.post("/fhir", json=bundle), status)
    assert failed["issue"][0]["expression"] == [f"Bundle.entry[1].{expression}"]
    assert len(_events(ruled)) == events
    assert ruled.get(f"/fhir/Basic/{created['id']}").json()["meta"]["versionId"] == "1"
    assert ruled.get("/fhir/Basic?_summary=count").json()["total"] == 1


def _replace_created(client: TestClient, id: str, value: str) -> Any:
    patch = [{"op": "replace", "path": "/created", "value": value}]
    return client.patch(
        f"/fhir/Basic/{id}",
        content=orjson.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )


def test_a_rule_amends_what_is_stored_and_the_amendment_is_validated(ruled: TestClient) -> None:
    created = ruled.post("/fhir/Basic", json=basic("stamp", created="1999-01-01"))
    assert created.status_code == 201
    assert created.json()["created"] == "2020-02-02"
    stored = created.json()
    assert ruled.get(f"/fhir/Basic/{stored['id']}").json()["created"] == "2020-02-02"
    patched = _replace_created(ruled, stored["id"], "2001-01-01")
    assert patched.status_code == 200 and patched.json()["created"] == "2020-02-02"
    # an amendment that breaks the resource is refused like any invalid write: nothing stored
    events = len(_events(ruled))
    body = outcome(ruled.post("/fhir/Basic", json=basic("stamp-invalid")), (400, 422))
    assert any("created" in e for e in expressions(body)), body
    bundle = _transaction(_post(basic("fine")), _post(basic("stamp-invalid")))
    outcome(ruled.post("/fhir", json=bundle), (400, 422))
    assert len(_events(ruled)) == events
    assert ruled.get("/fhir/Basic?_summary=count").json()["total"] == 1


def test_a_rule_amends_in_prepare_and_decides_again_only_when_the_version_changed(
    ruled: TestClient,
) -> None:
    created = ruled.post("/fhir/Basic", json=basic("prepare-stamp"))
    assert created.status_code == 201 and created.json()["created"] == "2011-01-01"
    stored = created.json()
    updated = ruled.put(f"/fhir/Basic/{stored['id']}", json={**stored, "created": "1999-09-09"})
    assert updated.status_code == 200 and updated.json()["created"] == "2012-01-01"
    patched = _replace_created(ruled, stored["id"], "1999-09-09")
    assert patched.status_code == 200 and patched.json()["created"] == "2012-01-01"
    # written without prepare (a transaction entry, a conditional update): decided in the unit
    bundle = _transaction(_post(basic("prepare-stamp")))
    done = ruled.post("/fhir", json=bundle)
    assert done.status_code == 200, done.text
    location = done.json()["entry"][0]["response"]["location"]
    assert ruled.get(f"/fhir/{location.split('/_history')[0]}").json()["created"] == "2022-02-02"
    conditional = ruled.put(
        f"/fhir/Basic?_id={stored['id']}", json={**patched.json(), "created": "1999-09-09"}
    )
    assert conditional.status_code == 200 and conditional.json()["created"] == "2022-02-02"


def test_a_rule_refuses_a_delete_from_the_previous_version(ruled: TestClient) -> None:
    kept = ruled.post("/fhir/Basic", json=basic("keep")).json()
    outcome(ruled.delete(f"/fhir/Basic/{kept['id']}"), 409)
    assert ruled.get(f"/fhir/Basic/{kept['id']}").status_code == 200
    bundle = _transaction({"request": {"method": "DELETE", "url": f"Basic/{kept['id']}"}})
    outcome(ruled.post("/fhir", json=bundle), 409)
    assert ruled.get(f"/fhir/Basic/{kept['id']}").status_code == 200
    assert len(_events(ruled)) == 1


def test_a_batch_entry_refused_by_a_rule_fails_alone(ruled: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [_post(basic("fine")), _post(basic("refuse")), _post(basic("also fine"))],
    }
    answer = ruled.post("/fhir", json=bundle).json()
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "201 Created"]
    assert len(_one_event_per_version(ruled)) == 2


# -- the rule's reader sees the unit's earlier writes -------------------------------------------


def test_a_rule_reads_an_earlier_entry_of_the_same_transaction(ruled: TestClient) -> None:
    bundle = _transaction(
        _post(basic("subject"), "urn:uuid:8f7f8a3e-5d1c-4c36-9d53-3f0f0c7e2a11"),
        _post(
            basic(
                "needs-subject",
                subject={"reference": "urn:uuid:8f7f8a3e-5d1c-4c36-9d53-3f0f0c7e2a11"},
            )
        ),
    )
    answer = ruled.post("/fhir", json=bundle)
    assert answer.status_code == 200, answer.text
    # alone, the same resource names a subject that is not stored: refused
    alone = basic("needs-subject", subject={"reference": "Basic/not-there"})
    body = outcome(ruled.post("/fhir/Basic", json=alone), 422)
    assert body["issue"][0]["expression"] == ["Basic.subject"]


# -- derived writes -----------------------------------------------------------------------------


def test_a_derived_write_commits_with_its_cause(ruled: TestClient) -> None:
    created = ruled.post("/fhir/Basic", json=basic("derive"))
    assert created.status_code == 201, created.text
    cause = created.json()["id"]
    derived = ruled.get(f"/fhir/Basic?subject=Basic/{cause}").json()
    assert [e["resource"]["code"]["text"] for e in derived["entry"]] == ["derived"]
    events = _one_event_per_version(ruled)
    assert len(events) == 2
    assert events[0].transaction == events[1].transaction  # one unit
    assert [e.id for e in events][0] == cause
    # the derived write went through the rules too, one level down
    assert [(r["next"], r["depth"]) for r in RECORDED] == [("derive", 0), ("derived", 1)]


def test_the_rules_judge_a_derived_write_as_the_principal_it_names(ruled: TestClient) -> None:
    assert ruled.post("/fhir/Basic", json=basic("derive-as")).status_code == 201
    assert [(r["next"], r["depth"], r["client"]) for r in RECORDED] == [
        ("derive-as", 0, "local"),
        ("derived", 1, "rule-acts-for"),
    ]


@pytest.mark.parametrize(
    ("text", "status"), [("derive-invalid", 400), ("derive-refused", 422), ("loop", 500)]
)
def test_a_failing_derived_write_rolls_back_its_cause(
    ruled: TestClient, text: str, status: int
) -> None:
    outcome(ruled.post("/fhir/Basic", json=basic(text)), status)
    _nothing_written(ruled)


# -- the built-in rule --------------------------------------------------------------------------


def test_definitions_stay_read_only_on_every_write(ruled: TestClient) -> None:
    vs = {"resourceType": "ValueSet", "status": "draft"}
    for response in (
        ruled.post("/fhir/ValueSet", json=vs),
        ruled.put("/fhir/ValueSet/x", json={**vs, "id": "x"}),
        ruled.delete("/fhir/ValueSet?url=http://example.org/x"),
    ):
        outcome(response, 405)
    bundle = _transaction(_post(basic("fine")), _post(vs))
    failed = outcome(ruled.post("/fhir", json=bundle), 405)
    assert failed["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    _nothing_written(ruled)


# -- operations write through the pipeline -----------------------------------------------------

BROKEN_LIST = {
    "resourceType": "List",
    "meta": {"profile": ["http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-list"]},
    "status": "current",
    "mode": "snapshot",
}


def _writes_a_broken_list(call: Call) -> dict[str, Any]:
    assert call.write is not None
    call.write(Write("create", "List", resource=dict(BROKEN_LIST)))
    return {"resourceType": "Parameters"}


def _operation(name: str, *, long_running: bool) -> Operation:
    return defined_operation(
        name, _writes_a_broken_list, system=True, affects_state=True, long_running=long_running
    )


@pytest.fixture
def writing_operations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with extra_operations(
        monkeypatch,
        _operation("write-in-unit", long_running=False),
        _operation("write-on-thread", long_running=True),
    ):
        yield


@pytest.mark.usefixtures("writing_operations")
@pytest.mark.parametrize("name", ["write-in-unit", "write-on-thread"])
def test_an_operation_write_that_breaks_a_profile_is_refused(ruled: TestClient, name: str) -> None:
    body = outcome(ruled.post(f"/fhir/${name}", json={"resourceType": "Parameters"}), 422)
    assert any("List.title" in (i.get("expression") or [""])[0] for i in body["issue"]), body
    assert ruled.get("/fhir/List?_summary=count").json()["total"] == 0
    assert _events(ruled) == []


# -- the outbox -------------------------------------------------------------------------------


def test_the_outbox_holds_exactly_one_event_per_committed_version(ruled: TestClient) -> None:
    request_id = "3c6f2a0e9b1d4f7a8e5c2b1a0d9f8e7c"
    created = ruled.post("/fhir/Basic", json=basic("a"), headers={"X-Request-ID": request_id})
    id = created.json()["id"]
    ruled.put(f"/fhir/Basic/{id}", json={**created.json(), "code": {"text": "b"}})
    patch = [{"op": "replace", "path": "/code/text", "value": "c"}]
    ruled.patch(
        f"/fhir/Basic/{id}",
        content=orjson.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    ruled.delete(f"/fhir/Basic/{id}")
    ruled.delete(f"/fhir/Basic/{id}")  # already deleted: no new version, no event
    tx = ruled.post(
        "/fhir", json=_transaction(_post(basic("t1")), _post(basic("t2")), _post(basic("t3")))
    )
    assert tx.status_code == 200
    # refused and rolled back: no events
    ruled.post("/fhir/Basic", json=basic("refuse"))
    ruled.post("/fhir", json=_transaction(_post(basic("t4")), _post(basic("refuse"))))
    ruled.put(
        f"/fhir/Basic/{id}",
        json={**created.json(), "code": {"text": "x"}},
        headers={"If-Match": 'W/"1"'},
    )  # stale: 412
    events = _one_event_per_version(ruled)
    assert [(e.interaction, e.version, e.previous) for e in events[:4]] == [
        ("create", 1, None),
        ("update", 2, 1),
        ("patch", 3, 2),
        ("delete", 4, 3),
    ]
    assert events[0].origin.request_id == request_id
    assert events[0].origin.client == "local"
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.committed for e in events] == sorted(e.committed for e in events)
    transactions = [e.transaction for e in events]
    assert len(set(transactions[4:])) == 1  # the Bundle's three entries: one unit
    assert len(set(transactions[:4])) == 4


def test_consumers_read_by_sequence_and_pruning_waits_for_them(ruled: TestClient) -> None:
    outbox = ruled.app.state.store.outbox  # type: ignore[attr-defined]
    for text in ("a", "b", "c"):
        ruled.post("/fhir/Basic", json=basic(text))
    first, *_, last = outbox.read(0, 10)
    assert outbox.register("audit", start=0) == 0
    assert outbox.register("audit", start=last.seq) == 0  # registering again changes nothing
    assert outbox.register("late") == last.seq  # from now on
    assert [e.seq for e in outbox.read(0, 2)] == [first.seq, first.seq + 1]
    outbox.advance("audit", first.seq)
    outbox.advance("audit", 0)  # never backward
    assert outbox.cursor("audit") == first.seq
    future = last.committed + 1
    assert outbox.prune(future) == 1  # only what every consumer passed
    assert outbox.prune(first.committed) == 0  # nor anything younger than the minimum age
    outbox.advance("audit", last.seq)
    assert outbox.prune(future) == 1  # the newest event always stays
    assert outbox.read(0, 10) == [last]
    assert outbox.unregister("audit") and outbox.unregister("late")
    ruled.post("/fhir/Basic", json=basic("d"))
    newest = outbox.read(last.seq, 10)
    assert len(newest) == 1 and newest[0].seq > last.seq == outbox.read(0, 1)[0].seq
    assert outbox.last() == newest[0].seq


def test_each_server_prunes_the_outbox_on_its_own(ruled: TestClient, database_url: str) -> None:
    with fhir_client(
        database_url, outbox_retention_days=1e-9, outbox_prune_minutes=0.002
    ) as pruning:
        outbox = pruning.app.state.store.outbox  # type: ignore[attr-defined]
        assert pruning.post("/fhir/Basic", json=basic("old")).status_code == 201
        deadline = time.monotonic() + 10
        assert pruning.post("/fhir/Basic", json=basic("new")).status_code == 201
        while len(outbox.read(0, 10)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        [newest] = outbox.read(0, 10)  # the older one pruned; the newest always stays
        assert newest.seq == outbox.last()
