"""Error answers: always an OperationOutcome, with the right status and issue expressions."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from tests.support import (
    FHIR_JSON,
    TestClient,
    create,
    expressions,
    history_total,
    outcome,
    patient,
)


def test_unknown_resource_type_is_404(client: TestClient) -> None:
    outcome(client.get("/fhir/Foo"), 404)
    outcome(client.get("/fhir/Foo/1"), 404)
    outcome(client.post("/fhir/Foo", json={"resourceType": "Foo"}), 404)
    outcome(client.put("/fhir/Foo/1", json={"resourceType": "Foo", "id": "1"}), 404)


def test_malformed_json_is_400(client: TestClient) -> None:
    for raw in (b"{", b'{"resourceType": "Patient",}', b"not json", b'{"a": 1} trailing'):
        outcome(client.post("/fhir/Patient", content=raw,
                            headers={"Content-Type": FHIR_JSON}), 400)


def test_body_resource_type_differs_from_url_is_400(client: TestClient) -> None:
    body = outcome(client.post("/fhir/Patient", json={"resourceType": "Observation"}), 400)
    assert any("resourceType" in e for e in expressions(body)), body
    outcome(client.put("/fhir/Patient/a1", json={"resourceType": "Group", "id": "a1"}), 400)


def test_body_id_differs_from_url_id_is_400(client: TestClient) -> None:
    body = outcome(client.put("/fhir/Patient/a1", json={**patient("A"), "id": "a2"}), 400)
    assert any(e.endswith("id") for e in expressions(body)), body
    outcome(client.put("/fhir/Patient/a1", json=patient("A")), 400)  # no id at all
    assert client.get("/fhir/Patient/a1").status_code == 404
    assert client.get("/fhir/Patient/a2").status_code == 404


def test_invalid_resource_lists_every_error(client: TestClient) -> None:
    bad = {
        "resourceType": "Patient",
        "notAnElement": 1,  # unknown element
        "active": "yes",  # wrong datatype
        "link": [{"type": "seealso"}],  # missing required 'other'
        "birthDate": "2020-13-45",  # invalid primitive
        "name": [{"family": ""}],  # empty value
    }
    for response in (client.post("/fhir/Patient", json=bad),
                     client.put("/fhir/Patient/v1", json={**bad, "id": "v1"})):
        body = outcome(response, 400)
        got = expressions(body)
        for expected in ("Patient.notAnElement", "Patient.active", "Patient.link[0].other",
                         "Patient.birthDate", "Patient.name[0].family"):
            assert expected in got, f"{expected} not among {got}"
        assert all(i["severity"] in ("error", "fatal") for i in body["issue"])
    assert client.get("/fhir/Patient/v1").status_code == 404


def test_body_over_the_limit_is_413(client: TestClient, make_client: Any) -> None:
    big = patient("A", text={"status": "generated",
                             "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                                    + "x" * 3000 + "</div>"})
    with make_client(max_body_bytes=1024) as small:
        outcome(small.post("/fhir/Patient", json=big), 413)
        outcome(small.put("/fhir/Patient/big", json={**big, "id": "big"}), 413)
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"resource": big, "request": {"method": "POST", "url": "Patient"}}]}
        outcome(small.post("/fhir", json=bundle), 413)
        assert small.post("/fhir/Patient", json=patient("small")).status_code == 201


def test_unknown_version_is_404(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    outcome(client.get(f"/fhir/Patient/{pid}/_history/2"), 404)
    outcome(client.get(f"/fhir/Patient/{pid}/_history/0"), 404)
    outcome(client.get(f"/fhir/Patient/{pid}/_history/abc"), (400, 404))
    outcome(client.get("/fhir/Patient/nobody/_history/1"), 404)


def test_method_not_allowed_is_405(client: TestClient) -> None:
    outcome(client.post("/fhir/Patient/123", json=patient("A")), 405)
    outcome(client.put("/fhir/Patient/123/_history/1", json=patient("A")), 405)
    outcome(client.delete("/fhir/Patient/123/_history/1"), 405)


def test_invalid_id_in_url_is_400(client: TestClient) -> None:
    body = outcome(client.get("/fhir/Patient/bad id!"), 400)
    assert expressions(body), body
    outcome(client.put("/fhir/Patient/bad id!", json={**patient("A"), "id": "bad id!"}), 400)
    outcome(client.get("/fhir/Patient/" + "x" * 65), 400)


def test_failed_writes_change_nothing(client: TestClient) -> None:
    pid = create(client, patient("A"))["id"]
    before = history_total(client)
    attempts = [
        client.post("/fhir/Patient", json={"resourceType": "Patient", "bogus": True}),
        client.put(f"/fhir/Patient/{pid}", json={**patient("B"), "id": pid, "gender": "x"}),
        client.put(f"/fhir/Patient/{pid}", json={**patient("B"), "id": pid},
                   headers={"If-Match": 'W/"7"'}),
        client.patch(f"/fhir/Patient/{pid}", json=[{"op": "add", "path": "/x", "value": 1}],
                     headers={"Content-Type": "application/json-patch+json"}),
        client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"9"'}),
        client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": patient("C"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "x": 1},
             "request": {"method": "POST", "url": "Patient"}},
        ]}),
    ]
    for response in attempts:
        assert 400 <= response.status_code < 500, response.text
        outcome(response)
    assert history_total(client) == before
    current = client.get(f"/fhir/Patient/{pid}")
    assert current.json()["name"][0]["family"] == "A" and current.headers["etag"] == 'W/"1"'


# -- a deterministic fuzz-ish sweep: never a 5xx, always an OperationOutcome --------------------

_P = "/fhir/Patient"
_J = {"Content-Type": FHIR_JSON}
_JP = {"Content-Type": "application/json-patch+json"}


def _cases() -> list[tuple[str, str, dict[str, str], bytes | None]]:
    bodies: list[Any] = [
        None, [], {}, 1, "x", True, [1, 2],
        {"resourceType": None}, {"resourceType": 5}, {"resourceType": ["Patient"]},
        {"resourceType": "Patient", "id": 5},
        {"resourceType": "Patient", "id": ""},
        {"resourceType": "Patient", "id": None},
        {"resourceType": "Patient", "name": "Smith"},
        {"resourceType": "Patient", "name": [None]},
        {"resourceType": "Patient", "name": [{"family": None}]},
        {"resourceType": "Patient", "name": [{"given": "A"}]},
        {"resourceType": "Patient", "birthDate": 20200101},
        {"resourceType": "Patient", "birthDate": "2020-02-30"},
        {"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"},
        {"resourceType": "Patient", "meta": "x"},
        {"resourceType": "Patient", "meta": {"versionId": 3}},
        {"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]},
        {"resourceType": "Patient", "contained": [1]},
        {"resourceType": "Patient", "extension": [{"url": 1}]},
        {"resourceType": "Patient", "_gender": {"extension": "x"}},
        {"resourceType": "Patient", "multipleBirthInteger": 10**30},
        {"resourceType": "Patient", "multipleBirthInteger": 1.5},
        {"resourceType": "Patient", "text": {"status": "generated", "div": 5}},
        {"resourceType": "Patient", "gender": "\u0000"},
        {"resourceType": "Patient", "name": [{"family": "\ud800"}]},
        {"resourceType": "Patient", "identifier": [{"system": 1, "value": {}}]},
        {"resourceType": "Patient", "a" * 5000: 1},
        {"resourceType": "Observation", "status": "final", "code": {}, "valueQuantity": "1"},
    ]
    cases: list[tuple[str, str, dict[str, str], bytes | None]] = []
    for body in bodies:
        raw = json.dumps(body).encode() if body is not None else b""
        cases.append(("POST", _P, _J, raw))
        cases.append(("PUT", f"{_P}/fz", _J, raw))
    raws = [b"\xff\xfe", b"\x00", b"{" * 5000, b"[" * 100000, b'{"resourceType":"Patient"',
            b"\"\\ud800\"", b"1e999999", b'{"a":' + b"1" * 5000 + b"}", b"   ", b"NaN"]
    for raw in raws:
        cases.append(("POST", _P, _J, raw))
        cases.append(("POST", "/fhir", _J, raw))
        cases.append(("PATCH", f"{_P}/fz", _JP, raw))
    patches: list[Any] = [
        {}, [None], [{"op": "add"}], [{"op": "add", "path": 5, "value": 1}],
        [{"op": "move", "from": "/nope", "path": "/x"}],
        [{"op": "copy", "from": "/name", "path": "/name/99"}],
        [{"op": "remove", "path": "/"}], [{"op": "replace", "path": "", "value": []}],
        [{"op": "replace", "path": "", "value": {"resourceType": "Patient", "id": "fz"}}],
        [{"op": "add", "path": "/name/-", "value": {"family": 1}}],
        [{"op": "test", "path": "/meta/versionId", "value": 1}],
        [{"op": "add", "path": "a", "value": 1}], [{"op": "add", "path": "/a~9", "value": 1}],
        [{"op": "move", "from": "x", "path": "/a"}], [{"op": "copy", "from": "/~2", "path": "/a"}],
        [{"op": "add", "path": "/name/-/family", "value": "x"}],
    ]
    for doc in patches:
        cases.append(("PATCH", f"{_P}/fz", _JP, json.dumps(doc).encode()))
        cases.append(("PATCH", f"{_P}/absent", _JP, json.dumps(doc).encode()))
    urls = [
        "/fhir/Patient/%00", "/fhir/Patient/..", "/fhir/Patient/a/_history/-1",
        "/fhir/Patient/a/_history/99999999999999999999999",
        "/fhir/Patient?_count=99999999999999999999", "/fhir/Patient?_count=abc",
        "/fhir/Patient?_id=", "/fhir/Patient?identifier=", "/fhir/Patient?identifier=%ff",
        "/fhir/Patient?_lastUpdated=gt9999-99-99", "/fhir/Patient?_lastUpdated=",
        "/fhir/Patient?_cursor=abc", "/fhir/Patient?_cursor=99999999999999999999999999",
        "/fhir/Patient?_cursor=-5", "/fhir/_history?_since=2020-01-01T00:00:00+99:99",
        "/fhir/_history?_at=2020-13", "/fhir/_history?_count=-1",
        "/fhir/_history?_cursor=99999999999999999999999999",
        "/fhir/Patient?_format=%ff", "/fhir/Patient?&&&=&", "/fhir/patient", "/fhir/PATIENT/1",
        "/fhir/Patient/a/b/c/d", "/fhir/_search", "/fhir/Patient/a/_history/1/x",
        "/fhir/Patient?_id=" + "a," * 2000,
        "/fhir/Patient/a/_history/%C2%B2", "/fhir/Patient?_count=%C2%B2",
        "/fhir/Patient?_revinclude=Observation:subject&_count=1000",
        "/fhir/Organization?_include:iterate=Organization:partof&_count=1000",
        "/fhir/Patient?_revinclude:iterate=*&_include:iterate=*",
        "/fhir/Patient/fz/$everything?_count=1000", "/fhir/_history?_count=1000",
        "/fhir/Patient?_cursor=%C2%B2", "/fhir/_history?_count=%C2%B2",
        "/fhir/_history?_cursor=%C2%B2", "/fhir/Patient?_count=%D9%A1",
    ]
    for url in urls:
        cases.append(("GET", url, {}, None))
    headers: list[dict[str, str]] = [
        {"If-None-Match": "garbage"}, {"If-Modified-Since": "yesterday"},
        {"If-Modified-Since": "Mon, 99 Foo 2020 99:99:99 GMT"},
        {"Accept": ";;;,,,"}, {"Accept": "application/fhir+json; q=abc"},
        {"Accept": "application/fhir+json; fhirVersion"}, {"Prefer": "return"},
        {"Prefer": "=;=;"},
    ]
    for header in headers:
        cases.append(("GET", f"{_P}/fz", header, None))
    write_headers: list[dict[str, str]] = [
        {"If-Match": "W/\"abc\""}, {"If-Match": '"99999999999999999999999999"'},
        {"If-Match": "*"}, {"If-None-Exist": "%%%"}, {"If-None-Exist": "identifier"},
        {"If-None-Exist": "_id=" + "x" * 200},
        {"Content-Type": "application/fhir+json; fhirVersion=1.0"},
        {"Content-Type": ";"}, {"Content-Length": "abc"},
        {"Content-Encoding": "gzip"}, {"Content-Encoding": "br"},
        {"Content-Encoding": "gzip, gzip"}, {"Content-Encoding": ""},
    ]
    zipped = {**_J, "Content-Encoding": "gzip"}
    bomb = gzip.compress(b" " * 20_000_000, compresslevel=9)  # 20 MB in ~20 KB: 413
    cut = gzip.compress(b'{"resourceType":"Patient"}')[:-8]
    for raw in (bomb, cut, b"\x1f\x8b" + b"\x00" * 20):
        cases.append(("POST", _P, zipped, raw))
        cases.append(("POST", "/fhir", zipped, raw))
    for header in write_headers:
        cases.append(("POST", _P, {**_J, **header}, b'{"resourceType":"Patient"}'))
        cases.append(("PUT", f"{_P}/fz", {**_J, **header},
                      b'{"resourceType":"Patient","id":"fz"}'))
    return cases


CASES = _cases()


def test_fuzz_list_is_big_enough() -> None:
    assert len(CASES) >= 50


def test_malformed_requests_never_5xx_and_always_answer_an_operation_outcome(
    client: TestClient,
) -> None:
    client.put(f"{_P}/fz", json={**patient("Fuzz"), "id": "fz"})
    failures: list[str] = []
    for method, url, headers, body in CASES:
        response = client.request(method, url, headers=headers, content=body)
        label = f"{method} {url[:60]} {headers} {(body or b'')[:50]!r}"
        if response.status_code >= 500:
            failures.append(f"{label} -> {response.status_code} {response.text[:200]}")
            continue
        if response.status_code < 300 or response.status_code == 304:
            continue
        try:
            data = response.json()
        except ValueError:
            failures.append(f"{label} -> {response.status_code} non-JSON body")
            continue
        if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
            failures.append(f"{label} -> {response.status_code} not an OperationOutcome")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", ["/fhir/Patient/fz", "/fhir/Patient", "/fhir/_history",
                                  "/fhir/Patient/fz/_history", "/fhir/metadata"])
def test_error_outcomes_use_the_fhir_media_type(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Accept": "image/png"})
    outcome(response, 406)
    assert response.headers["content-type"].startswith(FHIR_JSON)


@pytest.mark.parametrize("url", [
    "/fhir/Patient/fz/_history/%C2%B2",  # '²': str.isdigit() is True, int() fails
    "/fhir/Patient?_count=%C2%B2",
    "/fhir/Patient?_cursor=%C2%B2",
    "/fhir/_history?_count=%C2%B2",
    "/fhir/Patient/fz/_history?_cursor=%C2%B2",
])
def test_non_ascii_digits_in_numbers_are_4xx_not_500(client: TestClient, url: str) -> None:
    client.put(f"{_P}/fz", json={**patient("Fuzz"), "id": "fz"})
    response = client.get(url)
    assert 400 <= response.status_code < 500, f"{url}: {response.status_code}"
    outcome(response)


@pytest.mark.parametrize("url", [
    "/fhir/Patient/fz/_history/99999999999999999999999",
    "/fhir/Patient?_cursor=99999999999999999999999999",
    "/fhir/_history?_cursor=99999999999999999999999999",
])
def test_out_of_range_numbers_are_not_500(client: TestClient, url: str) -> None:
    client.put(f"{_P}/fz", json={**patient("Fuzz"), "id": "fz"})
    response = client.get(url)
    assert response.status_code < 500, f"{url}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        outcome(response)

