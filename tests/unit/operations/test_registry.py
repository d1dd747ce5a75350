"""The operations registry: an operation is what its OperationDefinition says (name, types,
levels, affectsState, inputs); the implementation adds behaviour only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from server.fhir.conformance import PROFILES, load_conformance
from server.operations.call import Call, Implementation
from server.operations.registry import (
    IMPLEMENTATIONS,
    Operation,
    OperationError,
    build,
    find,
    operations,
)


def _answer(call: Call) -> dict[str, Any]:
    return {"resourceType": "Parameters"}


def _definition(**fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "resourceType": "OperationDefinition",
        "id": "probe",
        "url": "http://example.org/fhir/OperationDefinition/probe",
        "name": "Probe",
        "status": "active",
        "kind": "operation",
        "code": "probe",
        "resource": ["Basic"],
        "system": False,
        "type": False,
        "instance": True,
        "affectsState": False,
        "parameter": [
            {"name": "size", "use": "in", "min": 1, "max": "1", "type": "integer"},
            {"name": "subject", "use": "in", "min": 0, "max": "1", "type": "Reference"},
            {"name": "result", "use": "out", "min": 1, "max": "1", "type": "boolean"},
        ],
    }
    spec.update(fields)
    return spec


def _package(tmp_path: Path, *definitions: dict[str, Any]) -> Path:
    folder = tmp_path / "operations"
    folder.mkdir(parents=True)
    for spec in definitions:
        path = folder / f"OperationDefinition-{spec['id']}.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
    return tmp_path


PROBE = Implementation("probe", _answer)


def test_levels_types_state_and_inputs_come_from_the_definition(tmp_path: Path) -> None:
    package = load_conformance(_package(tmp_path, _definition()), with_r4=False)
    (operation,) = build(package, [PROBE])
    assert operation.name == "probe" and operation.definition == "probe"
    assert operation.types == frozenset({"Basic"})
    assert (operation.system_level, operation.type_level, operation.instance_level) == (
        False,
        False,
        True,
    )
    assert not operation.affects_state and operation.get_allowed
    assert [p["name"] for p in operation.inputs] == ["size", "subject"]
    assert [p["name"] for p in operation.query_inputs] == ["size"]  # a Reference needs a body
    assert operation.url == "http://example.org/fhir/OperationDefinition/probe"
    table = [operation]
    assert find("instance", "Basic", "probe", table) is operation
    assert find("type", "Basic", "probe", table) is None
    assert find("instance", "Patient", "probe", table) is None
    assert find("system", "", "probe", table) is None


def test_a_changed_definition_changes_the_operation_and_nothing_else_does(tmp_path: Path) -> None:
    changed = _definition(
        resource=["Patient", "Group"], system=True, type=True, instance=False, affectsState=True
    )
    (operation,) = build(load_conformance(_package(tmp_path, changed), with_r4=False), [PROBE])
    assert operation.types == frozenset({"Patient", "Group"})
    assert (operation.system_level, operation.type_level, operation.instance_level) == (
        True,
        True,
        False,
    )
    assert operation.affects_state and not operation.get_allowed
    assert operation.writes({}) is True  # no writes_when: every call writes
    table = [operation]
    assert find("type", "Group", "probe", table) is operation
    assert find("system", "", "probe", table) is operation
    assert find("instance", "Patient", "probe", table) is None


def test_a_definition_on_resource_applies_to_every_type() -> None:
    operation = Operation(_definition(resource=["Resource"], type=True), PROBE)
    assert operation.types == frozenset() and operation.runs_at("type", "Observation")


def test_a_definition_without_implementation_stops_the_table(tmp_path: Path) -> None:
    other = _definition(id="other", url="http://example.org/fhir/OperationDefinition/other")
    package = load_conformance(_package(tmp_path, _definition(), other), with_r4=False)
    with pytest.raises(OperationError, match="OperationDefinition/other has no implementation"):
        build(package, [PROBE])


def test_an_implementation_without_definition_stops_the_table(tmp_path: Path) -> None:
    package = load_conformance(_package(tmp_path, _definition()), with_r4=False)
    with pytest.raises(OperationError, match="no OperationDefinition in the package for gone"):
        build(package, [PROBE, Implementation("gone", _answer)])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"code": ""}, "has no code"),
        ({"system": False, "type": False, "instance": False}, "runs at no level"),
        ({"resource": [], "type": True}, "names no resource"),
        ({"instance": "yes"}, "must be booleans"),
        ({"affectsState": "no"}, "affectsState must be a boolean"),
    ],
)
def test_a_definition_that_cannot_say_where_the_operation_runs_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(OperationError, match=message):
        Operation(_definition(**fields), PROBE)


def test_the_server_runs_every_operation_of_its_package_as_defined() -> None:
    package = load_conformance(PROFILES, with_r4=False)
    specs = {spec["id"]: spec for spec in package.local("OperationDefinition")}
    table = operations()
    assert sorted(o.definition for o in table) == sorted(specs)
    assert len(IMPLEMENTATIONS) == len(specs)
    for operation in table:
        spec = specs[operation.definition]
        assert operation.name == spec["code"]
        assert operation.system_level == spec["system"]
        assert operation.type_level == spec["type"]
        assert operation.instance_level == spec["instance"]
        assert operation.affects_state == spec.get("affectsState", False)
        assert list(operation.inputs) == [p for p in spec["parameter"] if p["use"] == "in"]


def test_the_package_with_a_changed_definition_is_followed(tmp_path: Path) -> None:
    """A copy of profiles/ whose $validate runs only at type level on Patient."""
    copy = tmp_path / "profiles"
    shutil.copytree(PROFILES, copy)
    path = copy / "operations" / "OperationDefinition-Resource-validate.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec.update(resource=["Patient"], instance=False)
    path.write_text(json.dumps(spec), encoding="utf-8")
    table = operations(load_conformance(copy, with_r4=False))
    (validate,) = [o for o in table if o.name == "validate"]
    assert validate.types == frozenset({"Patient"}) and not validate.instance_level
    assert find("type", "Patient", "validate", table) is validate
    assert find("type", "Observation", "validate", table) is None
    assert find("instance", "Patient", "validate", table) is None
