"""Access policies narrow every read path: a hidden resource is neither returned, counted,
matched nor revealed by an error.

Two policies (``server/auth/policies.py``), handed to the app through ``create_app``:

* **label**: the caller sees only resources labelled ``urn:test:access|shared``;
* **compartment**: the caller acts for ``Patient/p1`` and sees its compartment plus the
  resources of other types those refer to.

The scene and what each policy lets through, written by hand: ``tests/access_scene.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.access_scene import (
    EVERY,
    MAX_INCLUDE,
    VISIBLE,
    policy_apps,
    seed,
)
from tests.support import TestClient, all_pages


@pytest.fixture(scope="module")
def apps(database_url: str) -> Iterator[dict[str, TestClient]]:
    """The operator's app (no policy) that wrote the scene, and one app per policy."""
    with policy_apps(database_url, max_include=MAX_INCLUDE) as apps:
        seed(apps["operator"])
        yield apps


@pytest.fixture(params=["label", "compartment"])
def policy(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _keys(entries: list[dict[str, Any]], mode: str | None = None) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if mode is None or e.get("search", {}).get("mode") == mode
    ]


def _same_as_missing(client: TestClient, hidden: str, url: str) -> None:
    """The answer for a hidden resource is the answer for one that never existed."""
    missing = "Patient/never" if hidden.startswith("Patient/") else hidden.split("/")[0] + "/never"
    got = client.get(url.format(hidden))
    expected = client.get(url.format(missing))
    assert got.status_code == expected.status_code == 404, got.text
    assert got.text.replace(hidden, "X") == expected.text.replace(missing, "X")


# -- read, vread ----------------------------------------------------------------------------


def test_read_returns_what_the_policy_lets_through_and_hides_the_rest(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    for key in sorted(EVERY):
        response = client.get(f"/fhir/{key}")
        if key in VISIBLE[policy]:
            assert response.status_code == 200, (key, response.text)
            assert response.json()["id"] == key.split("/")[1]
        else:
            _same_as_missing(client, key, "/fhir/{}")


def test_vread_of_a_hidden_resource_answers_as_a_missing_one(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    for key in sorted(EVERY):
        if key in VISIBLE[policy]:
            assert client.get(f"/fhir/{key}/_history/1").status_code == 200, key
        else:
            _same_as_missing(client, key, "/fhir/{}/_history/1")


def test_the_operator_sees_everything(apps: dict[str, TestClient]) -> None:
    entries = all_pages(apps["operator"], "/fhir?_count=4")
    assert set(_keys(entries)) == EVERY


# -- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize("total", ["accurate", "estimate"])
def test_search_pages_and_totals_count_only_what_is_visible(
    apps: dict[str, TestClient], policy: str, total: str
) -> None:
    client = apps[policy]
    expected = sorted(k for k in VISIBLE[policy] if k.startswith("Observation/"))
    url = f"/fhir/Observation?_count=2&_total={total}"
    first = client.get(url).json()
    assert first["total"] == len(expected)
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        bundle = client.get(next_url).json()
        pages.append(_keys(bundle.get("entry", [])))
        next_url = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
    # every page full but the last: nothing filtered after the page was cut
    assert [len(p) for p in pages[:-1]] == [2] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= 2
    assert sorted(k for p in pages for k in p) == expected


def test_count_only_search_counts_only_what_is_visible(
    apps: dict[str, TestClient], policy: str
) -> None:
    bundle = apps[policy].get("/fhir/Observation?_summary=count").json()
    assert bundle["total"] == len([k for k in VISIBLE[policy] if k.startswith("Observation/")])


def test_system_search_lists_only_what_is_visible(apps: dict[str, TestClient], policy: str) -> None:
    entries = all_pages(apps[policy], "/fhir?_count=3")
    assert sorted(_keys(entries)) == sorted(VISIBLE[policy])


def test_a_search_by_id_of_a_hidden_resource_finds_nothing(
    apps: dict[str, TestClient], policy: str
) -> None:
    bundle = apps[policy].get("/fhir/Patient?_id=p2&_total=accurate").json()
    assert bundle["total"] == 0 and "entry" not in bundle


# -- _include, _revinclude ------------------------------------------------------------------


def test_include_adds_the_visible_targets_only(apps: dict[str, TestClient], policy: str) -> None:
    bundle = apps[policy].get("/fhir/Observation?_include=Observation:performer").json()
    included = set(_keys(bundle["entry"], "include"))
    # each policy's observations were all performed by dr1; dr2 (o8's) is never there
    assert included == {"Practitioner/dr1"}


def test_revinclude_narrows_before_the_row_limit(apps: dict[str, TestClient], policy: str) -> None:
    """dr1 performed o6, o7 (p2's, created first), o4, o5, o1, o2, o3: the first six rows
    in insertion order hold hidden ones, so narrowing after the limit of six would drop
    visible ones."""
    bundle = apps[policy].get("/fhir/Practitioner?_id=dr1&_revinclude=Observation:performer").json()
    included = sorted(_keys(bundle["entry"], "include"))
    expected = {
        "label": ["Observation/o1", "Observation/o2", "Observation/o3", "Observation/o6"],
        "compartment": [f"Observation/o{n}" for n in range(1, 6)],
    }[policy]
    assert included == expected
    assert not any(
        issue
        for issue in bundle.get("entry", [])
        if issue["resource"]["resourceType"] == "OperationOutcome"
    ), "nothing was cut off"


def test_the_operator_sees_the_include_limit(apps: dict[str, TestClient]) -> None:
    bundle = (
        apps["operator"].get("/fhir/Practitioner?_id=dr1&_revinclude=Observation:performer").json()
    )
    assert len(_keys(bundle["entry"], "include")) == MAX_INCLUDE


def test_revinclude_iterate_follows_only_visible_resources(
    apps: dict[str, TestClient], policy: str
) -> None:
    bundle = (
        apps[policy]
        .get(
            "/fhir/Practitioner?_id=dr1&_revinclude=Observation:performer"
            "&_include:iterate=Observation:subject"
        )
        .json()
    )
    patients = {k for k in _keys(bundle["entry"], "include") if k.startswith("Patient/")}
    assert patients == {"Patient/p1"}  # p2 (o6's subject under the label policy) is hidden


# -- chains and _has ------------------------------------------------------------------------


def test_a_chain_does_not_filter_on_a_hidden_resource(
    apps: dict[str, TestClient], policy: str
) -> None:
    """o6 is labelled but its subject p2 is not: a chain on p2's name must find nothing."""
    bundle = (
        apps[policy].get("/fhir/Observation?subject:Patient.family=Hidden&_total=accurate").json()
    )
    assert bundle["total"] == 0 and "entry" not in bundle
    operator = apps["operator"].get("/fhir/Observation?subject:Patient.family=Hidden").json()
    assert len(operator["entry"]) == 3


def test_a_chain_on_a_visible_resource_matches(apps: dict[str, TestClient], policy: str) -> None:
    bundle = apps[policy].get("/fhir/Observation?subject:Patient.family=Visible").json()
    expected = sorted(k for k in VISIBLE[policy] if k in {f"Observation/o{n}" for n in range(1, 6)})
    assert sorted(_keys(bundle["entry"])) == expected


@pytest.mark.parametrize(
    ("url", "operator_finds"),
    [
        # only o4 (p1's, unlabelled) has c-hidden
        ("/fhir/Patient?_has:Observation:subject:code=c-hidden", {"Patient/p1"}),
        # only o7 (p2's, unlabelled, by dr1) has c-p2
        ("/fhir/Practitioner?_has:Observation:performer:code=c-p2", {"Practitioner/dr1"}),
    ],
)
def test_has_matches_only_through_visible_resources(
    apps: dict[str, TestClient], policy: str, url: str, operator_finds: set[str]
) -> None:
    assert set(_keys(apps["operator"].get(url).json()["entry"])) == operator_finds
    found = set(_keys(apps[policy].get(url).json().get("entry", [])))
    expected = {
        ("label", "code=c-hidden"): set(),  # o4 is unlabelled
        ("compartment", "code=c-hidden"): {"Patient/p1"},  # o4 is p1's
        ("label", "code=c-p2"): set(),
        ("compartment", "code=c-p2"): set(),
    }[(policy, url.rsplit(":", 1)[1])]
    assert found == expected


# -- compartment search, $everything ------------------------------------------------------


def test_compartment_search_lists_only_visible_members(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    p1 = sorted(_keys(all_pages(client, "/fhir/Patient/p1/Observation?_count=2")))
    p2 = sorted(_keys(all_pages(client, "/fhir/Patient/p2/Observation?_count=2")))
    expected = {
        "label": (["Observation/o1", "Observation/o2", "Observation/o3"], ["Observation/o6"]),
        "compartment": ([f"Observation/o{n}" for n in range(1, 6)], []),
    }[policy]
    assert (p1, p2) == expected


def test_everything_returns_only_visible_members(apps: dict[str, TestClient], policy: str) -> None:
    client = apps[policy]
    entries = all_pages(client, "/fhir/Patient/p1/$everything?_count=2")
    expected = {
        "label": {"Patient/p1", "Observation/o1", "Observation/o2", "Observation/o3"},
        "compartment": {"Patient/p1", *(f"Observation/o{n}" for n in range(1, 6))},
    }[policy]
    assert set(_keys(entries)) == expected
    _same_as_missing(client, "Patient/p2", "/fhir/{}/$everything")


# -- history --------------------------------------------------------------------------------


def _history_keys(entries: list[dict[str, Any]]) -> list[str]:
    return ["/".join(e["fullUrl"].split("/")[-2:]) for e in entries]


def test_instance_history_of_a_hidden_resource_answers_as_a_missing_one(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    for key in sorted(EVERY - VISIBLE[policy]):
        _same_as_missing(client, key, "/fhir/{}/_history")
    for key in sorted(VISIBLE[policy]):
        assert _history_keys(all_pages(client, f"/fhir/{key}/_history")) == [key]


def test_type_and_system_history_list_only_visible_versions(
    apps: dict[str, TestClient], policy: str
) -> None:
    client = apps[policy]
    observations = _history_keys(all_pages(client, "/fhir/Observation/_history?_count=2"))
    assert sorted(observations) == sorted(k for k in VISIBLE[policy] if k.startswith("Obs"))
    everything = _history_keys(all_pages(client, "/fhir/_history?_count=3"))
    assert sorted(everything) == sorted(VISIBLE[policy])


@pytest.mark.parametrize("patient", ["p1", "p2"])
def test_a_search_by_a_patient_reference_lists_only_what_is_visible(
    apps: dict[str, TestClient], policy: str, patient: str
) -> None:
    """A reference to the caller's own patient makes the compartment narrowing redundant; one
    to another patient must still be narrowed."""
    url = f"/fhir/Observation?subject=Patient/{patient}&_total=accurate&_count=2"
    found = sorted(_keys(all_pages(apps[policy], url)))
    expected = {
        ("label", "p1"): ["Observation/o1", "Observation/o2", "Observation/o3"],
        ("label", "p2"): ["Observation/o6"],
        ("compartment", "p1"): [f"Observation/o{n}" for n in range(1, 6)],
        ("compartment", "p2"): [],
    }[(policy, patient)]
    assert found == expected
    assert apps[policy].get(url).json()["total"] == len(expected)
