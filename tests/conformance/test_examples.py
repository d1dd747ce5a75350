"""Every example in examples/bundles/ loads into a fresh server, idempotently.

Each data file (``*.expected.json`` sidecars excluded) is one test id: loaded into an empty
SQLite store through the in-process application (``server.loader.direct_target``), every entry
must answer 2xx; loading it again must not duplicate any Organization (nor, because the
examples only use conditional creates, any other resource); when a sidecar exists, the entry
statuses of both loads must equal it (format: examples/README.md).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import loader
from server.fhir.base_validation import base_validator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bundles"
RESOURCES = EXAMPLES.parent / "resources"
FILES = sorted(p for p in EXAMPLES.glob("*.json") if not loader.is_sidecar(p))


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'fhir.db'}"


def _sidecar(path: Path) -> dict[str, Any] | None:
    sidecar = path.with_name(path.name.removesuffix(".json") + loader.SIDECAR_SUFFIX)
    if not sidecar.exists():
        return None
    data: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
    return data


def _types(path: Path) -> set[str]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    return {e["resource"]["resourceType"] for e in bundle.get("entry", []) if "resource" in e}


async def _all(client: httpx.AsyncClient, type: str) -> list[dict[str, Any]]:
    response = await client.get(type, params={"_count": "1000"})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert not any(link["relation"] == "next" for link in bundle.get("link", []))
    return [entry["resource"] for entry in bundle.get("entry", [])]


def _identifiers(resources: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(
        (i.get("system", ""), i.get("value", ""))
        for r in resources
        for i in r.get("identifier", [])[:1]
    )


def test_there_are_examples() -> None:
    assert FILES, f"no example bundles in {EXAMPLES}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_is_base_valid(path: Path) -> None:
    issues = base_validator().validate(json.loads(path.read_text(encoding="utf-8")))
    assert issues == []


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_loads_and_reloads(path: Path, tmp_path: Path) -> None:
    expected = _sidecar(path)
    types = _types(path)

    async def run() -> None:
        async with loader.direct_target(sqlite_url(tmp_path)) as client:
            first = await loader.load_files(client, [path])
            assert first.failures == [], first.failures
            assert first.outcomes, "nothing was loaded"
            counts = {t: len(await _all(client, t)) for t in sorted(types)}
            organizations = await _all(client, "Organization")

            second = await loader.load_files(client, [path])
            assert second.failures == [], second.failures
            again = await _all(client, "Organization")
            assert len(again) == len(organizations), "loading twice duplicated Organizations"
            assert max(_identifiers(again).values(), default=1) == 1
            assert {t: len(await _all(client, t)) for t in sorted(types)} == counts

            if expected is not None:
                if "firstLoad" in expected:
                    assert first.statuses(path) == expected["firstLoad"]
                if "secondLoad" in expected:
                    assert second.statuses(path) == expected["secondLoad"]

    asyncio.run(run())


def test_all_examples_share_the_plan_organization(tmp_path: Path) -> None:
    """Loaded together, twice: every Organization identifier exists once (the health plan is
    shared by the members' bundles: PUT under the id of examples/resources)."""

    async def run() -> None:
        async with loader.direct_target(sqlite_url(tmp_path)) as client:
            for _ in range(2):
                report = await loader.load_files(client, FILES)
                assert report.failures == [], report.failures
            organizations = await _all(client, "Organization")
            identifiers = _identifiers(organizations)
            assert set(identifiers.values()) == {1}
            assert len(organizations) == len(identifiers)

    asyncio.run(run())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_references_resolve_inside_the_bundle(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    full_urls = {e.get("fullUrl") for e in bundle["entry"]}
    references: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "reference" and isinstance(value, str):
                    references.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(bundle)
    for reference in references:
        if reference.startswith("urn:uuid:"):
            assert reference in full_urls, reference
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        if resource["resourceType"] == "Organization":
            # conditional, or the one of examples/resources under its id (any load order)
            shared = (RESOURCES / f"Organization-{resource.get('id')}.json").exists()
            by_id = request["method"] == "PUT" and request["url"] == (
                f"Organization/{resource.get('id')}"
            )
            assert request.get("ifNoneExist") or (shared and by_id), (
                "Organizations need ifNoneExist, or a PUT under the id of examples/resources"
            )


def test_bundles_and_resources_load_in_any_order(tmp_path: Path) -> None:
    """The bundles, then the single resources, then the bundles again (and the reverse): no
    failure and no Organization, Practitioner or PractitionerRole twice — the bundles write
    the resources they share with examples/resources under the same ids."""
    resources = loader.discover([RESOURCES])

    async def run(order: list[list[Path]], folder: Path) -> None:
        async with loader.direct_target(sqlite_url(folder)) as client:
            for files in order:
                report = await loader.load_files(client, files)
                assert report.failures == [], report.failures
            for type in ("Organization", "Practitioner", "PractitionerRole"):
                found = await _all(client, type)
                identifiers = _identifiers(found)
                assert set(identifiers.values()) == {1}, (type, identifiers)

    for number, order in enumerate(([FILES, resources, FILES], [resources, FILES, resources])):
        folder = tmp_path / str(number)
        folder.mkdir()
        asyncio.run(run(order, folder))
