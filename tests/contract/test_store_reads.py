"""The store's bulk reads, through the app's store on both databases: ``patient_resources``
(a batch of members' resources, grouped by member) and ``scan`` (a type in creation order)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.support import FHIR_JSON, TestClient, create, patient, put

PARAMS = {
    "Encounter": ["subject", "patient"],
    "Observation": ["subject"],
    "Coverage": ["beneficiary"],
    "Condition": ["subject"],
}


def _put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = put(client, resource)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _members(client: TestClient) -> None:
    # ids chosen so that bytewise order ("B..." before "a...") differs from a locale's
    for pid in ("a-one", "B-two", "c-three"):
        _put(client, patient(pid, id=pid))


def _ref(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def _encounter(id: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": id,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref(pid),
    }


def _observation(id: str, pid: str, text: str = "weight", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"text": text},
        "subject": _ref(pid),
        **extra,
    }


def _coverage(id: str, pid: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": id,
        "status": status,
        "beneficiary": _ref(pid),
        "payor": [{"display": "Plan"}],
    }


def _condition(id: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "subject": _ref(pid),
        "code": {"text": "something"},
    }


def _resources(
    client: TestClient, ids: list[str], params: dict[str, list[str]]
) -> list[tuple[str, str, int, dict[str, Any]]]:
    with client.app.state.store.reader() as reader:  # type: ignore[attr-defined]
        rows = list(reader.patient_resources(ids, params))
    out = []
    for pid, version in rows:
        assert version.body is not None and not version.deleted
        out.append(
            (pid, f"{version.type}/{version.id}", version.version, orjson.loads(version.body))
        )
    return out


def test_patient_resources_are_grouped_by_patient_current_and_live(client: TestClient) -> None:
    _members(client)
    _put(client, _encounter("e1", "a-one"))
    _put(client, _encounter("e2", "B-two"))
    _put(client, _observation("o1", "a-one"))
    _put(client, _observation("o2", "B-two"))
    _put(client, _observation("o2", "B-two", text="height"))  # version 2
    _put(client, _coverage("cov1", "B-two"))
    _put(client, _condition("gone", "a-one"))
    assert client.delete("/fhir/Condition/gone").status_code in (200, 204)
    _put(client, _condition("k1", "c-three"))
    found = _resources(client, ["a-one", "B-two", "c-three"], PARAMS)
    assert [(pid, key) for pid, key, _, _ in found] == [
        ("B-two", "Coverage/cov1"),
        ("B-two", "Encounter/e2"),
        ("B-two", "Observation/o2"),
        ("a-one", "Encounter/e1"),
        ("a-one", "Observation/o1"),
        ("c-three", "Condition/k1"),
    ]
    current = {key: (version, body) for _, key, version, body in found}
    assert current["Observation/o2"][0] == 2
    assert current["Observation/o2"][1]["code"] == {"text": "height"}
    assert current["Observation/o2"][1]["meta"]["versionId"] == "2"


def test_a_resource_found_through_two_parameters_comes_once(client: TestClient) -> None:
    _members(client)
    _put(client, _encounter("e1", "a-one"))  # Encounter.subject: both subject and patient
    found = _resources(client, ["a-one"], {"Encounter": ["subject", "patient"]})
    assert [key for _, key, _, _ in found] == ["Encounter/e1"]


def test_a_resource_pointing_to_two_batch_members_comes_once_per_member(client: TestClient) -> None:
    _members(client)
    # Observation.subject -> a-one, Observation.performer -> B-two (performer may be a Patient)
    _put(client, _observation("o1", "a-one", performer=[_ref("B-two")]))
    found = _resources(client, ["a-one", "B-two"], {"Observation": ["subject", "performer"]})
    assert [(pid, key) for pid, key, _, _ in found] == [
        ("B-two", "Observation/o1"),
        ("a-one", "Observation/o1"),
    ]


def test_only_the_listed_types_params_and_patients(client: TestClient) -> None:
    _members(client)
    _put(client, _encounter("e1", "a-one"))
    _put(client, _observation("o1", "a-one", performer=[_ref("B-two")]))
    _put(client, _coverage("cov1", "c-three"))
    # performer is not asked for: B-two has nothing; Encounter is not asked for at all
    found = _resources(client, ["a-one", "B-two"], {"Observation": ["subject"]})
    assert [(pid, key) for pid, key, _, _ in found] == [("a-one", "Observation/o1")]
    assert _resources(client, ["a-one"], {"Encounter": []}) == []
    assert _resources(client, [], PARAMS) == []
    assert _resources(client, ["nobody"], PARAMS) == []


def test_references_to_other_types_with_the_same_id_do_not_count(client: TestClient) -> None:
    _members(client)
    group = {"resourceType": "Group", "id": "a-one", "type": "person", "actual": True}
    _put(client, group)
    _put(client, {**_observation("o1", "a-one"), "subject": {"reference": "Group/a-one"}})
    assert _resources(client, ["a-one"], {"Observation": ["subject"]}) == []


def test_patient_resources_stream_many_rows(client: TestClient) -> None:
    _members(client)
    entries = [
        {
            "resource": _observation(f"o{i:03d}", "a-one"),
            "request": {"method": "PUT", "url": f"Observation/o{i:03d}"},
        }
        for i in range(600)
    ]
    response = client.post(
        "/fhir",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers={"Content-Type": FHIR_JSON},
    )
    assert response.status_code == 200, response.text[:500]
    found = _resources(client, ["a-one"], {"Observation": ["subject"]})
    assert [key for _, key, _, _ in found] == [f"Observation/o{i:03d}" for i in range(600)]


def test_scan_pages_a_type_in_creation_order(client: TestClient) -> None:
    _members(client)
    ids = [create(client, _coverage("x", "a-one"))["id"] for _ in range(5)]
    assert client.delete(f"/fhir/Coverage/{ids[1]}").status_code in (200, 204)
    _put(client, {**_coverage(ids[3], "a-one", status="cancelled")})  # version 2
    create(client, patient("Other"))  # another type: not scanned
    store = client.app.state.store  # type: ignore[attr-defined]
    with store.reader() as reader:
        first = reader.scan("Coverage", None, 2)
        assert [v.id for v in first] == [ids[0], ids[2]]
        assert first[0].position < first[1].position
        second = reader.scan("Coverage", first[-1].position, 2)
        assert [v.id for v in second] == [ids[3], ids[4]]
        assert second[0].version == 2 and second[0].body is not None
        assert orjson.loads(second[0].body)["status"] == "cancelled"
        assert reader.scan("Coverage", second[-1].position, 2) == []
        assert [v.id for v in reader.scan("Coverage", None, 100)] == [
            ids[0],
            ids[2],
            ids[3],
            ids[4],
        ]
        assert reader.scan("Coverage", None, 0) == []
        assert reader.scan("Basic", None, 10) == []
