"""The scene of the access-policy tests: who carries the label, who refers to whom, and what
each policy lets through, written by hand (never computed by the code under test).

Two policies (``server/auth/policies.py``), handed to the app through ``create_app``:

* **label**: the caller sees only resources labelled ``urn:test:access|shared``;
* **compartment**: the caller acts for ``Patient/p1`` and sees its compartment plus the
  resources of other types those refer to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request

from server.auth.policies import CompartmentPolicy, LabelPolicy
from server.auth.policy import Policy
from server.auth.principal import Principal
from tests.support import TestClient, fhir_client, put

IDS = "urn:test:ids"
LABEL = {"system": "urn:test:access", "code": "shared"}

# (type, id, labelled, fields); created in this order (insertion order matters for limits)
SCENE: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("Organization", "org1", False, {"name": "Clinic One"}),
    ("Organization", "org2", False, {"name": "Clinic Two"}),
    ("Practitioner", "dr1", True, {"name": [{"family": "Lee"}]}),
    ("Practitioner", "dr2", False, {"name": [{"family": "Kim"}]}),
    (
        "Patient",
        "p1",
        True,
        {
            "name": [{"family": "Visible"}],
            "managingOrganization": {"reference": "Organization/org1"},
        },
    ),
    (
        "Patient",
        "p2",
        False,
        {
            "name": [{"family": "Hidden"}],
            "managingOrganization": {"reference": "Organization/org2"},
        },
    ),
    ("Patient", "p3", True, {"name": [{"family": "Other"}]}),
]


def _observation(
    subject: str, performer: str, code: str, identifier: str | None = None
) -> dict[str, Any]:
    more = {"identifier": [{"system": IDS, "value": identifier}]} if identifier else {}
    return {
        **more,
        "status": "final",
        "code": {"coding": [{"system": "urn:test:codes", "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
        "performer": [{"reference": f"Practitioner/{performer}"}],
    }


# identifiers: "dup" on o1 (visible to both policies) and o7 (hidden from both);
# "only-hidden" on o8 (hidden from both)
# p2's first (two of them performed by dr1), then p1's unlabelled, then p1's labelled ones
SCENE += [
    ("Observation", "o6", True, _observation("p2", "dr1", "c-any")),
    ("Observation", "o7", False, _observation("p2", "dr1", "c-p2", "dup")),
    ("Observation", "o8", False, _observation("p2", "dr2", "c-any", "only-hidden")),
    ("Observation", "o4", False, _observation("p1", "dr1", "c-hidden")),
    ("Observation", "o5", False, _observation("p1", "dr1", "c-any")),
    ("Observation", "o1", True, _observation("p1", "dr1", "c-any", "dup")),
    ("Observation", "o2", True, _observation("p1", "dr1", "c-any")),
    ("Observation", "o3", True, _observation("p1", "dr1", "c-any")),
]

VISIBLE: dict[str, set[str]] = {
    # labelled resources
    "label": {
        "Practitioner/dr1",
        "Patient/p1",
        "Patient/p3",
        "Observation/o6",
        "Observation/o1",
        "Observation/o2",
        "Observation/o3",
    },
    # p1, its observations, and what they refer to (dr1 as performer, org1 from p1)
    "compartment": {
        "Patient/p1",
        "Organization/org1",
        "Practitioner/dr1",
        "Observation/o1",
        "Observation/o2",
        "Observation/o3",
        "Observation/o4",
        "Observation/o5",
    },
}
EVERY = {f"{t}/{i}" for t, i, _, _ in SCENE}
MAX_INCLUDE = 6

POLICIES: dict[str, Policy] = {
    "label": LabelPolicy(LABEL["system"], LABEL["code"]),
    "compartment": CompartmentPolicy(),
}
CALLER = Principal("test-app", user="Patient/p1")


def caller(request: Request) -> Principal:
    return CALLER


def seed(client: TestClient) -> None:
    for type, id, labelled, fields in SCENE:
        resource: dict[str, Any] = {"resourceType": type, "id": id, **fields}
        if labelled:
            resource["meta"] = {"security": [LABEL]}
        response = put(client, resource)
        assert response.status_code == 201, response.text


@contextmanager
def policy_apps(
    database_url: str,
    principals: Callable[[Request], Principal] = caller,
    **settings: Any,
) -> Iterator[dict[str, TestClient]]:
    """Apps on one store: the operator's (no policy) and one per policy, whose callers
    ``principals`` names; every one refuses to let the per-resource decision and the
    narrowing disagree (``access_safety_net=fail``)."""
    settings = {"access_safety_net": "fail", **settings}
    with (
        fhir_client(database_url, **settings) as operator,
        fhir_client(
            database_url, principals=principals, policies=[POLICIES["label"]], **settings
        ) as label,
        fhir_client(
            database_url, principals=principals, policies=[POLICIES["compartment"]], **settings
        ) as compartment,
    ):
        yield {"operator": operator, "label": label, "compartment": compartment}
