"""The search matrix: every row of ``search/matrix.json`` over HTTP on both stores, the same rows
through the in-memory matcher, and keyset paging over a large result with ties.

``search/fixture.json`` is one transaction Bundle; it is loaded once per store. Every resource
carries a business key (an ``urn:test:key`` identifier, or an ``urn:test:key`` tag on types
without ``identifier``); rows name expected results by these keys and write ``{key}`` where a
server id belongs. See ``search/README.md``.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest

from tests.support import BASE, FHIR_JSON, TestClient, clear_store, expressions, outcome

HERE = Path(__file__).resolve().parent / "search"
FIXTURE: dict[str, Any] = orjson.loads((HERE / "fixture.json").read_bytes())
MATRIX: list[dict[str, Any]] = orjson.loads((HERE / "matrix.json").read_bytes())

KEY_SYSTEM = "urn:test:key"
SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")
MAX_COUNT = 1000  # Settings.max_page_size default
MAX_PAGES = 60
PLACEHOLDER = re.compile(r"\{([a-z0-9-]+)\}")
ROW_FIELDS = frozenset(
    "id anchor query method expect ordered status param included outcome total headers note"
    " shape subset absent".split()
)
# parameters that shape the result but never change which resources match
RESULT_PARAMS = frozenset(
    "_sort _count _include _revinclude _summary _elements _total _contained _containedType"
    " _format _pretty".split()
)


def key_of(resource: dict[str, Any]) -> str | None:
    """The business key of a fixture resource (identifier, else meta.tag)."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == KEY_SYSTEM:
            value = identifier.get("value")
            return value if isinstance(value, str) else None
    for tag in (resource.get("meta") or {}).get("tag") or []:
        if isinstance(tag, dict) and tag.get("system") == KEY_SYSTEM:
            code = tag.get("code")
            return code if isinstance(code, str) else None
    return None


def fixture_keys() -> dict[str, str]:
    """``{key: resource type}`` of every fixture entry."""
    out: dict[str, str] = {}
    for entry in FIXTURE["entry"]:
        key = key_of(entry["resource"])
        assert key is not None, f"fixture entry without a key: {entry['fullUrl']}"
        assert key not in out, f"duplicate fixture key {key}"
        out[key] = entry["resource"]["resourceType"]
    return out


def split_query(query: str) -> tuple[str, str]:
    """``Patient?name=x`` -> (``Patient``, ``name=x``); ``?_type=..`` -> (``""``, ..)."""
    path, _, qs = query.partition("?")
    return path, qs


def substitute(text: str, ids: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        assert key in ids, f"unknown fixture key {{{key}}}"
        return ids[key]

    return PLACEHOLDER.sub(one, text)


def param_names(qs: str) -> list[str]:
    return [name for name, _ in parse_qsl(qs, keep_blank_values=True)]


# -- loading the fixture ---------------------------------------------------------------------


@dataclass
class Loaded:
    """The fixture on one store: server ids by key and keys by (type, id)."""

    client: TestClient
    ids: dict[str, str]
    keys: dict[tuple[str, str], str]


@pytest.fixture(scope="module")
def loaded(_module_client: TestClient, database_url: str) -> Loaded:
    clear_store(database_url)
    client = _module_client
    response = client.post("/fhir", json=FIXTURE, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, (
        f"fixture load: {response.status_code} {response.text[:2000]}"
    )
    results = response.json()["entry"]
    assert len(results) == len(FIXTURE["entry"])
    ids: dict[str, str] = {}
    keys: dict[tuple[str, str], str] = {}
    for entry, result in zip(FIXTURE["entry"], results, strict=True):
        type = entry["resource"]["resourceType"]
        location = result["response"]["location"]
        rtype, rid = location.split("/_history/")[0].split("/")[-2:]
        assert rtype == type, f"{entry['fullUrl']}: created {location}"
        read = client.get(f"/fhir/{type}/{rid}")
        assert read.status_code == 200, read.text
        key = key_of(read.json())
        assert key is not None and key == key_of(entry["resource"]), f"{type}/{rid} lost its key"
        ids[key], keys[(type, rid)] = rid, key
    return Loaded(client, ids, keys)


# -- running one row over HTTP ---------------------------------------------------------------


def _request(client: TestClient, row: dict[str, Any], ids: dict[str, str]) -> Any:
    path, qs = split_query(substitute(row["query"], ids))
    url = "/fhir" + (f"/{path}" if path else "")
    headers = {"Accept": FHIR_JSON, **row.get("headers", {})}
    if row.get("method", "GET") == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return client.post(f"{url}/_search", content=qs.encode(), headers=headers)
    return client.get(f"{url}?{qs}" if qs else url, headers=headers)


def _pages(client: TestClient, first: Any, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The first Bundle and every Bundle its ``next`` links lead to."""
    response, seen = first, set()
    while True:
        assert response.status_code == 200, f"{response.status_code}: {response.text[:1500]}"
        bundle: dict[str, Any] = response.json()
        assert bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", bundle
        yield bundle
        link = next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None)
        if link is None:
            return
        assert link not in seen, f"paging loops back to {link}"
        assert len(seen) < MAX_PAGES, "too many pages"
        seen.add(link)
        response = client.get(link, headers=headers)


def _key(loaded: Loaded, entry: dict[str, Any]) -> str:
    resource = entry.get("resource") or {}
    type, id = resource.get("resourceType"), resource.get("id")
    assert entry.get("fullUrl") == f"{BASE}/{type}/{id}", f"bad fullUrl {entry.get('fullUrl')}"
    return loaded.keys.get((type, id), f"<not in fixture: {type}/{id}>")


def _count_param(qs: str) -> int | None:
    values = [v for k, v in parse_qsl(qs) if k == "_count"]
    return int(values[-1]) if values and values[-1].isdigit() else None


def _check_shape(row: dict[str, Any], key: str, resource: dict[str, Any]) -> None:
    shape = row.get("shape")
    if not shape:
        return
    missing = [name for name in shape.get("present", []) if name not in resource]
    assert not missing, f"{key}: elements {missing} should be present: {sorted(resource)}"
    extra = [name for name in shape.get("absent", []) if name in resource]
    assert not extra, f"{key}: elements {extra} should be left out"
    if shape.get("subsetted"):
        tags = [(t.get("system"), t.get("code")) for t in resource.get("meta", {}).get("tag", [])]
        assert SUBSETTED in tags, f"{key}: a subset must carry the SUBSETTED tag, got {tags}"


def run_row(loaded: Loaded, row: dict[str, Any]) -> None:
    client = loaded.client
    response = _request(client, row, loaded.ids)
    if "status" in row:
        body = outcome(response, row["status"])
        param = row.get("param")
        if param:
            named = expressions(body)
            assert any(param in e for e in named), (
                f"the OperationOutcome should name '{param}' in an expression, got {named}: {body}"
            )
        return

    _, qs = split_query(substitute(row["query"], loaded.ids))
    count = _count_param(qs)
    headers = {"Accept": FHIR_JSON, **row.get("headers", {})}
    matched: list[str] = []
    everything: list[str] = []
    included: set[str] = set()
    outcomes: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for bundle in _pages(client, response, headers):
        first = first or bundle
        assert any(lk["relation"] == "self" for lk in bundle.get("link", [])), "no self link"
        page_matches = 0
        page_included: list[str] = []
        for entry in bundle.get("entry", []):
            mode = (entry.get("search") or {}).get("mode")
            if mode == "outcome":
                assert entry["resource"]["resourceType"] == "OperationOutcome", entry
                outcomes.append(entry["resource"])
                continue
            key = _key(loaded, entry)
            everything.append(key)
            if row.get("subset"):
                continue
            assert mode in ("match", "include"), f"{key}: search.mode {mode!r}"
            if mode == "match":
                page_matches += 1
                matched.append(key)
                _check_shape(row, key, entry["resource"])
            else:
                page_included.append(key)
        dup = [k for k, n in Counter(page_included).items() if n > 1]
        assert not dup, f"included twice on one page: {dup}"
        included.update(page_included)
        if count is not None:
            assert page_matches <= min(count, MAX_COUNT), f"page of {page_matches} > _count={count}"
    assert first is not None

    if "total" in row:
        assert first.get("total") == row["total"], (
            f"Bundle.total {first.get('total')} != {row['total']}"
        )
    if ("_summary", "count") in parse_qsl(qs):
        assert not first.get("entry"), "_summary=count returns no entries"
    if row.get("outcome"):
        assert outcomes, "expected a search.mode=outcome OperationOutcome entry"
        text = orjson.dumps(outcomes).decode()
        assert row.get("param", "") in text, (
            f"the outcome should mention {row.get('param')}: {text}"
        )

    if row.get("subset"):
        missing = sorted(set(row["expect"]) - set(everything))
        assert not missing, f"missing from the result: {missing}"
        leaked = sorted(set(row.get("absent", [])) & set(everything))
        assert not leaked, f"must not be in the result: {leaked}"
        return

    dup = [k for k, n in Counter(matched).items() if n > 1]
    assert not dup, f"matched more than once (across pages): {dup}"
    if row.get("ordered"):
        assert matched == row["expect"], f"order: got {matched}, expected {row['expect']}"
    else:
        assert sorted(matched) == sorted(row["expect"]), (
            f"got {sorted(matched)}, expected {sorted(row['expect'])}"
        )
    if "included" in row:
        assert sorted(included) == sorted(row["included"]), (
            f"included {sorted(included)}, expected {sorted(row['included'])}"
        )


# -- matrix sanity (no server needed) --------------------------------------------------------


def test_matrix_rows_are_well_formed() -> None:
    keys = fixture_keys()
    ids = [row["id"] for row in MATRIX]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    for row in MATRIX:
        assert set(row) <= ROW_FIELDS, f"{row['id']}: unknown fields {set(row) - ROW_FIELDS}"
        assert row["anchor"].startswith("#"), row["id"]
        named = [*row["expect"], *row.get("included", []), *row.get("absent", [])]
        named += PLACEHOLDER.findall(row["query"])
        unknown = [k for k in named if k not in keys]
        assert not unknown, f"{row['id']}: unknown keys {unknown}"
        if "status" in row:
            assert row["expect"] == [] and row.get("param"), row["id"]


# -- every row over HTTP ---------------------------------------------------------------------


@pytest.mark.parametrize("row", [pytest.param(r, id=r["id"]) for r in MATRIX])
def test_search_matrix(loaded: Loaded, row: dict[str, Any]) -> None:
    run_row(loaded, row)


# -- the in-memory matcher agrees with the stores --------------------------------------------


def _memory_rows() -> list[Any]:
    out = []
    for row in MATRIX:
        path, qs = split_query(row["query"])
        names = param_names(qs)
        if (
            "status" in row
            or row.get("headers")
            or not path
            or "/" in path
            or any(n.split(":")[0] in RESULT_PARAMS for n in names)
            or any("." in n or n.startswith("_has") for n in names)
        ):
            continue
        out.append(pytest.param(row, id=row["id"]))
    return out


def _memory_fixture() -> dict[str, dict[str, Any]]:
    """The fixture as a store would hold it, with each key as the resource id and every
    ``urn:uuid:`` reference rewritten to ``Type/key``."""
    by_url = {
        e["fullUrl"]: (e["resource"]["resourceType"], key_of(e["resource"]))
        for e in FIXTURE["entry"]
    }

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = node.get("reference")
            if isinstance(ref, str) and ref in by_url:
                out["reference"] = "/".join(str(p) for p in by_url[ref])
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    resources = {}
    for entry in FIXTURE["entry"]:
        resource = rewrite(entry["resource"])
        key = key_of(resource)
        assert key is not None
        resource["id"] = key
        resources[key] = resource
    return resources


MEMORY_ROWS = _memory_rows()


@functools.cache
def _memory_engine() -> tuple[Any, Any, Any, dict[str, dict[str, Any]]]:
    """``(parse_criteria, matches, (context, indexer), resources)``, imported on first use so
    that collection works without the engine."""
    from zoneinfo import ZoneInfo

    from server.search.index import Indexer
    from server.search.match import matches
    from server.search.parse import SearchContext, parse_criteria
    from server.search.registry import load_registry

    registry = load_registry()
    zone = ZoneInfo("America/Los_Angeles")
    ctx = SearchContext(
        registry=registry,
        base=BASE,
        zone=zone,
        default_count=20,
        max_count=MAX_COUNT,
        expand=lambda url: None,
    )
    return parse_criteria, matches, (ctx, Indexer(registry, BASE, zone)), _memory_fixture()


@pytest.mark.parametrize("row", MEMORY_ROWS)
def test_matrix_in_memory_matcher_agrees(row: dict[str, Any]) -> None:
    parse_criteria, matches, (ctx, indexer), resources = _memory_engine()
    type, qs = split_query(substitute(row["query"], {key: key for key in resources}))
    criteria = parse_criteria(type, parse_qsl(qs, keep_blank_values=True), ctx)
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    got = sorted(
        key
        for key, resource in resources.items()
        if resource["resourceType"] == type
        and matches(criteria, type, resource, indexer, id=key, last_updated=now)
    )
    assert got == sorted(row["expect"]), f"in memory: got {got}, expected {sorted(row['expect'])}"


def test_memory_rows_cover_most_of_the_matrix() -> None:
    assert len(MEMORY_ROWS) >= len(MATRIX) // 2, len(MEMORY_ROWS)


# -- keyset paging with ties and missing values, forward and back ---------------------------


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {lk["relation"]: lk["url"] for lk in bundle.get("link", [])}


def _page(client: TestClient, url: str) -> dict[str, Any]:
    response = client.get(url, headers={"Accept": FHIR_JSON})
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:800]}"
    bundle: dict[str, Any] = response.json()
    return bundle


def _walk(client: TestClient, url: str, relation: str) -> list[tuple[dict[str, str], list[str]]]:
    """``(links, ids)`` of each page from ``url`` following ``relation`` links."""
    pages: list[tuple[dict[str, str], list[str]]] = []
    next_url: str | None = url
    while next_url is not None:
        assert len(pages) < MAX_PAGES, "too many pages"
        bundle = _page(client, next_url)
        links = _links(bundle)
        pages.append(
            (
                links,
                [
                    e["resource"]["id"]
                    for e in bundle.get("entry", [])
                    if e.get("search", {}).get("mode") == "match"
                ],
            )
        )
        next_url = links.get(relation)
    return pages


PAGING_SIZE = 45


def _birth_date(i: int) -> str | None:
    return None if i % 5 == 0 else f"1990-01-0{i % 4 + 1}"


@pytest.fixture
def paging_family(loaded: Loaded) -> Iterator[tuple[str, dict[str, str | None]]]:
    """45 Patients of one fresh family name (ties and missing birth dates); deleted after."""
    family = f"Paging{uuid.uuid4().hex[:12]}"
    entries = []
    for i in range(PAGING_SIZE):
        body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
        if (birth := _birth_date(i)) is not None:
            body["birthDate"] = birth
        entries.append({"resource": body, "request": {"method": "POST", "url": "Patient"}})
    response = loaded.client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    assert response.status_code == 200, response.text[:1000]
    made: dict[str, str | None] = {}
    for i, result in enumerate(response.json()["entry"]):
        made[result["response"]["location"].split("/")[1]] = _birth_date(i)
    try:
        yield family, made
    finally:
        for id in made:
            deleted = loaded.client.delete(f"/fhir/Patient/{id}")
            assert deleted.status_code in (200, 204), deleted.text


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_paging_forward_and_backward_with_ties(
    loaded: Loaded, paging_family: tuple[str, dict[str, str | None]], descending: bool
) -> None:
    family, made = paging_family
    sort = "-birthdate" if descending else "birthdate"
    query = urlencode({"family:exact": family, "_count": "10", "_sort": sort})
    forward = _walk(loaded.client, f"/fhir/Patient?{query}", "next")

    order = [id for _, ids in forward for id in ids]
    assert sorted(order) == sorted(made), "every resource exactly once, forward"
    assert len(order) == len(set(order)) == PAGING_SIZE
    assert [len(ids) for _, ids in forward] == [10, 10, 10, 10, 5]
    dates = [made[id] for id in order]
    present = [d for d in dates if d is not None]
    assert dates == present + [None] * (len(dates) - len(present)), "no birth date sorts last"
    assert present == sorted(present, reverse=descending), f"not sorted by {sort}: {present}"

    for n, (links, _) in enumerate(forward):
        assert "self" in links, links
        assert n == 0 or "first" in links, f"page {n + 1} has no first link: {links}"
        assert ("next" in links) == (n < len(forward) - 1), (n, links)
        assert ("previous" in links) == (n > 0), (n, links)

    # back from the last page: the same resources, in the same order, page by page
    last_links, last_ids = forward[-1]
    backward = _walk(loaded.client, last_links["previous"], "previous")
    back_order = [id for _, ids in reversed(backward) for id in ids] + last_ids
    assert back_order == order, "walking back gives the forward order"
    assert "previous" not in backward[-1][0], "the first page has no previous link"
