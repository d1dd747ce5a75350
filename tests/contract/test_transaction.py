"""Transaction Bundles at POST [base]: identities, references, order, atomicity, responses."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.support import (
    BASE,
    TestClient,
    create,
    expressions,
    history_total,
    observation,
    outcome,
    patient,
)

SYS = "urn:calaim:cin"


def _tx(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None,
          **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _put(resource: dict[str, Any], url: str | None = None, **request: str) -> dict[str, Any]:
    return {"resource": resource, "request": {
        "method": "PUT", "url": url or f"{resource['resourceType']}/{resource['id']}", **request}}


def _run(client: TestClient, bundle: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post("/fhir", json=bundle)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def _id_from_location(location: str) -> str:
    parts = location.split("/")
    i = parts.index("_history")
    return parts[i - 1]


def test_transaction_response_has_location_etag_last_modified_full_url(client: TestClient
                                                                       ) -> None:
    result = _run(client, _tx(_post(patient("A")),
                              _put({**patient("B"), "id": "tx-put"})))
    assert result["resourceType"] == "Bundle" and result["type"] == "transaction-response"
    created, updated = result["entry"]
    assert created["response"]["status"].startswith("201")
    assert updated["response"]["status"].startswith("201"), "PUT to a new id creates"
    for entry in (created, updated):
        response = entry["response"]
        assert "/_history/1" in response["location"], response
        assert response["etag"] == 'W/"1"'
        assert response["lastModified"].endswith("Z")
        rid = _id_from_location(response["location"])
        assert entry["fullUrl"] == f"{BASE}/Patient/{rid}"
        assert entry["resource"]["id"] == rid
        assert client.get(f"/fhir/Patient/{rid}").status_code == 200
    assert _id_from_location(updated["response"]["location"]) == "tx-put"


def test_urn_uuid_references_are_rewritten(client: TestClient) -> None:
    urn = "urn:uuid:2c6f3b9e-3b9a-4b8e-9a61-6f1b0d2b6d11"
    result = _run(client, _tx(
        _post(observation(urn), "urn:uuid:0a0e7d0e-1111-4b8e-9a61-6f1b0d2b6d11"),
        _post(patient("Subject"), urn),
    ))
    obs_entry, patient_entry = result["entry"]
    pid = _id_from_location(patient_entry["response"]["location"])
    oid = _id_from_location(obs_entry["response"]["location"])
    stored = client.get(f"/fhir/Observation/{oid}").json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_put_full_url_references_are_rewritten_too(client: TestClient) -> None:
    urn = "urn:uuid:5d9c0e8a-0000-4b8e-9a61-6f1b0d2b6d11"
    result = _run(client, _tx(
        {**_put({**patient("P"), "id": "known-id"}), "fullUrl": urn},
        _post(observation(urn)),
    ))
    oid = _id_from_location(result["entry"][1]["response"]["location"])
    assert client.get(f"/fhir/Observation/{oid}").json()["subject"]["reference"] == \
        "Patient/known-id"


def test_reference_to_an_unknown_urn_is_400(client: TestClient) -> None:
    before = history_total(client)
    outcome(client.post("/fhir", json=_tx(_post(observation("urn:uuid:nowhere")))), 400)
    assert history_total(client) == before


def test_conditional_reference_is_rewritten(client: TestClient) -> None:
    existing = create(client, patient("Known", identifier=(SYS, "cr1")))
    result = _run(client, _tx(_post(observation(f"Patient?identifier={SYS}|cr1"))))
    oid = _id_from_location(result["entry"][0]["response"]["location"])
    stored = client.get(f"/fhir/Observation/{oid}").json()
    assert stored["subject"]["reference"] == f"Patient/{existing['id']}"


def test_conditional_reference_without_match_is_400_and_with_several_412(client: TestClient
                                                                          ) -> None:
    before = history_total(client)
    body = outcome(client.post("/fhir", json=_tx(
        _post(patient("Other")),
        _post(observation(f"Patient?identifier={SYS}|none")),
    )), 400)
    assert any(e.startswith("Bundle.entry[1]") for e in expressions(body)), body
    assert history_total(client) == before
    create(client, patient("A", identifier=(SYS, "many")))
    create(client, patient("B", identifier=(SYS, "many")))
    before = history_total(client)
    outcome(client.post("/fhir", json=_tx(
        _post(patient("Other")),
        _post(observation(f"Patient?identifier={SYS}|many")),
    )), 412)
    assert history_total(client) == before


def test_if_none_exist_match_resolves_references_to_the_existing_resource(client: TestClient
                                                                          ) -> None:
    existing = create(client, patient("Existing", identifier=(SYS, "ine")))
    urn = "urn:uuid:7a1f9a7e-2222-4b8e-9a61-6f1b0d2b6d11"
    before = history_total(client)
    result = _run(client, _tx(
        _post(patient("Duplicate", identifier=(SYS, "ine")), urn,
              ifNoneExist=f"identifier={SYS}|ine"),
        _post(observation(urn)),
    ))
    first, second = result["entry"]
    assert first["response"]["status"].startswith("200"), first["response"]
    assert existing["id"] in first["response"]["location"]
    oid = _id_from_location(second["response"]["location"])
    stored = client.get(f"/fhir/Observation/{oid}").json()
    assert stored["subject"]["reference"] == f"Patient/{existing['id']}"
    assert history_total(client) == before + 1, "only the Observation is new"
    assert client.get(f"/fhir/Patient/{existing['id']}").json()["name"][0]["family"] == "Existing"


def test_if_none_exist_without_match_creates(client: TestClient) -> None:
    result = _run(client, _tx(_post(patient("New", identifier=(SYS, "ine2")),
                                    ifNoneExist=f"identifier={SYS}|ine2")))
    assert result["entry"][0]["response"]["status"].startswith("201")


def test_if_none_exist_naming_an_earlier_entry_matches_what_that_entry_resolved_to(
    client: TestClient
) -> None:
    """An ifNoneExist that names an earlier entry's fullUrl searches with that entry's id: a
    new entry's Observation is created; an entry matched to a stored Patient finds that
    Patient's stored Observation (200, nothing created)."""
    urn = "urn:uuid:7a1f9a7e-3333-4b8e-9a61-6f1b0d2b6d11"

    def bundle(cin: str) -> dict[str, Any]:
        return _tx(
            _post(patient("Named", identifier=(SYS, cin)), urn,
                  ifNoneExist=f"identifier={SYS}|{cin}"),
            _post(observation(urn), ifNoneExist=f"subject={urn}"),
        )

    first = _run(client, bundle("named-1"))
    assert [e["response"]["status"][:3] for e in first["entry"]] == ["201", "201"]
    observation_id = _id_from_location(first["entry"][1]["response"]["location"])
    before = history_total(client)
    again = _run(client, bundle("named-1"))
    assert [e["response"]["status"][:3] for e in again["entry"]] == ["200", "200"]
    assert _id_from_location(again["entry"][1]["response"]["location"]) == observation_id
    assert history_total(client) == before
    # a new member: its Observation is new too, whatever is stored for the other one
    other = _run(client, bundle("named-2"))
    assert [e["response"]["status"][:3] for e in other["entry"]] == ["201", "201"]
    assert _id_from_location(other["entry"][1]["response"]["location"]) != observation_id
    # the new entry among alternatives with a stored Patient: the stored one's Observation
    stored = _id_from_location(first["entry"][0]["response"]["location"])
    mixed = _run(client, _tx(
        _post(patient("Third", identifier=(SYS, "named-3")), urn,
              ifNoneExist=f"identifier={SYS}|named-3"),
        _post(observation(urn), ifNoneExist=f"subject={urn},Patient/{stored}"),
    ))
    assert [e["response"]["status"][:3] for e in mixed["entry"]] == ["201", "200"]
    assert _id_from_location(mixed["entry"][1]["response"]["location"]) == observation_id


def test_entries_run_in_spec_order_delete_post_put_get(client: TestClient) -> None:
    """GET runs after the writes, whatever its place in the Bundle."""
    old = create(client, patient("Old", identifier=(SYS, "ord")))
    result = _run(client, _tx(
        {"request": {"method": "GET", "url": f"Patient?identifier={SYS}|ord"}},
        _post(patient("New", identifier=(SYS, "ord"))),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    ))
    search = result["entry"][0]["resource"]
    assert search["resourceType"] == "Bundle"
    ids = [e["resource"]["id"] for e in search.get("entry", [])]
    new_id = _id_from_location(result["entry"][1]["response"]["location"])
    assert ids == [new_id], f"GET should see the POST and not the deleted {old['id']}: {ids}"
    assert result["entry"][2]["response"]["status"][:3] in ("200", "204")
    outcome(client.get(f"/fhir/Patient/{old['id']}"), 410)


def test_delete_runs_before_a_conditional_create_in_the_same_transaction(client: TestClient
                                                                        ) -> None:
    """http.html#trules: DELETEs are processed before POSTs, so ifNoneExist no longer
    matches the resource the same transaction deletes."""
    old = create(client, patient("Old", identifier=(SYS, "del-then-post")))
    result = _run(client, _tx(
        _post(patient("Replacement", identifier=(SYS, "del-then-post")),
              ifNoneExist=f"identifier={SYS}|del-then-post"),
        {"request": {"method": "DELETE", "url": f"Patient/{old['id']}"}},
    ))
    created = result["entry"][0]["response"]
    assert created["status"].startswith("201"), created
    new_id = _id_from_location(created["location"])
    assert new_id != old["id"]
    live = client.get("/fhir/Patient", params={"identifier": f"{SYS}|del-then-post"}).json()
    assert [e["resource"]["id"] for e in live.get("entry", [])] == [new_id]


def test_invalid_entry_fails_the_whole_transaction_listing_every_issue(client: TestClient
                                                                       ) -> None:
    before = history_total(client)
    bad = {"resourceType": "Patient", "unknownThing": 1, "active": "yes"}
    body = outcome(client.post("/fhir", json=_tx(
        _post(patient("Fine")),
        _post(bad),
        _post({"resourceType": "Observation"}),
    )), 400)
    got = expressions(body)
    for expected in ("Bundle.entry[1].resource.unknownThing", "Bundle.entry[1].resource.active",
                     "Bundle.entry[2].resource.status", "Bundle.entry[2].resource.code"):
        assert expected in got, f"{expected} not among {got}"
    assert history_total(client) == before, "nothing may be written"


def test_stale_if_match_rolls_back_every_entry(client: TestClient) -> None:
    a = create(client, patient("A"))
    b = create(client, patient("B"))
    before = history_total(client)
    body = outcome(client.post("/fhir", json=_tx(
        _put({**patient("A2"), "id": a["id"]}, ifMatch='W/"1"'),
        _post(patient("C")),
        _put({**patient("B2"), "id": b["id"]}, ifMatch='W/"5"'),
    )), 412)
    assert any(e.startswith("Bundle.entry[2]") for e in expressions(body)), body
    assert history_total(client) == before
    assert client.get(f"/fhir/Patient/{a['id']}").json()["name"][0]["family"] == "A"


def test_two_entries_for_the_same_resource_is_400(client: TestClient) -> None:
    before = history_total(client)
    outcome(client.post("/fhir", json=_tx(
        _put({**patient("X"), "id": "same"}),
        _put({**patient("Y"), "id": "same"}),
    )), 400)
    outcome(client.post("/fhir", json=_tx(
        _put({**patient("X"), "id": "same"}),
        {"request": {"method": "DELETE", "url": "Patient/same"}},
    )), 400)
    assert history_total(client) == before


def test_get_entries_in_a_transaction(client: TestClient) -> None:
    a = create(client, patient("A"))
    result = _run(client, _tx(
        {"request": {"method": "GET", "url": f"Patient/{a['id']}"}},
        {"request": {"method": "GET", "url": f"Patient?_id={a['id']}"}},
    ))
    read, search = result["entry"]
    assert read["response"]["status"].startswith("200")
    assert read["resource"]["id"] == a["id"]
    assert read["response"]["etag"] == 'W/"1"'
    assert search["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["resource"]["entry"]] == [a["id"]]


def test_patch_entry_with_a_binary_json_patch(client: TestClient) -> None:
    a = create(client, patient("Before"))
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    result = _run(client, _tx({"resource": binary,
                               "request": {"method": "PATCH", "url": f"Patient/{a['id']}"}}))
    response = result["entry"][0]["response"]
    assert response["status"].startswith("200"), response
    assert response["etag"] == 'W/"2"'
    assert client.get(f"/fhir/Patient/{a['id']}").json()["name"][0]["family"] == "After"


def test_patch_entry_with_a_failing_test_op_rolls_back(client: TestClient) -> None:
    a = create(client, patient("Before"))
    ops = [{"op": "test", "path": "/name/0/family", "value": "Nope"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    before = history_total(client)
    outcome(client.post("/fhir", json=_tx(
        _post(patient("Other")),
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{a['id']}"}},
    )), 422)
    assert history_total(client) == before


def test_delete_and_conditional_update_entries(client: TestClient) -> None:
    a = create(client, patient("A"))
    b = create(client, patient("B", identifier=(SYS, "cu")))
    result = _run(client, _tx(
        {"request": {"method": "DELETE", "url": f"Patient/{a['id']}"}},
        _put(patient("B2", identifier=(SYS, "cu")), url=f"Patient?identifier={SYS}|cu"),
    ))
    assert result["entry"][0]["response"]["status"][:3] in ("200", "204")
    assert _id_from_location(result["entry"][1]["response"]["location"]) == b["id"]
    outcome(client.get(f"/fhir/Patient/{a['id']}"), 410)
    assert client.get(f"/fhir/Patient/{b['id']}").json()["name"][0]["family"] == "B2"


def test_prefer_minimal_leaves_out_resources(client: TestClient) -> None:
    response = client.post("/fhir", json=_tx(_post(patient("A"))),
                           headers={"Prefer": "return=minimal"})
    assert response.status_code == 200
    entry = response.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["status"].startswith("201")


def test_empty_transaction_is_fine(client: TestClient) -> None:
    result = _run(client, {"resourceType": "Bundle", "type": "transaction"})
    assert result["type"] == "transaction-response"
    assert not result.get("entry")


def test_bundle_that_is_not_batch_or_transaction_is_400(client: TestClient) -> None:
    outcome(client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}), 400)
    outcome(client.post("/fhir", json=patient("A")), 400)
    outcome(client.post("/fhir", json=_tx({"resource": patient("A")})), 400)


def test_if_none_exist_with_several_matches_is_412(client: TestClient) -> None:
    create(client, patient("A", identifier=(SYS, "ine-many")))
    create(client, patient("B", identifier=(SYS, "ine-many")))
    before = history_total(client)
    outcome(client.post("/fhir", json=_tx(
        _post(patient("C")),
        _post(patient("D", identifier=(SYS, "ine-many")),
              ifNoneExist=f"identifier={SYS}|ine-many"),
    )), 412)
    assert history_total(client) == before


def test_stale_if_match_on_a_delete_entry_is_412(client: TestClient) -> None:
    a = create(client, patient("A"))
    before = history_total(client)
    outcome(client.post("/fhir", json=_tx(
        _post(patient("C")),
        {"request": {"method": "DELETE", "url": f"Patient/{a['id']}", "ifMatch": 'W/"3"'}},
    )), 412)
    assert history_total(client) == before
    assert client.get(f"/fhir/Patient/{a['id']}").status_code == 200
