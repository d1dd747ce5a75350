"""Access policies on the write path: conditional interactions and conditional references
match only what the caller may see, validation's system reads never reveal a hidden target,
and a caller never writes what it could not see.

A match that exists only outside the caller's view is no match for a conditional create and is
refused (403) for a conditional update, patch or delete; a 412 "several matches" never counts
hidden ones. Scene and expectations: ``tests/access_scene.py`` (``dup`` is on o1, visible to
both policies, and o7, hidden from both; ``only-hidden`` on o8, hidden from both).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.access_scene import IDS, LABEL, policy_apps, seed
from tests.support import TestClient, clear_store, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "resources"


@pytest.fixture(scope="module")
def _apps(database_url: str) -> Iterator[dict[str, TestClient]]:
    with policy_apps(database_url) as apps:
        yield apps


@pytest.fixture
def apps(_apps: dict[str, TestClient], database_url: str) -> dict[str, TestClient]:
    clear_store(database_url)
    seed(_apps["operator"])
    return _apps


@pytest.fixture(params=["label", "compartment"])
def policy(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _new_observation(code: str = "c-new", **extra: Any) -> dict[str, Any]:
    """An observation both policies let the caller write: labelled, about p1."""
    return {
        "resourceType": "Observation",
        "meta": {"security": [LABEL]},
        "status": "final",
        "code": {"coding": [{"system": "urn:test:codes", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


def _count(client: TestClient, query: str) -> int:
    total: int = client.get(f"/fhir/Observation?{query}&_summary=count").json()["total"]
    return total


def _body(operator: TestClient, key: str) -> dict[str, Any]:
    body: dict[str, Any] = operator.get(f"/fhir/{key}").json()
    return body


# -- conditional create ---------------------------------------------------------------------


def test_conditional_create_treats_a_hidden_match_as_no_match(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    response = client.post(
        "/fhir/Observation",
        json=_new_observation(),
        headers={"If-None-Exist": f"identifier={IDS}|only-hidden"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["id"] != "o8"
    assert _count(apps["operator"], f"identifier={IDS}|only-hidden") == 1  # o8 untouched


def test_conditional_create_does_not_count_hidden_matches(
    apps: dict[str, TestClient], policy: str
) -> None:
    assert (
        apps["operator"]
        .post(
            "/fhir/Observation",
            json=_new_observation(),
            headers={"If-None-Exist": f"identifier={IDS}|dup"},
        )
        .status_code
        == 412
    )
    response = apps[policy].post(
        "/fhir/Observation",
        json=_new_observation(),
        headers={"If-None-Exist": f"identifier={IDS}|dup"},
    )
    assert response.status_code == 200, response.text  # the one visible match: o1
    assert response.json()["id"] == "o1"


# -- conditional update, patch, delete ------------------------------------------------------


def test_conditional_update_of_a_hidden_match_is_refused(
    apps: dict[str, TestClient], policy: str
) -> None:
    before = _body(apps["operator"], "Observation/o8")
    response = apps[policy].put(
        f"/fhir/Observation?identifier={IDS}|only-hidden", json=_new_observation()
    )
    outcome(response, 403)
    assert _body(apps["operator"], "Observation/o8") == before
    assert _count(apps["operator"], "code=c-new") == 0  # no update-as-create beside it


def test_conditional_update_does_not_count_hidden_matches(
    apps: dict[str, TestClient], policy: str
) -> None:
    response = apps[policy].put(
        f"/fhir/Observation?identifier={IDS}|dup",
        json=_new_observation(identifier=[{"system": IDS, "value": "dup"}]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "o1"
    assert _body(apps["operator"], "Observation/o7")["meta"]["versionId"] == "1"


def test_conditional_patch_of_a_hidden_match_is_refused(
    apps: dict[str, TestClient], policy: str
) -> None:
    response = apps[policy].patch(
        f"/fhir/Observation?identifier={IDS}|only-hidden",
        json=[{"op": "replace", "path": "/status", "value": "amended"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    outcome(response, 403)
    assert _body(apps["operator"], "Observation/o8")["status"] == "final"


def test_conditional_delete_of_a_hidden_match_is_refused(
    apps: dict[str, TestClient], policy: str
) -> None:
    outcome(apps[policy].delete(f"/fhir/Observation?identifier={IDS}|only-hidden"), 403)
    assert apps["operator"].get("/fhir/Observation/o8").status_code == 200


def test_conditional_delete_deletes_only_the_visible_match(
    apps: dict[str, TestClient], policy: str
) -> None:
    response = apps[policy].delete(f"/fhir/Observation?identifier={IDS}|dup")
    assert response.status_code == 200, response.text
    assert apps["operator"].get("/fhir/Observation/o1").status_code == 410
    assert apps["operator"].get("/fhir/Observation/o7").status_code == 200


# -- conditional references -----------------------------------------------------------------


def test_a_conditional_reference_to_a_hidden_resource_answers_as_one_to_nothing(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    hidden = client.post(
        "/fhir/Observation",
        json=_new_observation(performer=[{"reference": "Practitioner?family=Kim"}]),
    )
    missing = client.post(
        "/fhir/Observation",
        json=_new_observation(performer=[{"reference": "Practitioner?family=Nobody"}]),
    )
    assert hidden.status_code == missing.status_code == 400, hidden.text
    assert hidden.text.replace("Kim", "X") == missing.text.replace("Nobody", "X")


def test_a_conditional_reference_does_not_count_hidden_matches(
    apps: dict[str, TestClient], policy: str
) -> None:
    resource = _new_observation(performer=[{"reference": "Practitioner?_id=dr1,dr2"}])
    outcome(apps["operator"].post("/fhir/Observation", json=resource), 412)
    response = apps[policy].post("/fhir/Observation", json=resource)
    assert response.status_code == 201, response.text
    assert response.json()["performer"] == [{"reference": "Practitioner/dr1"}]


# -- writes by id ---------------------------------------------------------------------------


def test_an_update_of_a_hidden_resource_answers_as_one_of_a_missing_resource(
    apps: dict[str, TestClient], policy: str
) -> None:
    """A restricted caller may not update-as-create (an id of its own could name a hidden
    resource): PUT to a hidden id and to a missing one both answer 405, with the same text,
    and neither is stored."""
    client = apps[policy]
    before = _body(apps["operator"], "Observation/o7")
    hidden = client.put("/fhir/Observation/o7", json={**_new_observation(), "id": "o7"})
    missing = client.put("/fhir/Observation/never", json={**_new_observation(), "id": "never"})
    outcome(hidden, 405)
    outcome(missing, 405)
    assert hidden.text.replace("o7", "X") == missing.text.replace("never", "X")
    assert _body(apps["operator"], "Observation/o7") == before
    assert apps["operator"].get("/fhir/Observation/never").status_code == 404


def test_a_patch_of_a_hidden_resource_answers_as_one_of_a_missing_resource(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    before = _body(apps["operator"], "Observation/o7")
    ops = [{"op": "replace", "path": "/status", "value": "amended"}]
    headers = {"Content-Type": "application/json-patch+json"}
    hidden = client.patch("/fhir/Observation/o7", content=json.dumps(ops), headers=headers)
    missing = client.patch("/fhir/Observation/never", content=json.dumps(ops), headers=headers)
    outcome(hidden, 404)
    assert hidden.text.replace("o7", "X") == missing.text.replace("never", "X")
    assert _body(apps["operator"], "Observation/o7") == before


def test_an_update_of_a_visible_resource_and_a_conditional_update_as_create_succeed(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    body = {**_new_observation("c-upd"), "id": "o1"}
    assert client.put("/fhir/Observation/o1", json=body).status_code == 200
    created = client.put(
        f"/fhir/Observation?identifier={IDS}|brand-new", json=_new_observation("c-cond")
    )
    assert created.status_code == 201, created.text
    assert _count(apps["operator"], "code=c-cond") == 1
    assert apps["operator"].put(
        "/fhir/Observation/op-made", json={**_new_observation(), "id": "op-made"}
    ).status_code == 201  # the operator (not narrowed) still updates-as-create


def test_a_delete_of_a_hidden_resource_answers_as_one_of_a_missing_resource(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    hidden = client.delete("/fhir/Observation/o7")
    missing = client.delete("/fhir/Observation/never")
    assert hidden.status_code == missing.status_code == 200
    assert hidden.text.replace("o7", "X") == missing.text.replace("never", "X")
    assert apps["operator"].get("/fhir/Observation/o7").status_code == 200


@pytest.mark.parametrize("outside", ["unlabelled", "other patient"])
def test_a_caller_cannot_write_what_it_could_not_see(
    apps: dict[str, TestClient], policy: str, outside: str
) -> None:
    resource = _new_observation()
    if outside == "unlabelled":
        del resource["meta"]
    else:
        resource["subject"] = {"reference": "Patient/p3"}
    response = apps[policy].post("/fhir/Observation", json=resource)
    refused = {
        ("label", "unlabelled"): True,
        ("label", "other patient"): False,  # p3 is labelled: the label policy allows it
        ("compartment", "unlabelled"): False,
        ("compartment", "other patient"): True,
    }[(policy, outside)]
    if refused:
        outcome(response, 403)
        assert _count(apps["operator"], "code=c-new") == 0  # nothing was stored
    else:
        assert response.status_code == 201, response.text


# -- validation reads targets through the system reader, answers by the caller's view -------


def _enrollment(patient: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        (EXAMPLES / "EpisodeOfCare-ecm-enrollment-example.json").read_text()
    )
    del body["id"]
    body["meta"]["security"] = [LABEL]
    body["patient"] = {"reference": patient}
    return body


def test_validation_of_a_hidden_target_answers_as_of_a_missing_one(
    apps: dict[str, TestClient], policy: str
) -> None:
    """p2 is a plain Patient, not an ECM member: the operator, who sees it, is told so."""
    operator = apps["operator"].post("/fhir/EpisodeOfCare", json=_enrollment("Patient/p2"))
    assert operator.status_code == 422, operator.text
    assert "does not conform" in operator.text
    client = apps[policy]
    hidden = client.post("/fhir/EpisodeOfCare", json=_enrollment("Patient/p2"))
    missing = client.post("/fhir/EpisodeOfCare", json=_enrollment("Patient/never"))
    assert hidden.status_code == missing.status_code, (hidden.text, missing.text)
    if hidden.status_code >= 400:
        assert hidden.text.replace("p2", "X") == missing.text.replace("never", "X")
    assert "does not conform" not in hidden.text
