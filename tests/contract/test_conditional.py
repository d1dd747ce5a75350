"""Conditional create (If-None-Exist), conditional update and conditional delete."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from tests.support import FHIR_JSON, TestClient, create, history_total, outcome, patient

SYS = "urn:calaim:cin"


def _post(client: TestClient, body: dict, criteria: str):  # type: ignore[no-untyped-def]
    return client.post("/fhir/Patient", json=body,
                       headers={"Content-Type": FHIR_JSON, "If-None-Exist": criteria})


def test_conditional_create_no_match_creates(client: TestClient) -> None:
    response = _post(client, patient("A", identifier=(SYS, "1")), f"identifier={SYS}|1")
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == 'W/"1"'


def test_conditional_create_one_match_returns_it_without_a_new_version(client: TestClient
                                                                       ) -> None:
    existing = create(client, patient("A", identifier=(SYS, "1")))
    before = history_total(client)
    response = _post(client, patient("Different", identifier=(SYS, "1")), f"identifier={SYS}|1")
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"1"'
    assert existing["id"] in response.headers.get("location", ""), response.headers
    # the default is return=representation: the matched resource, unchanged, is the body
    assert response.json()["id"] == existing["id"]
    assert response.json()["name"][0]["family"] == "A"
    assert history_total(client) == before, "a matched conditional create writes nothing"


def test_conditional_create_two_matches_is_412(client: TestClient) -> None:
    create(client, patient("A", identifier=(SYS, "dup")))
    create(client, patient("B", identifier=(SYS, "dup")))
    before = history_total(client)
    outcome(_post(client, patient("C", identifier=(SYS, "dup")), f"identifier={SYS}|dup"), 412)
    assert history_total(client) == before


def test_conditional_create_with_bad_criteria_is_400(client: TestClient) -> None:
    outcome(_post(client, patient("A"), "nonsense=1"), 400)


def test_conditional_update_no_match_creates_201(client: TestClient) -> None:
    response = client.put(f"/fhir/Patient?identifier={SYS}|new",
                          json=patient("A", identifier=(SYS, "new")))
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_conditional_update_one_match_updates_that_resource(client: TestClient) -> None:
    existing = create(client, patient("A", identifier=(SYS, "u1")))
    response = client.put(f"/fhir/Patient?identifier={SYS}|u1",
                          json=patient("Updated", identifier=(SYS, "u1")))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == existing["id"]
    assert response.headers["etag"] == 'W/"2"'
    current = client.get(f"/fhir/Patient/{existing['id']}").json()
    assert current["name"][0]["family"] == "Updated"
    same_id = client.put(f"/fhir/Patient?identifier={SYS}|u1",
                         json={**patient("Again", identifier=(SYS, "u1")), "id": existing["id"]})
    assert same_id.status_code == 200, same_id.text


def test_conditional_update_body_id_differing_from_the_match_is_400(client: TestClient) -> None:
    existing = create(client, patient("A", identifier=(SYS, "u2")))
    response = client.put(f"/fhir/Patient?identifier={SYS}|u2",
                          json={**patient("B", identifier=(SYS, "u2")), "id": "someone-else"})
    outcome(response, 400)
    assert client.get(f"/fhir/Patient/{existing['id']}").headers["etag"] == 'W/"1"'


def test_conditional_update_two_matches_is_412(client: TestClient) -> None:
    create(client, patient("A", identifier=(SYS, "u3")))
    create(client, patient("B", identifier=(SYS, "u3")))
    before = history_total(client)
    outcome(client.put(f"/fhir/Patient?identifier={SYS}|u3", json=patient("C")), 412)
    assert history_total(client) == before


def test_conditional_delete_one_match_deletes_it(client: TestClient) -> None:
    existing = create(client, patient("A", identifier=(SYS, "d1")))
    keep = create(client, patient("B", identifier=(SYS, "d-other")))
    response = client.delete(f"/fhir/Patient?identifier={SYS}|d1")
    assert response.status_code in (200, 204), response.text
    outcome(client.get(f"/fhir/Patient/{existing['id']}"), 410)
    assert client.get(f"/fhir/Patient/{keep['id']}").status_code == 200


def test_conditional_delete_no_match_is_success(client: TestClient) -> None:
    response = client.delete(f"/fhir/Patient?identifier={SYS}|nothing")
    assert response.status_code in (200, 204), response.text


def test_conditional_delete_two_matches_is_412(client: TestClient) -> None:
    a = create(client, patient("A", identifier=(SYS, "d2")))
    b = create(client, patient("B", identifier=(SYS, "d2")))
    outcome(client.delete(f"/fhir/Patient?identifier={SYS}|d2"), 412)
    assert client.get(f"/fhir/Patient/{a['id']}").status_code == 200
    assert client.get(f"/fhir/Patient/{b['id']}").status_code == 200


def test_conditional_delete_without_criteria_is_not_a_delete_all(client: TestClient) -> None:
    a = create(client, patient("A"))
    response = client.delete("/fhir/Patient")
    assert 400 <= response.status_code < 500, response.text
    outcome(response)
    assert client.get(f"/fhir/Patient/{a['id']}").status_code == 200


def test_conditional_delete_of_several_matches_when_configured(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with make_client(conditional_delete_multiple=True) as several:
        a = create(several, patient("A", identifier=(SYS, "d3")))
        b = create(several, patient("B", identifier=(SYS, "d3")))
        keep = create(several, patient("C", identifier=(SYS, "other")))
        response = several.delete(f"/fhir/Patient?identifier={SYS}|d3")
        assert response.status_code == 200, response.text
        assert several.get(f"/fhir/Patient/{a['id']}").status_code == 410
        assert several.get(f"/fhir/Patient/{b['id']}").status_code == 410
        assert several.get(f"/fhir/Patient/{keep['id']}").status_code == 200
        statement = several.get("/fhir/metadata").json()
        assert statement["rest"][0]["resource"][0]["conditionalDelete"] == "multiple"


def test_page_size_default_and_maximum_are_configurable(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with make_client(default_page_size=2, max_page_size=3) as small:
        for n in range(5):
            create(small, patient(f"P{n}"))
        default = small.get("/fhir/Patient").json()
        assert len(default["entry"]) == 2
        clamped = small.get("/fhir/Patient?_count=50").json()
        assert len(clamped["entry"]) == 3
        assert "_count=3" in clamped["link"][0]["url"]


def test_search_parameters_on_a_create_url_are_a_conditional_create(client: TestClient) -> None:
    """``POST Patient?identifier=x`` (how fhirpy asks for a conditional create) behaves as
    ``If-None-Exist: identifier=x``: no match creates, one match returns it, two are 412."""
    url = f"/fhir/Patient?identifier={SYS}|url"
    first = client.post(url, json=patient("A", identifier=(SYS, "url")),
                        headers={"Content-Type": FHIR_JSON})
    assert first.status_code == 201, first.text
    before = history_total(client)
    again = client.post(url + "&_format=json&_pretty=true",
                        json=patient("B", identifier=(SYS, "url")),
                        headers={"Content-Type": FHIR_JSON})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert history_total(client) == before
    create(client, patient("C", identifier=(SYS, "url")))
    outcome(client.post(url, json=patient("D"), headers={"Content-Type": FHIR_JSON}), 412)
    outcome(client.post("/fhir/Patient?nonsense=1", json=patient("E"),
                        headers={"Content-Type": FHIR_JSON}), 400)
    # only _format/_pretty: a plain create
    plain = client.post("/fhir/Patient?_format=json", json=patient("F"),
                        headers={"Content-Type": FHIR_JSON})
    assert plain.status_code == 201, plain.text


def test_if_none_exist_and_url_criteria_must_agree(client: TestClient) -> None:
    url = f"/fhir/Patient?identifier={SYS}|both"
    same = client.post(url, json=patient("A"), headers={
        "Content-Type": FHIR_JSON, "If-None-Exist": f"identifier={SYS}|both"})
    assert same.status_code == 201, same.text
    body = outcome(client.post(url, json=patient("A"), headers={
        "Content-Type": FHIR_JSON, "If-None-Exist": f"identifier={SYS}|other"}), 400)
    assert body["issue"][0]["expression"] == ["If-None-Exist"]


def test_a_batch_entry_posting_to_a_search_url_is_a_conditional_create(client: TestClient
                                                                       ) -> None:
    existing = create(client, patient("A", identifier=(SYS, "entry")))
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("B", identifier=(SYS, "entry")),
         "request": {"method": "POST", "url": f"Patient?identifier={SYS}|entry"}},
    ]})
    assert response.status_code == 200, response.text
    entry = response.json()["entry"][0]
    assert entry["response"]["status"].startswith("200")
    assert entry["resource"]["id"] == existing["id"]
