"""Bulk Data ``$export`` on both stores: kick-off at system, Patient and Group level with its
parameters and errors, status polling, the manifest, the files, cancellation, the limits, an
export while writes go on, a worker that dies mid-export, and access through the door."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.auth.principal import LOCAL, Principal
from server.bulk import export as export_module
from server.bulk.export import ExportWork
from server.jobs import JobContext
from server.ports import HistoryQuery, Page
from tests.access_scene import SCENE, VISIBLE, policy_apps, seed
from tests.support import (
    BASE,
    FHIR_JSON,
    Acting,
    TestClient,
    clear_store,
    create,
    expressions,
    fhir_client,
    observation,
    outcome,
    patient,
    postgres_database,
    put,
)

ASYNC = {"Prefer": "respond-async", "Accept": FHIR_JSON}
NDJSON = "application/fhir+ndjson"


@pytest.fixture(scope="module")
def acting() -> Acting:
    return Acting()


@pytest.fixture(scope="module")
def _app(
    database_url: str, acting: Acting, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("exports")
    with fhir_client(
        database_url,
        principals=acting,
        export_dir=str(folder),
        export_min_poll_seconds=0,
        async_stale_seconds=0.5,
    ) as client:
        yield client


@pytest.fixture
def app(_app: TestClient, database_url: str, acting: Acting) -> TestClient:
    clear_store(database_url)
    acting.as_(LOCAL)
    return _app


def _path(url: str) -> str:
    assert url.startswith(BASE), url
    return "/fhir" + url.removeprefix(BASE)


def kick_off(client: TestClient, path: str = "/fhir/$export", **params: Any) -> str:
    response = client.get(path, params=params, headers=ASYNC)
    assert response.status_code == 202, response.text
    assert outcome(response)["issue"][0]["severity"] == "information"
    return response.headers["content-location"]


def wait(client: TestClient, status_url: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(_path(status_url))
        if response.status_code != 202:
            return response
        assert response.headers["x-progress"]
        assert int(response.headers["retry-after"]) > 0
        assert time.monotonic() < deadline, "export still running"
        time.sleep(0.05)


def manifest(client: TestClient, status_url: str) -> dict[str, Any]:
    response = wait(client, status_url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "expires" in response.headers
    body: dict[str, Any] = response.json()
    return body


def lines(client: TestClient, found: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every resource of the manifest's files, by type (each file's count checked)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in found["output"]:
        response = client.get(_path(entry["url"]), headers={"Accept": NDJSON})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(NDJSON)
        rows = [orjson.loads(line) for line in response.content.splitlines()]
        assert len(rows) == entry["count"]
        assert all(r["resourceType"] == entry["type"] for r in rows)
        out.setdefault(entry["type"], []).extend(rows)
    return out


def keys(found: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for rows in found.values() for r in rows}


def _seed_members(client: TestClient) -> dict[str, str]:
    """Two patients with an observation each, an organization, and a Group of the first."""
    org = create(client, {"resourceType": "Organization", "name": "Plan"})
    ann = create(client, patient("Ann"))
    bob = create(client, patient("Bob"))
    oa = create(client, observation(f"Patient/{ann['id']}", code={"text": "a1c"}))
    ob = create(client, observation(f"Patient/{bob['id']}"))
    group = create(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": f"Patient/{ann['id']}"}},
                {"entity": {"reference": f"Patient/{bob['id']}"}, "inactive": True},
            ],
        },
    )
    return {
        "org": org["id"],
        "ann": ann["id"],
        "bob": bob["id"],
        "oa": oa["id"],
        "ob": ob["id"],
        "group": group["id"],
    }


# -- kick-off errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ({"_outputFormat": "text/csv"}, "_outputFormat"),
        ({"_type": "Patient,Nonsense"}, "_type"),
        ({"_type": "StructureDefinition"}, "_type"),
        ({"_since": "2024-01-01"}, "_since"),
        ({"_since": "yesterday"}, "_since"),
        ({"_typeFilter": "Observation"}, "_typeFilter"),
        ({"_typeFilter": "Observation?nonsense=1"}, "_typeFilter"),
        ({"_typeFilter": "Observation?subject:Patient.name=x"}, "_typeFilter"),
        ({"_type": "Patient", "_typeFilter": "Observation?code=x"}, "_typeFilter"),
        ({"_elements": "id"}, "_elements"),
        ({"includeAssociatedData": "LatestProvenanceResources"}, "includeAssociatedData"),
        ({"patient": "Patient/1"}, "patient"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(
    app: TestClient, params: dict[str, str], expression: str
) -> None:
    response = app.get("/fhir/$export", params=params, headers=ASYNC)
    assert expression in expressions(outcome(response, 400))


def test_without_prefer_respond_async_the_kick_off_is_400(app: TestClient) -> None:
    response = app.get("/fhir/$export", headers={"Accept": FHIR_JSON})
    assert expressions(outcome(response, 400)) == ["Prefer"]


def test_an_accept_other_than_fhir_json_is_406(app: TestClient) -> None:
    response = app.get("/fhir/$export", headers={"Prefer": "respond-async", "Accept": "text/csv"})
    outcome(response, 406)


def test_a_group_that_is_missing_is_404_and_a_deleted_one_410(app: TestClient) -> None:
    outcome(app.get("/fhir/Group/nope/$export", headers=ASYNC), 404)
    ids = _seed_members(app)
    assert app.delete(f"/fhir/Group/{ids['group']}").status_code in (200, 204)
    outcome(app.get(f"/fhir/Group/{ids['group']}/$export", headers=ASYNC), 410)


def test_lenient_handling_ignores_unsupported_parameters_and_reports_them(
    app: TestClient,
) -> None:
    response = app.get(
        "/fhir/$export",
        params={"_elements": "id", "_type": "Patient"},
        headers={**ASYNC, "Prefer": "respond-async, handling=lenient"},
    )
    assert response.status_code == 202, response.text
    issues = outcome(response)["issue"]
    assert [i["severity"] for i in issues] == ["information", "warning"]
    found = manifest(app, response.headers["content-location"])
    (error,) = found["error"]
    assert error["type"] == "OperationOutcome" and error["count"] == 1
    body = app.get(_path(error["url"])).content
    assert b"_elements" in body


# -- a complete export ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output", [None, "application/fhir+ndjson", "application/ndjson", "ndjson"]
)
def test_a_system_export_writes_one_file_per_type_and_a_manifest(
    app: TestClient, output: str | None
) -> None:
    ids = _seed_members(app)
    params = {} if output is None else {"_outputFormat": output}
    status_url = kick_off(app, **params)
    assert status_url.startswith(f"{BASE}/_export/")
    found = manifest(app, status_url)
    assert set(found) >= {"transactionTime", "request", "requiresAccessToken", "output", "error"}
    assert found["request"].startswith(f"{BASE}/$export")
    assert found["requiresAccessToken"] is False  # authentication is off in these apps
    assert found["error"] == []
    assert {e["type"] for e in found["output"]} == {
        "Organization",
        "Patient",
        "Observation",
        "Group",
    }
    rows = lines(app, found)
    assert keys(rows) == {
        f"Organization/{ids['org']}",
        f"Patient/{ids['ann']}",
        f"Patient/{ids['bob']}",
        f"Observation/{ids['oa']}",
        f"Observation/{ids['ob']}",
        f"Group/{ids['group']}",
    }
    stored = app.get(f"/fhir/Patient/{ids['ann']}").json()
    (ann,) = [r for r in rows["Patient"] if r["id"] == ids["ann"]]
    assert ann == stored


def test_transaction_time_is_the_latest_version_at_the_kick_off(app: TestClient) -> None:
    create(app, patient("Ann"))
    last = create(app, patient("Bob"))
    found = manifest(app, kick_off(app))
    assert found["transactionTime"] == last["meta"]["lastUpdated"]


def test_files_split_at_the_size_limit(app: TestClient, database_url: str, tmp_path: Path) -> None:
    with fhir_client(
        database_url, export_dir=str(tmp_path), export_file_bytes=1024, export_min_poll_seconds=0
    ) as small:
        for n in range(12):
            create(small, patient(f"Family{n}"))
        found = manifest(small, kick_off(small, _type="Patient"))
        assert len(found["output"]) > 1
        assert sum(e["count"] for e in found["output"]) == 12
        assert len(keys(lines(small, found))) == 12
        for entry in found["output"]:
            name = entry["url"].rsplit("/", 1)[1]
            size = (tmp_path / entry["url"].split("/")[-2] / name).stat().st_size
            assert size <= 1024 or entry["count"] == 1


def test_type_limits_the_export(app: TestClient) -> None:
    _seed_members(app)
    found = manifest(app, kick_off(app, _type="Observation,Organization"))
    assert [e["type"] for e in found["output"]] == ["Observation", "Organization"]


def test_since_keeps_what_changed_at_or_after_it(app: TestClient) -> None:
    old = create(app, patient("Old"))
    changed = create(app, patient("Changed"))
    time.sleep(0.01)
    fresh = create(app, patient("Fresh"))
    since = fresh["meta"]["lastUpdated"]
    put(app, {**changed, "name": [{"family": "Changed again"}]})
    found = manifest(app, kick_off(app, _type="Patient", _since=since))
    assert keys(lines(app, found)) == {f"Patient/{fresh['id']}", f"Patient/{changed['id']}"}
    assert old["id"] not in str(found)


def deleted(client: TestClient, found: dict[str, Any]) -> list[str]:
    """The ``DELETE`` entries of the manifest's ``deleted`` files, in file order (each file's
    count and every line's shape checked)."""
    out: list[str] = []
    for entry in found["deleted"]:
        assert entry["type"] == "Bundle"
        response = client.get(_path(entry["url"]), headers={"Accept": NDJSON})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(NDJSON)
        rows = [orjson.loads(line) for line in response.content.splitlines()]
        assert len(rows) == entry["count"]
        for bundle in rows:
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
            assert bundle["entry"]
            for item in bundle["entry"]:
                assert item["request"]["method"] == "DELETE"
                out.append(item["request"]["url"])
    return out


def _gone(client: TestClient, resource: dict[str, Any]) -> str:
    ref = f"{resource['resourceType']}/{resource['id']}"
    assert client.delete(f"/fhir/{ref}").status_code in (200, 204)
    return ref


def test_since_lists_what_was_deleted_at_or_after_it(app: TestClient) -> None:
    early = create(app, patient("Early"))  # deleted before _since: not listed
    _gone(app, early)
    kept = create(app, patient("Kept"))
    old = create(app, patient("Old"))  # created before _since, deleted after it: listed
    obs = create(app, observation(f"Patient/{kept['id']}"))
    time.sleep(0.01)
    fresh = create(app, patient("Fresh"))  # created and deleted after _since: listed
    since = fresh["meta"]["lastUpdated"]
    gone = [_gone(app, old), _gone(app, fresh), _gone(app, obs)]
    found = manifest(app, kick_off(app, _type="Patient,Observation", _since=since))
    assert keys(lines(app, found)) == set()
    assert sorted(deleted(app, found)) == sorted(gone)
    # without _since nothing is listed as deleted
    everything = manifest(app, kick_off(app, _type="Patient,Observation"))
    assert everything["deleted"] == []
    assert keys(lines(app, everything)) == {f"Patient/{kept['id']}"}


def test_deletions_listed_are_those_the_export_would_have_held(app: TestClient) -> None:
    ann, bob = create(app, patient("Ann")), create(app, patient("Bob"))
    a1c = create(app, observation(f"Patient/{ann['id']}", code={"text": "a1c"}))
    bp = create(app, observation(f"Patient/{bob['id']}", code={"text": "bp"}))
    org = create(app, {"resourceType": "Organization", "name": "Plan"})
    since = org["meta"]["lastUpdated"]
    time.sleep(0.01)
    for resource in (a1c, bp, org):
        _gone(app, resource)
    # _typeFilter: judged on the last version before the deletion
    only_a1c = kick_off(
        app, _type="Observation", _since=since, _typeFilter="Observation?code:text=a1c"
    )
    filtered = manifest(app, only_a1c)
    assert deleted(app, filtered) == [f"Observation/{a1c['id']}"]
    # Patient level: the compartments' resources only (no Organization)
    level = manifest(app, kick_off(app, "/fhir/Patient/$export", _since=since))
    assert sorted(deleted(app, level)) == sorted(
        [f"Observation/{a1c['id']}", f"Observation/{bp['id']}"]
    )
    # _type: only the types asked for
    orgs = manifest(app, kick_off(app, _type="Organization", _since=since))
    assert deleted(app, orgs) == [f"Organization/{org['id']}"]


def test_type_filter_keeps_the_matches_of_its_type_only(app: TestClient) -> None:
    ids = _seed_members(app)
    status_url = kick_off(app, _typeFilter="Observation?code:text=a1c")
    rows = lines(app, manifest(app, status_url))
    assert [r["id"] for r in rows["Observation"]] == [ids["oa"]]
    assert len(rows["Patient"]) == 2  # other types unfiltered


def test_type_filters_of_one_type_are_alternatives(app: TestClient) -> None:
    a = create(app, patient("Ann", gender="female"))
    b = create(app, patient("Bob", gender="male"))
    create(app, patient("Cy", gender="other"))
    response = app.get(
        "/fhir/$export",
        params=[("_typeFilter", "Patient?gender=female"), ("_typeFilter", "Patient?gender=male")],
        headers=ASYNC,
    )
    assert response.status_code == 202, response.text
    rows = lines(app, manifest(app, response.headers["content-location"]))
    assert {r["id"] for r in rows["Patient"]} == {a["id"], b["id"]}


def test_a_patient_export_holds_the_patients_compartments(app: TestClient) -> None:
    ids = _seed_members(app)
    rows = lines(app, manifest(app, kick_off(app, "/fhir/Patient/$export")))
    # the Group is in its members' compartments (Patient compartment: Group.member)
    assert keys(rows) == {
        f"Group/{ids['group']}",
        f"Patient/{ids['ann']}",
        f"Patient/{ids['bob']}",
        f"Observation/{ids['oa']}",
        f"Observation/{ids['ob']}",
    }


def test_a_group_export_holds_its_active_members_data(app: TestClient) -> None:
    ids = _seed_members(app)
    rows = lines(app, manifest(app, kick_off(app, f"/fhir/Group/{ids['group']}/$export")))
    assert keys(rows) == {
        f"Patient/{ids['ann']}",
        f"Observation/{ids['oa']}",
        f"Group/{ids['group']}",
    }


def test_a_posted_kick_off_takes_parameters_and_patients(app: TestClient) -> None:
    ids = _seed_members(app)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Observation"},
            {"name": "patient", "valueReference": {"reference": f"Patient/{ids['bob']}"}},
        ],
    }
    response = app.post(
        "/fhir/Patient/$export", json=body, headers={**ASYNC, "Content-Type": FHIR_JSON}
    )
    assert response.status_code == 202, response.text
    rows = lines(app, manifest(app, response.headers["content-location"]))
    assert keys(rows) == {f"Observation/{ids['ob']}"}


# -- status, files, cancel, limits -----------------------------------------------------------


class Hold:
    """Holds every export at its first batch until released (released at the end)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()


@pytest.fixture
def hold(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hold]:
    held = Hold()
    original = ExportWork._read

    def read(self: ExportWork, ctx: JobContext, query: HistoryQuery) -> Page:
        held.entered.set()
        while not held.release.wait(0.01):
            if ctx.cancelled():
                break
        return original(self, ctx, query)

    monkeypatch.setattr(ExportWork, "_read", read)
    yield held
    held.release.set()


def test_a_running_export_answers_202_with_progress(app: TestClient, hold: Hold) -> None:
    create(app, patient())
    status_url = kick_off(app, _type="Patient")
    assert hold.entered.wait(10)
    response = app.get(_path(status_url))
    assert response.status_code == 202
    assert response.headers["x-progress"] == "0 done"
    assert response.headers["retry-after"] == "2"
    hold.release.set()
    assert manifest(app, status_url)["output"][0]["count"] == 1


def test_polling_too_often_is_429(
    app: TestClient, database_url: str, hold: Hold, tmp_path: Path
) -> None:
    with fhir_client(database_url, export_dir=str(tmp_path), export_min_poll_seconds=60) as slow:
        status_url = kick_off(slow, _type="Patient")
        assert slow.get(_path(status_url)).status_code == 202
        response = slow.get(_path(status_url))
        outcome(response, 429)
        assert int(response.headers["retry-after"]) >= 60
        hold.release.set()


def test_past_the_concurrency_limit_a_kick_off_is_429(
    app: TestClient, database_url: str, hold: Hold, tmp_path: Path
) -> None:
    with fhir_client(
        database_url, export_dir=str(tmp_path), export_max_running=1, export_min_poll_seconds=0
    ) as limited:
        first = kick_off(limited, _type="Patient")
        response = limited.get("/fhir/$export", headers=ASYNC)
        outcome(response, 429)
        assert int(response.headers["retry-after"]) > 0
        hold.release.set()
        manifest(limited, first)
        kick_off(limited, _type="Patient")  # the first ended: room again


def test_delete_cancels_a_running_export_and_removes_its_files(
    app: TestClient, hold: Hold, tmp_path: Path
) -> None:
    create(app, patient())
    status_url = kick_off(app)
    assert hold.entered.wait(10)
    job = status_url.rsplit("/", 1)[1]
    folder = Path(app.app.state.settings.export_dir) / job  # type: ignore[attr-defined]
    assert folder.is_dir()
    assert app.delete(_path(status_url)).status_code == 202
    outcome(app.get(_path(status_url)), 404)
    hold.release.set()
    deadline = time.monotonic() + 10
    while folder.exists():  # the worker may be writing its batch: it removes the folder too
        assert time.monotonic() < deadline
        time.sleep(0.02)
    outcome(app.delete(_path(status_url)), 404)


def test_delete_of_a_finished_export_removes_its_files(app: TestClient) -> None:
    create(app, patient())
    status_url = kick_off(app)
    found = manifest(app, status_url)
    url = _path(found["output"][0]["url"])
    assert app.get(url).status_code == 200
    assert app.delete(_path(status_url)).status_code == 202
    outcome(app.get(url), 404)
    outcome(app.get(_path(status_url)), 404)


def test_files_and_status_belong_to_the_principal_that_started_the_export(
    app: TestClient, acting: Acting
) -> None:
    create(app, patient())
    status_url = kick_off(app)
    found = manifest(app, status_url)
    url = _path(found["output"][0]["url"])
    acting.as_(Principal("someone-else", allow_all=True))
    outcome(app.get(url), 404)
    outcome(app.get(_path(status_url)), 404)
    outcome(app.delete(_path(status_url)), 404)
    acting.as_(LOCAL)
    assert app.get(url).status_code == 200


@pytest.mark.parametrize("name", ["..%2Fstate.json", "state.json", "Patient-1.json", "x"])
def test_only_the_exports_own_files_are_served(app: TestClient, name: str) -> None:
    create(app, patient())
    status_url = kick_off(app)
    manifest(app, status_url)
    outcome(app.get(_path(status_url) + "/" + name), 404)


# -- consistency, resumption ------------------------------------------------------------------


def test_an_export_reads_as_of_its_kick_off_while_writes_go_on(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "BATCH", 2)
    kept = [create(app, patient(f"P{n}")) for n in range(7)]
    gone = kept[1]
    changed = kept[4]
    batches: list[int] = []
    first_batch = threading.Event()
    go_on = threading.Event()
    original = ExportWork._read

    def read(self: ExportWork, ctx: JobContext, query: HistoryQuery) -> Page:
        page = original(self, ctx, query)
        batches.append(len(page.items))
        if len(batches) == 1:
            first_batch.set()
            go_on.wait(10)
        return page

    monkeypatch.setattr(ExportWork, "_read", read)
    status_url = kick_off(app, _type="Patient")
    assert first_batch.wait(10)
    # between its batches: a delete, an update, a create
    assert app.delete(f"/fhir/Patient/{gone['id']}").status_code in (200, 204)
    put(app, {**changed, "name": [{"family": "Renamed"}]})
    create(app, patient("Late"))
    go_on.set()
    rows = lines(app, manifest(app, status_url))["Patient"]
    assert len(batches) >= 4  # short batches, not one read
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for p in kept)
    (renamed,) = [r for r in rows if r["id"] == changed["id"]]
    assert renamed == changed  # the version current at the kick-off


class Died(BaseException):
    """The worker thread ends without a word (as when its process is killed)."""


def test_an_export_whose_worker_died_is_resumed_by_the_next_poll(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _seed_members(app)
    calls: list[str] = []
    original = ExportWork._read

    def read(self: ExportWork, ctx: JobContext, query: HistoryQuery) -> Page:
        calls.append(str(query.type))
        if query.type == "Observation" and calls.count("Observation") == 1:
            raise Died()
        return original(self, ctx, query)

    monkeypatch.setattr(ExportWork, "_read", read)
    status_url = kick_off(app, _type="Patient,Observation")
    job = status_url.rsplit("/", 1)[1]
    jobs = app.app.state.jobs  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while not jobs.stale(jobs.store.get(job)):  # no heartbeat: the worker is gone
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rows = lines(app, manifest(app, status_url))
    assert keys(rows) == {
        f"Patient/{ids['ann']}",
        f"Patient/{ids['bob']}",
        f"Observation/{ids['oa']}",
        f"Observation/{ids['ob']}",
    }
    assert calls.count("Patient") == 1  # the finished type was kept, not read again
    assert calls.count("Observation") == 2


# -- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["compartment", "label"])
def test_a_narrowed_caller_exports_only_what_it_may_see(
    database_url: str, tmp_path: Path, policy: str
) -> None:
    clear_store(database_url)
    settings = {"export_dir": str(tmp_path), "export_min_poll_seconds": 0}
    with policy_apps(database_url, **settings) as apps:
        seed(apps["operator"])
        client = apps[policy]
        rows = lines(client, manifest(client, kick_off(client)))
        assert keys(rows) == VISIBLE[policy]
        # deletions since _since: never one the caller could not see
        operator = apps["operator"]
        since = create(operator, {"resourceType": "Organization", "name": "Marker"})
        time.sleep(0.01)
        removed = {
            _gone(operator, {"resourceType": type, "id": id})
            for type, id, _, _ in SCENE
            if type in ("Observation", "Practitioner")
        }
        status = kick_off(client, _since=since["meta"]["lastUpdated"])
        assert set(deleted(client, manifest(client, status))) <= VISIBLE[policy] & removed


def test_an_ecm_provider_patient_export_holds_only_its_members_data(
    database_url: str, tmp_path: Path
) -> None:
    clear_store(database_url)
    settings = {"export_dir": str(tmp_path), "export_min_poll_seconds": 0}
    with policy_apps(database_url, **settings) as apps:
        seed(apps["operator"])
        client = apps["compartment"]
        rows = lines(client, manifest(client, kick_off(client, "/fhir/Patient/$export")))
        # p1's compartment only: no organization or practitioner it merely refers to
        assert keys(rows) == {
            k for k in VISIBLE["compartment"] if k.split("/")[0] in ("Patient", "Observation")
        }


def test_the_capability_statement_declares_bulk_data_export(app: TestClient) -> None:
    statement = app.get("/fhir/metadata").json()
    bulk = "http://hl7.org/fhir/uv/bulkdata"
    assert f"{bulk}/CapabilityStatement/bulk-data" in statement["instantiates"]
    rest = statement["rest"][0]
    assert {"name": "export", "definition": f"{bulk}/OperationDefinition/export"} in rest[
        "operation"
    ]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    assert {"name": "export", "definition": f"{bulk}/OperationDefinition/patient-export"} in (
        by_type["Patient"]
    )
    assert {"name": "export", "definition": f"{bulk}/OperationDefinition/group-export"} in (
        by_type["Group"]
    )


@pytest.mark.postgres
def test_two_postgresql_stores_on_the_default_folder_keep_each_others_exports(
    postgres_url: str,
) -> None:
    """The default export folder is per database: a kick-off on one store sweeps only the
    folders of its own unknown jobs, never another store's export."""
    with postgres_database(postgres_url) as first_url, postgres_database(postgres_url) as other_url:
        with fhir_client(first_url, export_min_poll_seconds=0) as first, \
                fhir_client(other_url, export_min_poll_seconds=0) as other:
            create(first, patient("two-stores"))
            found = manifest(first, kick_off(first))
            assert [e["type"] for e in found["output"]] == ["Patient"]
            create(other, patient("two-stores"))
            manifest(other, kick_off(other))
            assert len(lines(first, found)["Patient"]) == 1
