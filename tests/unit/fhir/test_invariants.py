"""The FHIRPath engine (server.fhir.fhirpath) on invariants agrees with fhirpathpy, the
reference FHIRPath engine, on realistic resources and, for every invariant of our profiles, on
every example resource of its type; what fhirpathpy does not implement (``memberOf``,
``hasValue``) and compile-time refusals are checked by hand."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson
import pytest
from fhirpathpy.models import models

from server.fhir.fhirpath import FhirPathError, compile_fhirpath, holds
from server.fhir.terminology import Terminology
from tests.example_resources import example_resources

PROFILES = Path(__file__).parents[3] / "profiles" / "structuredefinitions"

R4 = models["r4"]
PROGRAM = "http://example.org/cs/program"

CARE_PLAN: dict[str, Any] = {
    "resourceType": "CarePlan",
    "status": "active",
    "intent": "plan",
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2026-01-01", "end": "2026-06-30"},
    "category": [{"coding": [{"system": PROGRAM, "code": "ecm"}], "text": "ECM"}],
    "extension": [
        {
            "url": "http://example.org/icp-domain",
            "extension": [
                {"url": "domain", "valueCoding": {"system": "urn:d", "code": "mental"}},
                {"url": "status", "valueCode": "addressed"},
            ],
        },
        {
            "url": "http://example.org/icp-domain",
            "extension": [
                {"url": "domain", "valueCoding": {"system": "urn:d", "code": "oral"}},
                {"url": "status", "valueCode": "not-applicable"},
            ],
        },
    ],
    "activity": [
        {"detail": {"status": "in-progress", "code": {"text": "visit"}, "kind": "Appointment"}},
        {"detail": {"status": "not-started", "scheduledString": "weekly"}},
        {"reference": {"reference": "ServiceRequest/s1"}},
    ],
    "note": [{"text": "Call first"}, {"text": "  call   FIRST "}],
}
DRAFT_PLAN: dict[str, Any] = {
    "resourceType": "CarePlan",
    "status": "draft",
    "intent": "plan",
    "subject": {"reference": "Patient/p1"},
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "valueQuantity": {"value": 72, "unit": "/min"},
    "effectiveDateTime": "2026-02-03T10:00:00Z",
    "component": [
        {"code": {"text": "a"}, "valueString": "x"},
        {"code": {"text": "b"}, "valueQuantity": {"value": 1.5}},
        {"code": {"text": "c"}, "valueBoolean": False},
    ],
}
TASK: dict[str, Any] = {
    "resourceType": "Task",
    "status": "rejected",
    "intent": "order",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "focus": {"reference": "ServiceRequest/s1"},
    "for": {"reference": "Patient/p1"},
    "authoredOn": "2026-01-02",
    "input": [{"type": {"text": "n"}, "valueInteger": 3}],
}
TASK_WITH_REASON = {**TASK, "statusReason": {"text": "no capacity"}, "status": "on-hold"}

SAMPLES: dict[str, list[dict[str, Any]]] = {
    "CarePlan": [CARE_PLAN, DRAFT_PLAN],
    "Observation": [OBSERVATION, {**OBSERVATION, "valueQuantity": None, "component": None}],
    "Task": [TASK, TASK_WITH_REASON],
}

EXPRESSIONS: list[tuple[str, str]] = [
    ("CarePlan", "status = 'active'"),
    ("CarePlan", "CarePlan.status != 'draft'"),
    ("CarePlan", "status in ('active' | 'completed')"),
    ("CarePlan", "('active' | 'completed') contains status"),
    ("CarePlan", "status = 'draft' or period.exists()"),
    ("CarePlan", "(status = 'active' or status = 'completed') implies period.start.exists()"),
    ("CarePlan", "period.end.exists() implies period.start.exists()"),
    ("CarePlan", "period.start <= period.end"),
    ("CarePlan", "period.start < period.end and period.end > '2026-03-01'"),
    ("CarePlan", "subject.reference.startsWith('Patient/')"),
    ("CarePlan", "subject.reference.contains('/')"),
    ("CarePlan", "subject.reference.matches('^Patient/[A-Za-z0-9-.]+$')"),
    ("CarePlan", "activity.count()"),
    ("CarePlan", "activity.count() >= 2"),
    ("CarePlan", "activity.detail.status"),
    ("CarePlan", "activity.where(detail.exists()).count() = 2"),
    ("CarePlan", "activity.all(detail.exists() or reference.exists())"),
    ("CarePlan", "activity.all(detail.exists())"),
    ("CarePlan", "activity.detail.select(status)"),
    ("CarePlan", "activity.detail.scheduled.ofType(string)"),
    ("CarePlan", "activity.detail.where(kind = 'Appointment').code.text"),
    ("CarePlan", "activity.first().detail.status"),
    ("CarePlan", "activity.last().reference.reference"),
    ("CarePlan", "activity.tail().count()"),
    ("CarePlan", "activity[1].detail.status"),
    ("CarePlan", "extension.where(url = 'http://example.org/icp-domain').count() = 2"),
    ("CarePlan", "extension('http://example.org/icp-domain').extension('domain').value.code"),
    (
        "CarePlan",
        "extension('http://example.org/icp-domain').select(extension('domain').value.code)"
        ".isDistinct()",
    ),
    (
        "CarePlan",
        "extension('http://example.org/icp-domain').all(extension('status').exists())",
    ),
    ("CarePlan", "extension.extension.value.ofType(code).distinct()"),
    ("CarePlan", "category.coding.where(system = 'http://example.org/cs/program').code"),
    ("CarePlan", "category.coding.code = 'ecm' xor category.text = 'ECM'"),
    ("CarePlan", "note.text.first() ~ note.text.last()"),
    ("CarePlan", "note.text.first() = note.text.last()"),
    ("CarePlan", "note.text.first() !~ 'x'"),
    ("CarePlan", "note.exists().not()"),
    ("CarePlan", "iif(status = 'active', period.exists(), true)"),
    ("CarePlan", "iif(status = 'draft', 'd', 'o')"),
    ("CarePlan", "%resource.status = status"),
    ("CarePlan", "status.empty() or intent.exists()"),
    ("CarePlan", "{}.exists()"),
    ("CarePlan", "{} = status"),
    ("CarePlan", "(status | intent).count()"),
    ("CarePlan", "status & '-' & intent"),
    ("CarePlan", "note.text.first().length() + 1"),
    ("CarePlan", "status.upper() = 'ACTIVE'"),
    ("CarePlan", "period.start > @2025-12-31"),
    ("CarePlan", "period.start = @2026-01-01 and period.end != @2026-06-29"),
    ("CarePlan", "period.start = @2026-01"),
    ("CarePlan", "@2026-01-01T10:00:00Z > @2026-01-01T09:30:00Z and @T10:00 < @T11:00"),
    ("CarePlan", "status.not()"),
    ("CarePlan", "note.text.skip(1)"),
    ("CarePlan", "activity.take(2).count()"),
    ("CarePlan", "activity.skip(1).take(1).detail.status"),
    ("Observation", "value.ofType(Quantity).value > 60"),
    ("Observation", "value.exists() or component.exists()"),
    ("Observation", "value is Quantity"),
    ("Observation", "(value as Quantity).unit"),
    ("Observation", "component.value.ofType(Quantity).value * 2"),
    ("Observation", "component.value.ofType(boolean).not()"),
    ("Observation", "component.value.ofType(boolean).allFalse()"),
    ("Observation", "component.where(value.ofType(string) = 'x').code.text"),
    ("Observation", "component.all(code.text.exists())"),
    ("Observation", "code.coding.exists(system = 'http://loinc.org' and code = '8867-4')"),
    ("Observation", "effective.ofType(dateTime).exists()"),
    ("Observation", "component.count() div 2"),
    ("Observation", "component.count() mod 2"),
    ("Observation", "component.count() - 1"),
    (
        "Task",
        "status in ('rejected' | 'cancelled' | 'on-hold' | 'failed') implies statusReason.exists()",
    ),  # fmt: skip
    ("Task", "intent = 'order' and code.coding.code = 'fulfill'"),
    ("Task", "focus.reference.exists() and for.exists()"),
    ("Task", "input.value.ofType(integer) = 3"),
    ("Task", "input.value.ofType(integer) > 2.5"),
    ("Task", "input.type.text.single()"),
    ("Task", "authoredOn.exists() and status != 'draft'"),
    ("Task", "statusReason.text.endsWith('capacity')"),
    ("Task", "(statusReason.exists() | focus.exists()).allTrue()"),
    ("Task", "(statusReason.exists() | focus.exists()).anyTrue()"),
    ("Task", "(statusReason.exists() | focus.exists()).anyFalse()"),
]


def oracle_form(expression: str) -> str:
    """fhirpathpy 2.2 applies ``extension(url)`` to the first item of a collection only; the
    spec defines it as ``extension.where(url = url)``, which fhirpathpy evaluates right."""
    return re.sub(r"extension\('([^']*)'\)", r"extension.where(url = '\1')", expression)


def plain(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    return value


def strip(resource: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in resource.items() if v is not None}
    return out


CASES = [
    (type, expression, i) for type, expression in EXPRESSIONS for i in range(len(SAMPLES[type]))
]


@pytest.mark.parametrize(("type", "expression", "sample"), CASES)
def test_agrees_with_fhirpathpy(type: str, expression: str, sample: int) -> None:
    resource = strip(SAMPLES[type][sample])
    evaluate = compile_fhirpath(expression, type)
    ours = plain([value for _, value in evaluate(resource, resource)])
    env = {"resource": resource}
    oracle = plain(fhirpathpy.evaluate(resource, oracle_form(expression), env, R4))
    assert ours == oracle


def profile_invariants() -> list[tuple[str, str, str]]:
    """(key, context type, expression) of every constraint of our profiles."""
    out = []
    for path in sorted(PROFILES.glob("*.json")):
        definition = orjson.loads(path.read_bytes())
        for element in definition.get("differential", {}).get("element", []):
            for constraint in element.get("constraint") or []:
                out.append((constraint["key"], element["path"], constraint["expression"]))
    return out


@pytest.mark.parametrize(
    ("key", "type", "expression"), profile_invariants(), ids=[c[0] for c in profile_invariants()]
)
def test_every_profile_invariant_agrees_with_fhirpathpy_on_the_examples(
    key: str, type: str, expression: str
) -> None:
    """Each invariant of our profiles on every example resource of its type (valid and invalid
    examples, bundle entries): the same collection as fhirpathpy, and it both holds and fails
    somewhere."""
    evaluate = compile_fhirpath(expression, type)
    resources = [r for r in example_resources() if r["resourceType"] == type]
    outcomes = set()
    for resource in resources:
        ours = plain([value for _, value in evaluate(resource, resource)])
        env = {"resource": resource}
        assert ours == plain(fhirpathpy.evaluate(resource, expression, env, R4)), resource.get("id")
        outcomes.add(holds(evaluate(resource, resource)))
    assert resources and {True, False} <= outcomes


def test_every_profile_invariant_is_checked() -> None:
    assert len(profile_invariants()) >= 15


def test_there_are_enough_oracle_cases() -> None:
    assert len(EXPRESSIONS) >= 40


def test_evaluated_on_an_element() -> None:
    evaluate = compile_fhirpath("status = 'in-progress' implies code.exists()", "CarePlan_Detail")
    details = [a["detail"] for a in CARE_PLAN["activity"] if "detail" in a]
    assert [holds(evaluate(d, CARE_PLAN)) for d in details] == [True, True]
    root = compile_fhirpath("%resource.status = 'active'", "CarePlan_Detail")
    assert holds(root(details[0], CARE_PLAN))


@pytest.mark.parametrize(
    ("result", "expected"),
    [([], False), ([("boolean", False)], False), ([("boolean", True)], True),
     ([("string", "x")], True), ([("boolean", False), ("boolean", False)], True)],
)  # fmt: skip
def test_holds(result: list[Any], expected: bool) -> None:
    assert holds(result) is expected


TERMINOLOGY = Terminology(
    [{"resourceType": "CodeSystem", "url": PROGRAM, "content": "complete",
      "concept": [{"code": "ecm"}, {"code": "community-supports"}]}],
    [{"resourceType": "ValueSet", "url": "http://example.org/vs/program",
      "compose": {"include": [{"system": PROGRAM}]}},
     {"resourceType": "ValueSet", "url": "http://example.org/vs/cpt",
      "compose": {"include": [{"system": "http://www.ama-assn.org/go/cpt"}]}}],
)  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("category.first().memberOf('http://example.org/vs/program')", [True]),
        ("category.coding.first().memberOf('http://example.org/vs/program')", [True]),
        ("category.coding.code.first().memberOf('http://example.org/vs/program')", [True]),
        ("status.memberOf('http://example.org/vs/program')", [False]),
        ("note.memberOf('http://example.org/vs/program')", []),
        ("category.first().memberOf('http://example.org/vs/cpt')", []),
        ("status.hasValue()", [True]),
        ("period.hasValue()", [False]),
        ("note.text.hasValue()", [False]),
        ("activity.detail.scheduled.ofType(string).hasValue()", [True]),
    ],
)
def test_functions_fhirpathpy_lacks(expression: str, expected: list[bool]) -> None:
    evaluate = compile_fhirpath(expression, "CarePlan", TERMINOLOGY)
    assert [value for _, value in evaluate(CARE_PLAN, CARE_PLAN)] == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("subject.resolve()", "unsupported FHIRPath function resolve()"),
        ("conformsTo('x')", "unsupported FHIRPath function conformsTo()"),
        ("nope.exists()", "'nope' is not an element of CarePlan"),
        ("activity.detail.nope", "'nope' is not an element of CarePlan_Detail"),
        ("status.ofType(Nope)", "unknown type 'Nope'"),
        ("%ucum = 'x'", "unsupported variable %ucum"),
        ("memberOf('http://example.org/vs/none')", "unknown ValueSet"),
        ("status = ", "unexpected end"),
        ("status = 'a' )", "unexpected ')'"),
        ("extension(url)", "takes one string literal"),
        ("where(status, intent)", "where() takes one argument"),
        ("status.matches('(')", "invalid regular expression"),
        ("activity.where(%context.status = 'active')", "%context is supported only outside"),
    ],
)
def test_refused_at_compile_time(expression: str, message: str) -> None:
    with pytest.raises(FhirPathError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_fhirpath(expression, "CarePlan", TERMINOLOGY)
