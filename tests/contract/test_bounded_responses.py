"""Responses bounded by bytes as well as by count (``max_response_bytes``).

Search pages (with ``_include``/``_revinclude``), history, ``$everything``, batch and
transaction responses stay within the bound: a page ends early with a ``next`` link and an
informational issue, and paging on returns every resource exactly once; a single resource
larger than the bound is still returned, alone. ``_include:iterate`` that stops at its hop
limit says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.support import TestClient, all_pages, outcome

BOUND = 64 * 1024
DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>{}</p></div>'


def _text(size: int) -> dict[str, str]:
    return {"status": "generated", "div": DIV.format("x" * size)}


def _patient(id: str, size: int = 20_000) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "text": _text(size), "name": [{"family": id}]}


def _observation(id: str, subject: str, size: int = 20_000) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": subject},
        "text": _text(size),
    }


@pytest.fixture
def bounded(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> Iterator[TestClient]:
    with make_client(max_response_bytes=BOUND) as client:
        yield client


def _put(client: TestClient, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text[:300]


def _next(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def _issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        issue
        for entry in bundle.get("entry", [])
        if entry.get("search", {}).get("mode") == "outcome"
        for issue in entry["resource"]["issue"]
    ]


def _pages(client: TestClient, url: str) -> list[tuple[int, dict[str, Any]]]:
    """(bytes, Bundle) of every page from ``url`` on."""
    out = []
    next_url: str | None = url
    while next_url is not None:
        assert len(out) < 100, "too many pages"
        response = client.get(next_url)
        assert response.status_code == 200, response.text[:500]
        bundle = response.json()
        out.append((len(response.content), bundle))
        next_url = _next(bundle)
    return out


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    ]


# -- search -----------------------------------------------------------------------------------


def test_a_search_page_ends_early_at_the_bound_and_paging_returns_everything_once(
    bounded: TestClient,
) -> None:
    for n in range(12):
        _put(bounded, _patient(f"p{n:02}"))
    pages = _pages(bounded, "/fhir/Patient?_count=100")
    assert len(pages) > 2
    for size, bundle in pages[:-1]:
        assert size <= BOUND
        assert _next(bundle) is not None
        issue = _issues(bundle)[0]
        assert issue["severity"] == "information" and issue["code"] == "informational"
        assert str(BOUND) in issue["diagnostics"]
    seen = [i for _, bundle in pages for i in _ids(bundle)]
    assert Counter(seen) == Counter(f"Patient/p{n:02}" for n in range(12))
    # the page's own count still bounds it when resources are small
    small = bounded.get("/fhir/Patient?_count=1&_elements=name").json()
    assert len(_ids(small)) == 1 and not _issues(small)


def test_a_sorted_search_and_its_previous_links_page_through_the_bound(
    bounded: TestClient,
) -> None:
    for n in range(8):
        _put(bounded, _patient(f"s{n}"))
    pages = _pages(bounded, "/fhir/Patient?_count=50&_sort=-_id")
    order = [i for _, bundle in pages for i in _ids(bundle)]
    assert order == [f"Patient/s{n}" for n in reversed(range(8))]
    last = pages[-1][1]
    back = next(x["url"] for x in last["link"] if x["relation"] == "previous")
    response = bounded.get(back)
    assert len(response.content) <= BOUND
    assert _ids(response.json()) == _ids(pages[-2][1])


def test_a_resource_larger_than_the_bound_is_returned_alone(bounded: TestClient) -> None:
    _put(bounded, _patient("big", size=BOUND * 2))
    _put(bounded, _patient("small", size=100))
    pages = _pages(bounded, "/fhir/Patient?_count=10")
    assert [_ids(b) for _, b in pages] == [["Patient/big"], ["Patient/small"]]
    assert pages[0][0] > BOUND
    assert pages[0][1]["entry"][0]["resource"]["text"]["div"] == DIV.format("x" * BOUND * 2)
    read = bounded.get("/fhir/Patient/big")
    assert read.status_code == 200 and len(read.content) > BOUND


def test_revinclude_shortens_the_page_so_its_included_resources_fit(
    bounded: TestClient,
) -> None:
    for n in range(4):
        _put(bounded, _patient(f"r{n}", size=100))
        _put(bounded, _observation(f"o{n}", f"Patient/r{n}"))
    pages = _pages(bounded, "/fhir/Patient?_count=10&_revinclude=Observation:subject")
    assert len(pages) > 1
    for size, bundle in pages:
        assert size <= BOUND
        matches = _ids(bundle)
        included = _ids(bundle, "include")
        assert included == [f"Observation/o{m.split('/r')[1]}" for m in matches]
    assert [m for _, b in pages for m in _ids(b)] == [f"Patient/r{n}" for n in range(4)]
    assert any(i["code"] == "informational" for _, b in pages[:-1] for i in _issues(b))


def test_included_resources_that_cannot_fit_one_match_are_cut_with_a_warning(
    bounded: TestClient,
) -> None:
    _put(bounded, _patient("one", size=100))
    for n in range(6):
        _put(bounded, _observation(f"w{n}", "Patient/one"))
    response = bounded.get("/fhir/Patient?_id=one&_revinclude=Observation:subject")
    assert response.status_code == 200 and len(response.content) <= BOUND
    bundle = response.json()
    assert _ids(bundle) == ["Patient/one"]
    assert 0 < len(_ids(bundle, "include")) < 6
    warning = next(i for i in _issues(bundle) if i["severity"] == "warning")
    assert warning["code"] == "too-costly" and warning["expression"] == ["_include"]


def _chain(client: TestClient, length: int) -> None:
    """Organization c0 part of c1, ... up to c<length>."""
    for n in reversed(range(length + 1)):
        org: dict[str, Any] = {"resourceType": "Organization", "id": f"c{n}", "name": f"c{n}"}
        if n < length:
            org["partOf"] = {"reference": f"Organization/c{n + 1}"}
        _put(client, org)


def test_include_iterate_says_when_it_stops_at_its_hop_limit(client: TestClient) -> None:
    _chain(client, 6)
    url = "/fhir/Organization?_id=c0&_include:iterate=Organization:partof"
    bundle = client.get(url).json()
    assert _ids(bundle, "include") == [f"Organization/c{n}" for n in range(1, 5)]
    issue = _issues(bundle)[0]
    assert issue["severity"] == "information" and issue["code"] == "informational"
    assert issue["expression"] == ["_include:iterate"] and "4 hops" in issue["diagnostics"]


def test_include_iterate_that_ends_within_its_hop_limit_says_nothing(
    client: TestClient,
) -> None:
    _chain(client, 4)
    url = "/fhir/Organization?_id=c0&_include:iterate=Organization:partof"
    bundle = client.get(url).json()
    assert _ids(bundle, "include") == [f"Organization/c{n}" for n in range(1, 5)]
    assert _issues(bundle) == []


# -- history and $everything --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/fhir/Patient/h/_history", "/fhir/Patient/_history", "/fhir/_history"]
)
def test_history_pages_end_early_at_the_bound(bounded: TestClient, url: str) -> None:
    for n in range(6):
        resource = _patient("h")
        resource["name"] = [{"family": f"v{n}"}]
        _put(bounded, resource)
    pages = _pages(bounded, url + "?_count=50")
    assert len(pages) > 1
    assert all(size <= BOUND for size, _ in pages)
    etags = [e["response"]["etag"] for _, b in pages for e in b.get("entry", [])]
    assert etags == [f'W/"{n}"' for n in range(6, 0, -1)]


def test_everything_pages_end_early_at_the_bound(bounded: TestClient) -> None:
    _put(bounded, _patient("e"))
    for n in range(5):
        _put(bounded, _observation(f"eo{n}", "Patient/e"))
    pages = _pages(bounded, "/fhir/Patient/e/$everything?_count=100")
    assert len(pages) > 1
    assert all(size <= BOUND for size, _ in pages)
    found = sorted(i for _, b in pages for i in _ids(b))
    assert found == sorted(["Patient/e", *(f"Observation/eo{n}" for n in range(5))])
    assert any(i["code"] == "informational" for _, b in pages[:-1] for i in _issues(b))


# -- batch and transaction -----------------------------------------------------------------------


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _create(resource: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in resource.items() if k != "id"}
    return {"resource": body, "request": {"method": "POST", "url": resource["resourceType"]}}


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_written_resources_past_the_bound_are_left_out_of_the_response(
    bounded: TestClient, kind: str
) -> None:
    entries = [_create(_patient(f"b{n}")) for n in range(6)]
    response = bounded.post("/fhir", json=_bundle(kind, entries))
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) <= BOUND
    answers = response.json()["entry"]
    assert all(a["response"]["status"] == "201 Created" for a in answers)
    assert "resource" in answers[0]
    left_out = [a for a in answers if "resource" not in a]
    assert left_out
    for answer in left_out:
        note = answer["response"]["outcome"]["issue"][0]
        assert note["severity"] == "information" and str(BOUND) in note["diagnostics"]
        read = bounded.get(f"/fhir/{answer['response']['location']}")
        assert read.status_code == 200
    total = bounded.get("/fhir/Patient?_summary=count").json()["total"]
    assert total == 6


def test_batch_reads_past_the_bound_are_refused_as_too_costly(bounded: TestClient) -> None:
    for n in range(5):
        _put(bounded, _patient(f"g{n}"))
    reads = [{"request": {"method": "GET", "url": f"Patient/g{n}"}} for n in range(5)]
    search = {"request": {"method": "GET", "url": "Patient?_count=100"}}
    response = bounded.post("/fhir", json=_bundle("batch", [*reads, search]))
    assert response.status_code == 200 and len(response.content) <= BOUND
    answers = response.json()["entry"]
    statuses = [a["response"]["status"] for a in answers]
    assert statuses[0] == "200 OK" and "400 Bad Request" in statuses
    for answer in answers:
        if answer["response"]["status"] == "400 Bad Request":
            issue = answer["response"]["outcome"]["issue"][0]
            assert issue["code"] == "too-costly" and str(BOUND) in issue["diagnostics"]
    # a search entry given what is left of the bound ends its page early instead
    one = bounded.post("/fhir", json=_bundle("batch", [reads[0], search])).json()["entry"]
    page = one[1]["resource"]
    assert one[1]["response"]["status"] == "200 OK" and _next(page) is not None


def test_a_transaction_whose_reads_exceed_the_bound_writes_nothing(bounded: TestClient) -> None:
    for n in range(5):
        _put(bounded, _patient(f"t{n}"))
    reads = [{"request": {"method": "GET", "url": f"Patient/t{n}"}} for n in range(5)]
    write = _create({"resourceType": "Organization", "id": "x", "name": "new"})
    response = bounded.post("/fhir", json=_bundle("transaction", [write, *reads]))
    issue = outcome(response, 400)["issue"][0]
    assert issue["code"] == "too-costly" and issue["expression"][0].startswith("Bundle.entry[")
    assert bounded.get("/fhir/Organization?_summary=count").json()["total"] == 0


def test_the_bound_is_a_setting_with_a_floor(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with pytest.raises(ValueError):
        with make_client(max_response_bytes=1000):
            pass


def test_unbounded_pages_are_unchanged(client: TestClient) -> None:
    for n in range(12):
        _put(client, _patient(f"u{n:02}"))
    entries = all_pages(client, "/fhir/Patient?_count=100")
    assert len(entries) == 12
