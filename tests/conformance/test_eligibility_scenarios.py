"""The ``$ecm-eligibility`` scenario suite: every member of examples/eligibility/ over HTTP.

Each scenario (``<name>.json``, a transaction Bundle, and ``<name>.expected.json``, written by
``scripts/eligibility-scenarios`` from its table) is one test id per mode:

A scenario whose sidecar names ``settings`` (the plan's identifier, a plan choice) runs on servers
made with those settings; the others on servers with the defaults.

* **stored**: every Bundle is POSTed once to a module-scoped server (``loaded``); the member is
  evaluated with ``GET /fhir/Patient/<id>/$ecm-eligibility?asOf=..(&pof=..)``; every evidence
  Reference must be readable on that server;
* **inline**: ``POST /fhir/Patient/$ecm-eligibility`` with ``{bundle, asOf, pof}`` on an empty
  server (``empty``), which must stay empty; every evidence Reference must be the fullUrl of an
  input entry.

The answer must equal the sidecar on ``eligible``, ``determination``, ``baseline``, every
asserted POF / exclusion result and every asserted criterion (``<code>/<criterion id>``); it
holds ``ruleSetVersion`` and the ``asOf`` asked. Without a ``pof`` input every Population of
Focus is reported, with one only it (or its variants). One more test checks every answer
against the OperationDefinition (tests/operation_output.py), and one that the committed files
are the generator's output.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conformance.scenario_servers import ScenarioServers, scenario_servers
from tests.operation_output import check_output
from tests.support import BASE, FHIR_JSON, history_total

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "examples" / "eligibility"
GENERATOR = ROOT / "scripts" / "eligibility-scenarios"
DEFINITION = ROOT / "profiles" / "operations" / "OperationDefinition-ecm-eligibility.json"
POF_CODES = ROOT / "profiles" / "codesystems" / "CodeSystem-ecm-population-of-focus.json"
SCENARIOS = sorted(p.name.removesuffix(".expected.json") for p in FOLDER.glob("*.expected.json"))
MODES = ("stored", "inline")


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _bundle(name: str) -> dict[str, Any]:
    data: dict[str, Any] = _load(FOLDER / f"{name}.json")
    return data


def _sidecar(name: str) -> dict[str, Any]:
    data: dict[str, Any] = _load(FOLDER / f"{name}.expected.json")
    return data


def _pof_leaves() -> set[str]:
    """The Populations of Focus the engine evaluates: the leaf codes (adult / youth variants)."""
    leaves: set[str] = set()

    def walk(concepts: list[dict[str, Any]]) -> None:
        for concept in concepts:
            if concept.get("concept"):
                walk(concept["concept"])
            else:
                leaves.add(concept["code"])

    walk(_load(POF_CODES)["concept"])
    return leaves


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScenarioServers]:
    with scenario_servers(tmp_path_factory, FOLDER, SCENARIOS) as found:
        yield found


# -- evaluating ------------------------------------------------------------------------------------

_ANSWERS: dict[tuple[int, str, str], dict[str, Any]] = {}
_READABLE: set[tuple[int, str]] = set()


def _stored(servers: ScenarioServers, name: str) -> dict[str, Any]:
    client, ids = servers.loaded(name)
    sidecar = _sidecar(name)
    query = {"asOf": sidecar["asOf"]}
    if sidecar.get("pof"):
        query["pof"] = sidecar["pof"]
    response = client.get(f"/fhir/Patient/{ids[name]}/$ecm-eligibility?{urlencode(query)}")
    assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:2000]}"
    body: dict[str, Any] = response.json()
    return body


def _inline(servers: ScenarioServers, name: str) -> dict[str, Any]:
    empty = servers.empty(name)
    sidecar = _sidecar(name)
    parameter: list[dict[str, Any]] = [
        {"name": "bundle", "resource": _bundle(name)},
        {"name": "asOf", "valueDate": sidecar["asOf"]},
    ]
    if sidecar.get("pof"):
        parameter.append({"name": "pof", "valueCode": sidecar["pof"]})
    response = empty.post(
        "/fhir/Patient/$ecm-eligibility",
        json={"resourceType": "Parameters", "parameter": parameter},
        headers={"Content-Type": FHIR_JSON},
    )
    assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:2000]}"
    assert history_total(empty) == 0, f"{name}: the inline evaluation stored something"
    body: dict[str, Any] = response.json()
    return body


def _answer(mode: str, name: str, servers: ScenarioServers) -> dict[str, Any]:
    """The operation's answer for one scenario in one mode (asked once per module)."""
    key = (id(servers), mode, name)
    if key not in _ANSWERS:
        _ANSWERS[key] = _stored(servers, name) if mode == "stored" else _inline(servers, name)
    return _ANSWERS[key]


# -- reading the answer ------------------------------------------------------------------------


def _params(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [p for p in items if p.get("name") == name]


def _one(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    found = _params(items, name)
    assert len(found) <= 1, f"'{name}' occurs {len(found)} times"
    return found[0] if found else None


def _value(item: dict[str, Any] | None) -> Any:
    if item is None:
        return None
    values = [v for k, v in item.items() if k.startswith("value")]
    return values[0] if len(values) == 1 else None


def _part_value(item: dict[str, Any] | None, name: str) -> Any:
    if item is None:
        return None
    return _value(_one(item.get("part", []), name))


def _judged(answer: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    """The pof or exclusion entries by code: {code: {"result", "criteria": {id: [results]}}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in _params(answer.get("parameter", []), group):
        coding = _part_value(item, "code") or {}
        code = coding.get("code")
        assert isinstance(code, str), f"{group} without a code: {item}"
        assert code not in out, f"{group} {code} reported twice"
        criteria: dict[str, list[str]] = {}
        for criterion in _params(item.get("part", []), "criterion"):
            id = _part_value(criterion, "id")
            criteria.setdefault(str(id), []).append(_part_value(criterion, "result"))
        out[code] = {"result": _part_value(item, "result"), "criteria": criteria}
    return out


def _evidence(items: list[dict[str, Any]]) -> Iterator[str]:
    for item in items:
        if item.get("name") == "evidence":
            reference = (item.get("valueReference") or {}).get("reference")
            assert isinstance(reference, str), f"evidence without a reference: {item}"
            yield reference
        yield from _evidence(item.get("part", []))


def _observed(answer: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The answer restricted to what the sidecar asserts, in the sidecar's shape."""
    items = answer.get("parameter", [])
    pofs, exclusions = _judged(answer, "pof"), _judged(answer, "exclusion")
    observed: dict[str, Any] = {
        "eligible": _value(_one(items, "eligible")),
        "determination": _value(_one(items, "determination")),
        "baseline": _part_value(_one(items, "baseline"), "result"),
        "pof": {code: (pofs.get(code) or {}).get("result") for code in expected["pof"]},
        "exclusion": {
            code: (exclusions.get(code) or {}).get("result") for code in expected["exclusion"]
        },
    }
    if "criteria" in expected:
        criteria: dict[str, Any] = {}
        for key in expected["criteria"]:
            code, id = key.split("/", 1)
            judged = pofs.get(code) or exclusions.get(code) or {"criteria": {}}
            results = judged["criteria"].get(id)
            # one result when the criterion is reported once (or consistently)
            criteria[key] = results[0] if results and len(set(results)) == 1 else results
        observed["criteria"] = criteria
    return observed


# -- tests -----------------------------------------------------------------------------------------


def test_the_suite_is_large_enough() -> None:
    assert len(SCENARIOS) >= 85
    data = {p.name for p in FOLDER.glob("*.json") if not p.name.endswith(".expected.json")}
    assert data == {f"{name}.json" for name in SCENARIOS}


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("mode", MODES)
def test_scenario(mode: str, name: str, servers: ScenarioServers) -> None:
    sidecar = _sidecar(name)
    expected = sidecar["expect"]
    answer = _answer(mode, name, servers)
    assert answer.get("resourceType") == "Parameters", answer
    items = answer.get("parameter", [])

    version = _value(_one(items, "ruleSetVersion"))
    assert isinstance(version, str) and version, "ruleSetVersion missing"
    assert _value(_one(items, "asOf")) == sidecar["asOf"]

    assert _observed(answer, expected) == expected, sidecar["description"]

    reported = set(_judged(answer, "pof"))
    if sidecar.get("pof"):
        asked = sidecar["pof"]
        assert all(c == asked or c.startswith(f"{asked}-") for c in reported), reported
    else:
        assert reported == _pof_leaves()

    bundle = _bundle(name)
    if mode == "inline":
        full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
        for reference in _evidence(items):
            assert reference in full_urls, f"evidence {reference} is not an input entry"
    else:
        client = servers.loaded(name)[0]
        for reference in _evidence(items):
            relative = reference.removeprefix(f"{BASE}/")
            if (id(client), relative) in _READABLE:
                continue
            assert relative.count("/") in (1, 3) and not relative.startswith("urn:"), reference
            response = client.get(f"/fhir/{relative}")
            assert response.status_code == 200, f"evidence {reference}: {response.status_code}"
            _READABLE.add((id(client), relative))


def test_every_answer_conforms_to_the_operation_definition(servers: ScenarioServers) -> None:
    definition = _load(DEFINITION)
    problems: list[str] = []
    for mode in MODES:
        for name in SCENARIOS:
            answer = _answer(mode, name, servers)
            problems += [f"{mode} {name}: {p}" for p in check_output(definition, answer)]
    assert problems == [], "\n".join(problems[:50])


def test_committed_files_are_the_generator_output() -> None:
    loader = importlib.machinery.SourceFileLoader("eligibility_scenarios", str(GENERATOR))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while defining
    try:
        loader.exec_module(module)
        files: dict[str, str] = module.render()
    finally:
        del sys.modules[loader.name]
    committed = {p.name for p in FOLDER.iterdir() if p.is_file()}
    assert committed == set(files), "run scripts/eligibility-scenarios"
    stale = [n for n, text in files.items() if (FOLDER / n).read_text(encoding="utf-8") != text]
    assert stale == [], f"run scripts/eligibility-scenarios: {stale[:10]}"
