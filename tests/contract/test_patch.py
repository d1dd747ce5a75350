"""PATCH: JSON Patch (application/json-patch+json), FHIRPath Patch (a Parameters resource,
application/fhir+json) and JSON Merge Patch (application/merge-patch+json, or a JSON object as
application/json), all through the same checks."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support import TestClient, create, expressions, history_total, outcome, patient

PATCH = {"Content-Type": "application/json-patch+json"}

# Well-formed JSON that is not a well-formed JSON Patch (RFC 6902 / RFC 6901), with the
# expression of the offending member of the patch document.
MALFORMED: list[tuple[Any, str | None]] = [
    ({"op": "replace"}, None),
    ([{"op": "add", "path": "a", "value": 1}], "[0].path"),  # no leading slash
    ([{"op": "add", "path": "/name/x~9", "value": 1}], "[0].path"),  # bad escape
    ([{"op": "remove", "path": "/name~"}], "[0].path"),
    ([{"op": "add", "path": 7, "value": 1}], "[0].path"),
    ([{"op": "move", "from": "name", "path": "/x"}], "[0].from"),
    ([{"op": "copy", "from": "/a~7", "path": "/x"}], "[0].from"),
    ([{"op": "move", "path": "/x"}], "[0].from"),
    ([{"op": "add", "path": "/active"}], "[0].value"),
    ([{"op": "test", "path": "/active"}], "[0].value"),
    ([{"op": "explode", "path": "/x"}], "[0].op"),
    ([{"op": 3, "path": "/x"}], "[0].op"),
    ([{"path": "/x"}], "[0].op"),
    ([{"op": "remove"}], "[0].path"),
    ([{"op": "remove", "path": "/gender"}, "remove"], "[1]"),
    ([None], "[0]"),
    ([[]], "[0]"),
]


def test_patch_replace_makes_a_new_version(client: TestClient) -> None:
    pid = create(client, patient("Before", gender="female"))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"},
           {"op": "remove", "path": "/gender"},
           {"op": "add", "path": "/active", "value": True}]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    body = response.json()
    assert body["name"][0]["family"] == "After"
    assert "gender" not in body and body["active"] is True
    assert body["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}").json()["name"][0]["family"] == "After"


def test_patch_test_operation_failure_is_422(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "test", "path": "/name/0/family", "value": "Other"},
           {"op": "replace", "path": "/name/0/family", "value": "After"}]
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def test_patch_producing_an_invalid_resource_is_rejected(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    before = history_total(client)
    for ops in (
        [{"op": "add", "path": "/notAnElement", "value": 1}],
        [{"op": "replace", "path": "/name/0/family", "value": 12}],
        [{"op": "add", "path": "/birthDate", "value": "2020-02-30"}],
    ):
        response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH)
        assert 400 <= response.status_code < 500, f"{ops}: {response.status_code}"
        body = outcome(response)
        assert any(i.get("expression") for i in body["issue"]), body
    assert history_total(client) == before


def test_patch_changing_id_or_type_is_rejected(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    for ops in ([{"op": "replace", "path": "/id", "value": "other"}],
                [{"op": "replace", "path": "/resourceType", "value": "Group"}]):
        body = outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
        assert expressions(body), body
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def test_patch_with_a_path_that_does_not_exist_is_4xx(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "replace", "path": "/telecom/5/value", "value": "x"}]
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


@pytest.mark.parametrize(("doc", "expression"), MALFORMED, ids=lambda v: json.dumps(v)[:40])
def test_malformed_patch_document_is_400_and_writes_nothing(
    client: TestClient, doc: Any, expression: str | None
) -> None:
    pid = create(client, patient("Before", gender="female"))["id"]
    before = history_total(client)
    for url in (f"/fhir/Patient/{pid}", "/fhir/Patient/nobody", "/fhir/Patient?gender=female"):
        body = outcome(client.patch(url, json=doc, headers=PATCH), 400)
        if expression is not None:
            assert expressions(body) == [expression], (url, body)
    assert history_total(client) == before
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


def _binary(doc: Any) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(doc).encode()).decode()}


@pytest.mark.parametrize(("doc", "expression"), MALFORMED, ids=lambda v: json.dumps(v)[:40])
def test_malformed_patch_in_a_batch_fails_only_its_entry(
    client: TestClient, doc: Any, expression: str | None
) -> None:
    pid = create(client, patient("Before"))["id"]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _binary(doc), "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
        {"resource": _binary(doc), "request": {"method": "PATCH", "url": "Patient/nobody"}},
        {"resource": patient("Other"), "request": {"method": "POST", "url": "Patient"}},
    ]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    for index in (0, 1):
        reply = entries[index]["response"]
        assert reply["status"].startswith("400"), reply
        assert expressions(reply["outcome"]) == [f"Bundle.entry[{index}].resource.data"]
    assert entries[2]["response"]["status"].startswith("201")
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'


@pytest.mark.parametrize(("doc", "expression"), MALFORMED, ids=lambda v: json.dumps(v)[:40])
def test_malformed_patch_in_a_transaction_is_400_and_writes_nothing(
    client: TestClient, doc: Any, expression: str | None
) -> None:
    pid = create(client, patient("Before"))["id"]
    before = history_total(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Other"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": _binary(doc), "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
    ]}
    body = outcome(client.post("/fhir", json=bundle), 400)
    assert expressions(body) == ["Bundle.entry[1].resource.data"]
    assert history_total(client) == before


def test_patch_that_cannot_be_applied_names_the_operation(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    before = history_total(client)
    for ops in (
        [{"op": "add", "path": "/active", "value": True},
         {"op": "replace", "path": "/telecom/5/value", "value": "x"}],
        [{"op": "remove", "path": "/gender"}],
        [{"op": "add", "path": "/name/-/family", "value": "x"}],
        [{"op": "move", "from": "/name", "path": "/name/0/x"}],
    ):
        body = outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 422)
        assert expressions(body) == [f"[{len(ops) - 1}].path"], (ops, body)
    assert history_total(client) == before


def test_patch_with_wrong_content_type_is_415(client: TestClient) -> None:
    pid = create(client, patient("Before"))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    for ctype in ("text/plain", "application/xml", "application/fhir+xml"):
        outcome(client.patch(f"/fhir/Patient/{pid}", json=ops,
                             headers={"Content-Type": ctype}), 415)
    # application/fhir+json is a FHIRPath Patch: a JSON Patch array is not one
    body = outcome(client.patch(f"/fhir/Patient/{pid}", json=ops,
                                headers={"Content-Type": "application/fhir+json"}), 400)
    assert "Parameters" in body["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").headers["etag"] == 'W/"1"'
    # an array as application/json is a JSON Patch
    plain = client.patch(f"/fhir/Patient/{pid}", json=ops,
                         headers={"Content-Type": "application/json"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["name"][0]["family"] == "After"


def test_patch_missing_is_404_and_deleted_is_410(client: TestClient) -> None:
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    outcome(client.patch("/fhir/Patient/nobody", json=ops, headers=PATCH), 404)
    pid = create(client, patient("Before"))["id"]
    client.delete(f"/fhir/Patient/{pid}")
    outcome(client.patch(f"/fhir/Patient/{pid}", json=ops, headers=PATCH), 410)


def test_conditional_patch(client: TestClient) -> None:
    pid = create(client, patient("Before", identifier=("urn:s", "p1")))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "After"}]
    response = client.patch("/fhir/Patient?identifier=urn:s|p1", json=ops, headers=PATCH)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == pid


# -- FHIRPath Patch ----------------------------------------------------------------------------

FHIRPATH = {"Content-Type": "application/fhir+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def _op(kind: str, path: str, **parts: object) -> dict[str, object]:
    listed: list[dict[str, object]] = [
        {"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            assert isinstance(value, dict)
            listed.append({"name": "value", **value})
        elif isinstance(value, int):
            listed.append({"name": name, "valueInteger": value})
        else:
            listed.append({"name": name, "valueString": value})
    return {"name": "operation", "part": listed}


def _fhirpath(*ops: dict[str, object]) -> dict[str, object]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


def _member() -> dict[str, Any]:
    body = patient("Before", gender="female", birthDate="1980-01-01",
                   telecom=[{"system": "phone", "value": "555-0100"}])
    body["identifier"] = [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}]
    return body


def test_fhirpath_patch_every_operation_type(client: TestClient) -> None:
    pid = create(client, _member())["id"]
    doc = _fhirpath(
        _op("replace", "Patient.birthDate", value={"valueDate": "1981-02-03"}),
        _op("delete", "Patient.identifier.where(system='urn:a')"),
        _op("add", "Patient", name="active", value={"valueBoolean": True}),
        _op("add", "Patient", name="identifier",
            value={"valueIdentifier": {"system": "urn:c", "value": "3"}}),
        _op("insert", "Patient.identifier", index=0,
            value={"valueIdentifier": {"system": "urn:z", "value": "0"}}),
        _op("move", "Patient.identifier", source=2, destination=1),
        _op("add", "Patient", name="contact", value={"part": [
            {"name": "gender", "valueCode": "male"},
            {"name": "name", "valueHumanName": {"family": "Kin"}}]}),
        _op("replace", "Patient.name[0].family", value={"valueString": "After"}),
        _op("delete", "Patient.deceased"),  # nothing there: nothing happens
    )
    response = client.patch(f"/fhir/Patient/{pid}", json=doc, headers=FHIRPATH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["etag"] == 'W/"2"'
    assert body["birthDate"] == "1981-02-03"
    assert body["active"] is True
    assert [i["system"] for i in body["identifier"]] == ["urn:z", "urn:c", "urn:b"]
    assert body["contact"] == [{"gender": "male", "name": {"family": "Kin"}}]
    assert body["name"][0]["family"] == "After"
    assert client.get(f"/fhir/Patient/{pid}").json()["birthDate"] == "1981-02-03"


def test_fhirpath_patch_paths_filtered_by_skip_take_and_date_literals(client: TestClient) -> None:
    """The filters a path may end with (fhirpatch.html) include ``skip``/``take``, and its
    criteria are FHIRPath with date literals."""
    pid = create(client, _member())["id"]
    doc = _fhirpath(
        _op("delete", "Patient.identifier.skip(1)"),
        _op("replace", "Patient.identifier.take(1).value", value={"valueString": "one"}),
        _op("replace", "Patient.where(birthDate < @1990-01-01).gender",
            value={"valueCode": "other"}),
        _op("delete", "Patient.where(birthDate > @1990-01-01).telecom"),  # not selected
    )
    response = client.patch(f"/fhir/Patient/{pid}", json=doc, headers=FHIRPATH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identifier"] == [{"system": "urn:a", "value": "one"}]
    assert body["gender"] == "other"
    assert body["telecom"] == [{"system": "phone", "value": "555-0100"}]


def test_fhirpath_patch_errors_point_at_the_operation_and_change_nothing(client: TestClient
                                                                         ) -> None:
    pid = create(client, _member())["id"]
    before = history_total(client)
    cases = [
        # malformed documents: 400
        ({"resourceType": "Patient"}, 400, "Parameters"),
        (_fhirpath(_op("explode", "Patient.name")), 400, "Parameters.parameter[0].part[0]"),
        (_fhirpath(_op("replace", "Patient.name")), 400, "Parameters.parameter[0]"),
        (_fhirpath(_op("delete", "Patient.name.where(")), 400, "Parameters.parameter[0].part[1]"),
        # documents that cannot be applied: 422
        (_fhirpath(_op("delete", "Patient.identifier")), 422, "Parameters.parameter[0]"),
        (_fhirpath(_op("add", "Patient", name="birthDate", value={"valueDate": "2000-01-01"})),
         422, "Parameters.parameter[0]"),
        (_fhirpath(_op("delete", "Patient.gender"),
                   _op("add", "Patient", name="nonsense", value={"valueString": "x"})),
         422, "Parameters.parameter[1]"),
        (_fhirpath(_op("insert", "Patient.identifier", index=9,
                       value={"valueIdentifier": {"value": "x"}})), 422, "Parameters.parameter[0]"),
    ]
    for doc, status, expression in cases:
        body = outcome(client.patch(f"/fhir/Patient/{pid}", json=doc, headers=FHIRPATH), status)
        assert body["issue"][0]["expression"] == [expression], (doc, body)
    # a result that is not a valid Patient: the base validation of every patch result (422)
    bad = _fhirpath(_op("replace", "Patient.gender", value={"valueCode": "sometimes"}))
    invalid = outcome(client.patch(f"/fhir/Patient/{pid}", json=bad, headers=FHIRPATH), 422)
    assert invalid["issue"][0]["expression"] == ["Patient.gender"]
    changing_id = _fhirpath(_op("replace", "Patient.id", value={"valueId": "other"}))
    outcome(client.patch(f"/fhir/Patient/{pid}", json=changing_id, headers=FHIRPATH), 422)
    assert history_total(client) == before


def test_fhirpath_patch_in_a_transaction(client: TestClient) -> None:
    pid = create(client, _member())["id"]
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                          "entry": [{
        "resource": _fhirpath(_op("replace", "Patient.gender", value={"valueCode": "other"})),
        "request": {"method": "PATCH", "url": f"Patient/{pid}"}}]})
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "other"


# -- JSON Merge Patch --------------------------------------------------------------------------


def test_merge_patch_merges_objects_removes_nulls_and_replaces_arrays(client: TestClient
                                                                      ) -> None:
    pid = create(client, _member())["id"]
    doc = {"gender": None, "birthDate": "1990-05-06",
           "telecom": [{"system": "email", "value": "m@example.org"}],
           "maritalStatus": {"text": "Married"}}
    response = client.patch(f"/fhir/Patient/{pid}", json=doc, headers=MERGE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "gender" not in body
    assert body["birthDate"] == "1990-05-06"
    assert body["telecom"] == [{"system": "email", "value": "m@example.org"}]
    assert body["maritalStatus"] == {"text": "Married"}
    assert body["name"][0]["family"] == "Before"  # untouched
    # nested objects merge member by member
    again = client.patch(f"/fhir/Patient/{pid}", json={"maritalStatus": {"text": None,
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                    "code": "M"}]}}, headers=MERGE)
    assert again.status_code == 200, again.text
    assert again.json()["maritalStatus"] == {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]}


def test_merge_patch_as_application_json_is_what_fhirpy_sends(client: TestClient) -> None:
    pid = create(client, _member())["id"]
    response = client.patch(
        f"/fhir/Patient/{pid}",
        json={"resourceType": "Patient", "id": pid, "active": False},
        headers={"Content-Type": "application/json", "If-Match": 'W/"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False


def test_merge_patch_errors_change_nothing(client: TestClient) -> None:
    pid = create(client, _member())["id"]
    before = history_total(client)
    outcome(client.patch(f"/fhir/Patient/{pid}", json=["not", "an", "object"],
                         headers=MERGE), 400)
    outcome(client.patch(f"/fhir/Patient/{pid}", json={"gender": "sometimes"},
                         headers=MERGE), 422)
    outcome(client.patch(f"/fhir/Patient/{pid}", json={"id": "other"}, headers=MERGE), 422)
    outcome(client.patch(f"/fhir/Patient/{pid}", json={"resourceType": "Observation"},
                         headers=MERGE), 422)
    outcome(client.patch(f"/fhir/Patient/{pid}", json={"active": True},
                         headers={**MERGE, "If-Match": 'W/"7"'}), 412)
    assert history_total(client) == before


def test_merge_patch_in_a_batch_binary(client: TestClient) -> None:
    import base64
    import json

    pid = create(client, _member())["id"]
    data = base64.b64encode(json.dumps({"active": True}).encode()).decode()
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [{
        "resource": {"resourceType": "Binary", "contentType": "application/merge-patch+json",
                     "data": data},
        "request": {"method": "PATCH", "url": f"Patient/{pid}"}}]})
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"].startswith("200")
    assert client.get(f"/fhir/Patient/{pid}").json()["active"] is True
