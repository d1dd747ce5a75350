"""The ``$cs-eligibility`` scenario suite: every member of examples/cs-eligibility/ over HTTP.

Each scenario (``<name>.json``, a transaction Bundle, and ``<name>.expected.json``, written by
``scripts/cs-eligibility-scenarios`` from its table, expectations by hand) is one test id per
mode:

* **stored**: every Bundle is POSTed to a module-scoped server (one per distinct ``settings``);
  the member is evaluated with ``GET /fhir/Patient/<id>/$cs-eligibility?asOf=..&service=..``;
  every evidence Reference must be readable on that server;
* **inline**: ``POST /fhir/Patient/$cs-eligibility`` with ``{bundle, asOf, service...}`` on an
  empty server, which must stay empty; every evidence Reference is an input entry's fullUrl.

The answer must equal the sidecar on the baseline, each service's result and determination
(one ``service`` per code asked, in the order asked) and every asserted criterion. One more
test checks every answer against the OperationDefinition (tests/operation_output.py), and one
that the committed files are the generator's output.
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

from tests.conformance.scenario_servers import ScenarioServers, bundle, scenario_servers, sidecar
from tests.conformance.test_eligibility_scenarios import _evidence, _one, _params, _part_value
from tests.operation_output import check_output
from tests.support import BASE, FHIR_JSON, history_total

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "examples" / "cs-eligibility"
GENERATOR = ROOT / "scripts" / "cs-eligibility-scenarios"
DEFINITION = ROOT / "profiles" / "operations" / "OperationDefinition-cs-eligibility.json"
SCENARIOS = sorted(p.name.removesuffix(".expected.json") for p in FOLDER.glob("*.expected.json"))
MODES = ("stored", "inline")


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _sidecar(name: str) -> dict[str, Any]:
    return sidecar(FOLDER, name)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScenarioServers]:
    with scenario_servers(tmp_path_factory, FOLDER, SCENARIOS) as found:
        yield found


_ANSWERS: dict[tuple[int, str, str], dict[str, Any]] = {}


def _answer(mode: str, name: str, servers: ScenarioServers) -> dict[str, Any]:
    key = (id(servers), mode, name)
    if key in _ANSWERS:
        return _ANSWERS[key]
    sidecar = _sidecar(name)
    if mode == "stored":
        client, ids = servers.loaded(name)
        query = urlencode(
            [("asOf", sidecar["asOf"])] + [("service", s) for s in sidecar["services"]]
        )
        response = client.get(f"/fhir/Patient/{ids[name]}/$cs-eligibility?{query}")
    else:
        client = servers.empty(name)
        parameter: list[dict[str, Any]] = [
            {"name": "bundle", "resource": bundle(FOLDER, name)},
            {"name": "asOf", "valueDate": sidecar["asOf"]},
        ] + [{"name": "service", "valueCode": s} for s in sidecar["services"]]
        response = client.post(
            "/fhir/Patient/$cs-eligibility",
            json={"resourceType": "Parameters", "parameter": parameter},
            headers={"Content-Type": FHIR_JSON},
        )
        assert history_total(client) == 0, f"{name}: the inline evaluation stored something"
    assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:2000]}"
    _ANSWERS[key] = response.json()
    return _ANSWERS[key]


def _observed(answer: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The answer in the sidecar's shape, restricted to the criteria the sidecar asserts."""
    items = answer.get("parameter", [])
    services: dict[str, Any] = {}
    criteria: dict[str, list[str]] = {}
    for item in _params(items, "service"):
        code = (_part_value(item, "code") or {}).get("code")
        assert code not in services, f"service {code} answered twice"
        services[code] = {
            "result": _part_value(item, "result"),
            "determination": _part_value(item, "determination"),
        }
        for criterion in _params(item.get("part", []), "criterion"):
            key = f"{code}/{_part_value(criterion, 'id')}"
            criteria.setdefault(key, []).append(_part_value(criterion, "result"))
    observed: dict[str, Any] = {
        "baseline": _part_value(_one(items, "baseline"), "result"),
        "service": services,
    }
    if "criteria" in expected:
        observed["criteria"] = {
            key: (found[0] if (found := criteria.get(key)) and len(found) == 1 else found)
            for key in expected["criteria"]
        }
    return observed


def test_the_suite_covers_every_service() -> None:
    assert len(SCENARIOS) >= 45
    asked = {code for name in SCENARIOS for code in _sidecar(name)["services"]}
    codes = _load(ROOT / "profiles" / "codesystems" / "CodeSystem-community-supports.json")
    assert asked == {c["code"] for c in codes["concept"]}


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("mode", MODES)
def test_scenario(mode: str, name: str, servers: ScenarioServers) -> None:
    sidecar = _sidecar(name)
    answer = _answer(mode, name, servers)
    items = answer.get("parameter", [])
    assert _part_value({"part": items}, "ruleSetVersion") == "cs-iehp-2024.10"
    assert _part_value({"part": items}, "asOf") == sidecar["asOf"]
    assert _observed(answer, sidecar["expect"]) == sidecar["expect"], sidecar["description"]
    order = [(_part_value(i, "code") or {}).get("code") for i in _params(items, "service")]
    assert order == list(dict.fromkeys(sidecar["services"]))
    if mode == "inline":
        full_urls = {e["fullUrl"] for e in _load(FOLDER / f"{name}.json")["entry"]}
        assert set(_evidence(items)) <= full_urls
    else:
        client = servers.loaded(name)[0]
        for reference in set(_evidence(items)):
            response = client.get(f"/fhir/{reference.removeprefix(f'{BASE}/')}")
            assert response.status_code == 200, f"evidence {reference}: {response.status_code}"


def test_every_answer_conforms_to_the_operation_definition(servers: ScenarioServers) -> None:
    definition = _load(DEFINITION)
    problems = [
        f"{mode} {name}: {problem}"
        for mode in MODES
        for name in SCENARIOS
        for problem in check_output(definition, _answer(mode, name, servers))
    ]
    assert problems == [], "\n".join(problems[:50])


def test_committed_files_are_the_generator_output() -> None:
    loader = importlib.machinery.SourceFileLoader("cs_eligibility_scenarios", str(GENERATOR))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    try:
        loader.exec_module(module)
        files: dict[str, str] = module.render()
    finally:
        del sys.modules[loader.name]
    committed = {p.name for p in FOLDER.iterdir() if p.is_file()}
    assert committed == set(files), "run scripts/cs-eligibility-scenarios"
    stale = [n for n, text in files.items() if (FOLDER / n).read_text(encoding="utf-8") != text]
    assert stale == [], f"run scripts/cs-eligibility-scenarios: {stale[:10]}"
