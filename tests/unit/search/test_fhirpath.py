"""The FHIRPath engine on SearchParameter expressions (its search subset): every search
expression compiles, and extractors agree with fhirpathpy (the reference FHIRPath engine) on
realistic resources.

fhirpathpy 2.2 does not implement ``resolve()``, reads a leading ``Resource.`` as a type
no resource has, and takes ``ofType(DateTime)`` as the system type, which no FHIR value has;
the oracle below works around the three."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson
import pytest
from fhirpathpy.models import models

from server.fhir.conformance import read_folder
from server.fhir.definitions import PROFILES, r4_search_parameters
from server.fhir.fhirpath import Node, compile_fhirpath, output_types
from server.fhir.fhirpath import compile_search_expression as compile_expression
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.registry import load_registry
from tests.example_resources import example_resources, one_per_shape

SAMPLES = Path(__file__).with_name("fhirpath_samples.json")
R4 = models["r4"]

# vendored expressions naming elements R4 does not have (DeviceDefinition.classification is
# R5): they select nothing, so the compiler rejects them
UNSUPPORTED = {
    ("http://hl7.org/fhir/SearchParameter/DeviceDefinition-classification", "DeviceDefinition")
}

# where R4 FHIRPath and fhirpathpy 2.2 disagree, the expected value is given by hand below
DEVIATIONS = {"Patient.deceased.exists() and Patient.deceased != false"}


def samples() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = orjson.loads(SAMPLES.read_bytes())
    return data


@cache
def registry_params() -> list[tuple[str, Any]]:
    registry = load_registry()
    out = []
    for type in sorted(RESOURCE_TYPES):
        for _, param in sorted(registry.indexed(type).items()):
            out.append((type, param))
    return out


def definitions() -> list[dict[str, Any]]:
    custom = read_folder(PROFILES / "searchparameters", "SearchParameter")
    return list(r4_search_parameters()) + custom


def plain(value: Any) -> Any:
    """JSON value with every number as a float (fhirpathpy returns decimals)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def branches(expression: str) -> list[str]:
    """The top-level ``|`` alternatives of an expression."""
    out, depth, start, quoted = [], 0, 0, False
    for i, char in enumerate(expression):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == "|":
            out.append(expression[start:i].strip())
            start = i + 1
    out.append(expression[start:].strip())
    return out


RESOLVE = re.compile(r"^(.*)\.where\((resolve\(\) is \w+(?: or resolve\(\) is \w+)*)\)$")


def target_type(reference: Any, resource: dict[str, Any]) -> str | None:
    text = reference.get("reference", "") if isinstance(reference, dict) else ""
    if text.startswith("#"):
        for item in resource.get("contained", []):
            if item.get("id") == text[1:]:
                return str(item["resourceType"])
        return None
    parts = text.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-2] if len(parts) >= 2 else None


def oracle(resource: dict[str, Any], expression: str) -> list[Any]:
    """fhirpathpy's answer; ``where(resolve() is T)`` is applied here, since fhirpathpy does
    not resolve references, and ``ofType(DateTime)`` is read as FHIR ``dateTime``."""
    expression = expression.replace("ofType(DateTime)", "ofType(dateTime)")
    expression = re.sub(
        r"(^|\| )(Resource|DomainResource)\.", rf"\g<1>{resource['resourceType']}.", expression
    )
    env = {"resource": resource}
    if "resolve()" not in expression:
        result: list[Any] = plain(fhirpathpy.evaluate(resource, expression, env, R4))
        return result
    out: list[Any] = []
    for branch in branches(expression):
        match = RESOLVE.match(branch)
        if match is None:
            found = plain(fhirpathpy.evaluate(resource, branch, env, R4))
        else:
            types = set(re.findall(r"is (\w+)", match.group(2)))
            found = [
                plain(value)
                for value in fhirpathpy.evaluate(resource, match.group(1), env, R4)
                if target_type(value, resource) in types
            ]
        out.extend(value for value in found if value not in out)
    return out


def values(nodes: list[Node]) -> list[Any]:
    return [plain(value) for _, value in nodes]


# -- every expression compiles ----------------------------------------------------------------


def test_every_search_expression_compiles_for_every_base_type() -> None:
    failures = set()
    compiled = 0
    for definition in definitions():
        expression = definition.get("expression")
        if not expression:
            continue
        for base in definition["base"]:
            types = RESOURCE_TYPES if base in ("Resource", "DomainResource") else {base}
            for type in sorted(types & RESOURCE_TYPES):
                try:
                    compile_expression(expression, type)
                except ValueError:
                    failures.add((definition["url"], type))
                    continue
                compiled += 1
    assert failures == UNSUPPORTED
    assert compiled > 2000


def test_every_composite_component_compiles_in_the_type_of_its_composite() -> None:
    contexts_seen = set()
    for definition in definitions():
        if definition.get("type") != "composite":
            continue
        for base in definition["base"]:
            if base not in RESOURCE_TYPES:
                continue
            contexts = output_types(definition["expression"], base)
            assert contexts, definition["url"]
            for context in contexts:
                contexts_seen.add(context)
                for component in definition["component"]:
                    compile_expression(component["expression"], context)
    assert {"Observation", "Observation_Component", "UsageContext"} <= contexts_seen


def test_composite_roots_carry_their_backbone_type() -> None:
    assert output_types("Observation | Observation.component", "Observation") == {
        "Observation",
        "Observation_Component",
    }
    assert output_types("MolecularSequence.variant", "MolecularSequence") == {
        "MolecularSequence_Variant"
    }


def test_choice_elements_match_the_fhirpath_r4_model() -> None:
    """Every choice element reads exactly the variants the R4 model lists (the R4 JSON schema
    has no ``valueMeta``)."""
    for path, variants in R4["choiceTypePaths"].items():
        root = path.split(".")[0]
        if root not in RESOURCE_TYPES or path == "ElementDefinition.extension.value":
            continue
        expected = {
            v[0].lower() + v[1:] if v[0].lower() + v[1:] in PRIMITIVES else v for v in variants
        }
        assert output_types(path, root) == expected - {"Meta"}, path


PRIMITIVES = {
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
    "instant", "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt",
    "uri", "url", "uuid",
}  # fmt: skip


# -- agreement with fhirpathpy --------------------------------------------------------------


def cases() -> Iterator[tuple[str, str, str]]:
    """(resource id, parameter code, expression) for every parameter of every sample."""
    by_type: dict[str, list[Any]] = {}
    for type, param in registry_params():
        by_type.setdefault(type, []).append(param)
    for sample in samples():
        for param in by_type[sample["resourceType"]]:
            yield sample["id"], param.code, param.expression


def test_extractors_agree_with_fhirpathpy_on_the_samples() -> None:
    mismatches = []
    nonempty = 0
    for sample in samples():
        type = sample["resourceType"]
        for param_type, param in registry_params():
            if param_type != type or param.expression in DEVIATIONS:
                continue
            if (param.url, type) in UNSUPPORTED:
                continue
            got = values(compile_expression(param.expression, type)(sample, sample))
            expected = oracle(sample, param.expression)
            nonempty += bool(got)
            if got != expected:
                mismatches.append((sample["id"], param.code, got, expected))
    assert mismatches == []
    assert nonempty > 300


@pytest.mark.slow
def test_every_vendored_expression_agrees_with_fhirpathpy_on_the_examples() -> None:
    """Every SearchParameter expression of every resource type, on an example resource of
    that type of every shape, both as a search expression and through the full language (the
    invariants' entry point): one engine, one answer, the oracle's."""
    mismatches = []
    checked: set[str] = set()
    nonempty = 0
    for resource in one_per_shape(
        r for r in example_resources() if r["resourceType"] in RESOURCE_TYPES
    ):
        type = resource["resourceType"]
        for param_type, param in registry_params():
            if param_type != type or (param.url, type) in UNSUPPORTED:
                continue
            got = values(compile_expression(param.expression, type)(resource, resource))
            full = values(compile_fhirpath(param.expression, type)(resource, resource))
            expected = got if param.expression in DEVIATIONS else oracle(resource, param.expression)
            if not got == full == expected:
                mismatches.append((resource.get("id"), param.code, got, full, expected))
            checked.add(param.url)
            nonempty += bool(got)
    assert mismatches == []
    assert len(checked) > 150
    assert nonempty > 1000


def test_the_full_language_agrees_with_the_search_subset_on_every_example() -> None:
    for sample in samples() + list(example_resources()):
        type = sample["resourceType"]
        for param_type, param in registry_params():
            if param_type != type or (param.url, type) in UNSUPPORTED:
                continue
            search = compile_expression(param.expression, type)(sample, sample)
            assert compile_fhirpath(param.expression, type)(sample, sample) == search


def test_composite_components_agree_with_fhirpathpy_per_root() -> None:
    checked = 0
    for sample in samples():
        type = sample["resourceType"]
        for param_type, param in registry_params():
            if param_type != type or param.type != "composite":
                continue
            roots = compile_expression(param.expression, type)(sample, sample)
            expected_roots = [
                f"({branch})[{i}]"
                for branch in branches(param.expression)
                for i in range(len(fhirpathpy.evaluate(sample, branch, {}, R4)))
            ]
            assert len(roots) == len(expected_roots), param.code
            for (root_type, root), root_path in zip(roots, expected_roots, strict=True):
                for component in param.components:
                    got = values(compile_expression(component.expression, root_type)(root, sample))
                    expected = oracle(sample, f"{root_path}.select({component.expression})")
                    assert got == expected, (sample["id"], param.code, root_path, component)
                    checked += bool(got)
    assert checked > 20


def test_extension_filters_agree_with_fhirpathpy() -> None:
    patient = samples()[0]
    race = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
    for expression in (
        f"Patient.extension('{race}').extension('ombCategory').value",
        f"Patient.extension.where(url = '{race}').extension.where(url = 'text').value",
        f"Patient.extension.where(url = '{race}').extension.value.ofType(Coding).code",
        "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex')"
        ".value.ofType(code)",
        "Patient.extension.url",
    ):
        got = compile_expression(expression, "Patient")(patient, patient)
        assert values(got) == oracle(patient, expression), expression
        assert got, expression


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.name.where(use = 'official' and family = 'Garcia').given",
        "Patient.name.where(use = 'official' or use = 'maiden').family",
        "Patient.name.where(use != 'official').given",
        "Patient.telecom.where(system = 'phone').first().value",
        "Patient.telecom.where(system = 'phone').last().value",
        "Patient.name[1].given",
        "Patient.name.given[2]",
        "Patient.address.exists()",
        "Patient.photo.exists()",
        "Patient.photo.empty()",
        "Patient.name.exists(use = 'maiden')",
        "Patient.active.not()",
        "Patient.deceased is boolean",
        "Patient.deceased.is(dateTime)",
        "(Patient.deceased as boolean)",
        "Patient.deceased.as(boolean)",
        "Patient.name.given | Patient.name.family | Patient.name.given",
        "Patient.communication.language.coding.where(code = 'es').system",
        "%resource.id",
        "Patient.contact.name.given",
        "Patient.telecom.where(rank = 1).value",
        "Patient.communication.where(preferred = true).language.text",
        "Patient.name.where(period.exists()).family",
        "Patient.where(birthDate = @1980-01-01).gender",
        "Patient.where(birthDate > @1979-12-31).name.family",
    ],
)
def test_more_constructs_agree_with_fhirpathpy(expression: str) -> None:
    patient = samples()[0]
    got = compile_expression(expression, "Patient")(patient, patient)
    assert values(got) == oracle(patient, expression)


def test_expressions_on_backbone_and_datatype_contexts() -> None:
    observation = next(s for s in samples() if s["id"] == "obs-bp")
    component = observation["component"][1]
    assert compile_expression("value.ofType(Quantity)", "Observation_Component")(
        component, observation
    ) == [("Quantity", component["valueQuantity"])]
    assert compile_expression("code.coding.code", "Observation_Component")(
        component, observation
    ) == [("code", "8462-4")]
    quantity = component["valueQuantity"]
    assert compile_expression("value | unit", "Quantity")(quantity, observation) == [
        ("decimal", 80.5),
        ("string", "mmHg"),
    ]
    assert compile_expression("%resource.status", "Observation_Component")(
        component, observation
    ) == [("code", "final")]


# -- type labels ----------------------------------------------------------------------------


def sample(id: str) -> dict[str, Any]:
    return next(s for s in samples() if s["id"] == id)


def extract(expression: str, resource: dict[str, Any], context: str | None = None) -> list[Node]:
    return compile_expression(expression, context or resource["resourceType"])(resource, resource)


def test_type_labels() -> None:
    weight = sample("obs-weight")
    patient = sample("pat-maria")
    assert extract("(Observation.value.ofType(Quantity))", weight) == [
        ("Quantity", weight["valueQuantity"])
    ]
    assert extract("Patient.birthDate", patient) == [("date", "1980-01-01")]
    assert extract("Patient.gender", patient) == [("code", "female")]
    assert extract("Resource.id", patient) == [("id", "pat-maria")]
    assert extract("Resource.meta.lastUpdated", patient) == [
        ("instant", "2024-02-01T10:15:00.123Z")
    ]
    assert extract("Patient.active", patient) == [("boolean", True)]
    assert extract("Patient.name.given", patient)[0] == ("string", "Maria")
    assert extract("Patient.identifier", patient)[0][0] == "Identifier"
    assert extract("Patient.contact", patient)[0][0] == "Patient_Contact"
    assert extract("Observation.effective", weight) == [("dateTime", "2024-01-15")]
    assert [t for t, _ in extract("Observation.effective", sample("obs-bp"))] == ["Period"]
    assert [t for t, _ in extract("Observation.effective", sample("obs-sdoh"))] == ["Timing"]
    assert [t for t, _ in extract("Observation.effective", sample("obs-note"))] == ["instant"]
    assert [t for t, _ in extract("Condition.onset.ofType(Age)", sample("cond-dm"))] == ["Age"]
    assert [t for t, _ in extract("Group.characteristic.value", sample("grp-1"))] == [
        "CodeableConcept",
        "boolean",
        "Range",
        "Reference",
    ]
    assert [t for t, _ in extract("Observation.contained", sample("obs-bp"))] == ["Device"]
    assert [t for t, _ in extract("Bundle.entry[0].resource", sample("bundle-doc"))] == [
        "Composition"
    ]
    assert extract("ServiceRequest.instantiatesCanonical", sample("sr-1"))[0][0] == "canonical"
    assert extract("Patient.deceased.exists()", patient) == [("boolean", True)]


def test_of_type_includes_derived_types() -> None:
    condition = sample("cond-range")
    assert [t for t, _ in extract("Condition.abatement.ofType(Quantity)", condition)] == ["Age"]
    assert extract("Patient.gender.ofType(string)", sample("pat-maria")) == [("code", "female")]
    assert extract("Observation.component.value.ofType(DateTime)", sample("obs-bp")) == [
        ("dateTime", "2024-02-02T07:58:00Z")
    ]


def test_deceased_is_false_unless_the_patient_has_died() -> None:
    expression = "Patient.deceased.exists() and Patient.deceased != false"
    living = sample("pat-maria")
    dead = sample("pat-deceased")
    assert extract(expression, living) == [("boolean", False)]
    assert extract(expression, dead) == [("boolean", True)]
    assert extract(expression, {"resourceType": "Patient"}) == [("boolean", False)]
    assert extract(expression, {"resourceType": "Patient", "deceasedBoolean": True}) == [
        ("boolean", True)
    ]


# -- union branches of other types, references --------------------------------------------


def test_branches_rooted_in_other_types_select_nothing() -> None:
    condition = sample("cond-dm")
    got = extract("AllergyIntolerance.code | Condition.code | Observation.code", condition)
    assert got == [("CodeableConcept", condition["code"])]
    assert extract("Patient.name", condition) == []


def test_resource_and_domain_resource_contexts_use_the_resource_type() -> None:
    patient = sample("pat-maria")
    bundle = sample("bundle-doc")
    names = compile_expression("Patient.name.family | Bundle.type", "Resource")
    assert values(names(patient, patient)) == ["Garcia", "Lopez"]
    assert names(bundle, bundle) == [("code", "document")]
    domain = compile_expression("DomainResource.text | Resource.id", "DomainResource")
    assert domain(patient, patient) == [("id", "pat-maria")]
    assert domain(bundle, bundle) == []


@pytest.mark.parametrize(
    ("reference", "kept"),
    [
        ("Patient/1", True),
        ("Patient/1/_history/3", True),
        ("https://other.example.org/fhir/Patient/1", True),
        ("https://other.example.org/fhir/Patient/1/_history/2", True),
        ("Group/1", False),
        ("https://other.example.org/fhir/Group/1", False),
        ("urn:uuid:6b1d0f4e-8f7a-4c8b-9d1c-2a7e5f3b9c00", False),
        ("#pat", True),
        ("#", False),
        ("#grp", False),
        ("#missing", False),
        ("Patient", False),
        ("", False),
    ],
)
def test_where_resolve_is_keeps_references_by_target_type(reference: str, kept: bool) -> None:
    resource = {
        "resourceType": "Observation",
        "contained": [
            {"resourceType": "Patient", "id": "pat"},
            {"resourceType": "Group", "id": "grp"},
        ],
        "subject": {"reference": reference},
    }
    got = extract("Observation.subject.where(resolve() is Patient)", resource)
    assert got == ([("Reference", resource["subject"])] if kept else [])
    container = extract("Observation.subject.where(resolve() is Observation)", resource)
    assert bool(container) == (reference == "#")


def test_where_resolve_with_alternatives_and_references_without_a_target() -> None:
    resource = {
        "resourceType": "Appointment",
        "participant": [
            {"actor": {"reference": "Patient/1"}},
            {"actor": {"reference": "Group/2"}},
            {"actor": {"reference": "Location/3"}},
            {"actor": {"identifier": {"value": "x"}}},
            {"actor": {"display": "someone", "type": "Patient"}},
        ],
    }
    got = extract(
        "Appointment.participant.actor.where(resolve() is Patient or resolve() is Group)",
        resource,
    )
    assert values(got) == [{"reference": "Patient/1"}, {"reference": "Group/2"}]


# -- compile errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "context"),
    [
        ("Patient.nmae", "Patient"),
        ("Patient.name.nonsense", "Patient"),
        ("Patient.link.other.resolve()", "Patient"),
        ("Patient.link.other.resolve().name", "Patient"),
        ("Patient.generalPractitioner.where(resolve().active = true)", "Patient"),
        ("Patient.name.where(resolve() is Patient)", "Patient"),
        ("Patient.name.select(given)", "Patient"),
        ("Patient.name.count() > 1", "Patient"),
        ("Patient.birthDate + 1 year", "Patient"),
        ("Patient.name.ofType(Frobnicate)", "Patient"),
        ("Frobnicate.name", "Patient"),
        ("Patient.name[use]", "Patient"),
        ("Patient.name.", "Patient"),
        ("Patient.name)", "Patient"),
        ("Patient.name.where(", "Patient"),
        ("Patient.name #", "Patient"),
        ("%context.name", "Patient"),
        ("Patient.extension(url)", "Patient"),
        ("Patient.name", "NotAType"),
        ("Patient.name", "string"),
    ],
)
def test_unsupported_or_wrong_expressions_fail_to_compile(expression: str, context: str) -> None:
    with pytest.raises(ValueError):
        compile_expression(expression, context)


@pytest.mark.parametrize(
    "expression", ["Patient.name.select(given)", "Patient.name.count() > 1", "%context.name"]
)
def test_the_search_subset_refuses_what_the_full_language_compiles(expression: str) -> None:
    """One language: SearchParameters may use only the functions an index row is made of."""
    with pytest.raises(ValueError):
        compile_expression(expression, "Patient")
    patient = sample("pat-maria")
    assert compile_fhirpath(expression, "Patient")(patient, patient)


def test_string_literals_with_escapes() -> None:
    resource = {"resourceType": "Patient", "name": [{"family": "O'Brien"}, {"family": "Smith"}]}
    got = extract("Patient.name.where(family = 'O\\'Brien').family", resource)
    assert got == [("string", "O'Brien")]


# -- odd data never raises ------------------------------------------------------------------

ODD: list[Any] = [
    None,
    "text",
    7,
    1.5,
    True,
    [],
    {},
    [None],
    [[{}]],
    [1, "a", None, {}],
    {"x": [None]},
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "resourceType":
                yield prefix + (key,)
                yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield prefix + (i,)
            yield from paths(item, prefix + (i,))


def replaced(resource: dict[str, Any], path: tuple[Any, ...], odd: Any) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = copy.deepcopy(odd)
    return out


@cache
def extractors(type: str) -> list[Any]:
    out = []
    for param_type, param in registry_params():
        if param_type == type and (param.url, type) not in UNSUPPORTED:
            out.append(compile_expression(param.expression, type))
    return out


def test_odd_shapes_anywhere_never_raise() -> None:
    for resource in samples():
        type = resource["resourceType"]
        for path in paths(resource):
            for odd in ODD:
                broken = replaced(resource, path, odd)
                for extractor in extractors(type):
                    for node_type, value in extractor(broken, broken):
                        assert isinstance(node_type, str)
                        assert value is not None


def test_odd_focus_and_resource_never_raise() -> None:
    for type in sorted(RESOURCE_TYPES):
        for extractor in extractors(type):
            for odd in ODD + [{"resourceType": ["Patient"]}, {"resourceType": type}]:
                extractor(odd, odd)
                extractor(odd, None)
    component = compile_expression("%resource.referenceSeq.chromosome", "MolecularSequence_Variant")
    for odd in ODD:
        assert component(odd, odd) == []


def test_wrong_shapes_are_skipped() -> None:
    resource = {
        "resourceType": "Patient",
        "birthDate": {"value": "1980"},
        "name": ["Garcia", {"family": ["Lopez"], "given": ["Ann", None, {"x": 1}, 3]}],
        "telecom": {"system": "email", "value": "a@example.org"},
        "gender": ["female"],
        "contained": [{"resourceType": 5}, {"id": "x"}, {"resourceType": "Nope"}],
    }
    assert extract("Patient.birthDate", resource) == []
    assert extract("Patient.name.given", resource) == [("string", "Ann")]
    assert extract("Patient.name.family", resource) == [("string", "Lopez")]
    assert extract("Patient.telecom.where(system = 'email').value", resource) == [
        ("string", "a@example.org")
    ]
    assert extract("Patient.gender", resource) == [("code", "female")]
    assert extract("Patient.contained", resource) == []


def test_resolve_on_a_choice_keeps_only_matching_references() -> None:
    composition = sample("comp-2")
    expression = "Composition.relatesTo.target.where(resolve() is Composition)"
    assert extract(expression, composition) == [("Reference", {"reference": "Composition/comp-1"})]


def test_task_output_references() -> None:
    task = sample("task-referral")
    assert extract("Task.output.value.ofType(Reference)", task) == [
        ("Reference", {"reference": "Procedure/proc-1"}),
        ("Reference", {"reference": "ServiceRequest/sr-2"}),
    ]
