"""Profile validation (server.fhir.profiles) on synthetic StructureDefinitions: every feature of
the profile compiler contract, each failure with its severity, code and exact expression, and
the definitions the compiler refuses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from server.fhir.outcome import Issue
from server.fhir.profiles import ProfileError, ProfileSet
from server.fhir.terminology import Terminology

BASE = "http://example.org/fhir"
PROGRAM = f"{BASE}/CodeSystem/program"
POF = f"{BASE}/CodeSystem/pof"
SOURCE = f"{BASE}/CodeSystem/source"
CPT = "http://www.ama-assn.org/go/cpt"
SOURCE_EXT = f"{BASE}/StructureDefinition/source-ext"
DOMAIN_EXT = f"{BASE}/StructureDefinition/domain-ext"
REFERRAL = f"{BASE}/StructureDefinition/test-referral"
STRICT = f"{BASE}/StructureDefinition/test-strict"
MEMBER = f"{BASE}/StructureDefinition/test-member"
SR = "http://hl7.org/fhir/StructureDefinition/"


def codesystem(url: str, *codes: Any) -> dict[str, Any]:
    return {"resourceType": "CodeSystem", "url": url, "content": "complete", "concept": list(codes)}


def valueset(url: str, *include: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "url": url, "compose": {"include": list(include)}}


CODESYSTEMS = [
    codesystem(PROGRAM, {"code": "ecm"}, {"code": "community-supports"}),
    codesystem(
        POF,
        {"code": "homelessness", "concept": [{"code": "homelessness-adult"}]},
        {"code": "high-utilizer"},
    ),
    codesystem(SOURCE, {"code": "self-referral"}, {"code": "provider"}),
]
VALUESETS = [
    valueset(f"{BASE}/ValueSet/pof", {"system": POF}),
    valueset(f"{BASE}/ValueSet/source", {"system": SOURCE}),
    valueset(
        f"{BASE}/ValueSet/priority",
        {
            "system": "http://hl7.org/fhir/request-priority",
            "concept": [{"code": "routine"}, {"code": "urgent"}],
        },
    ),  # fmt: skip
    valueset(f"{BASE}/ValueSet/cpt", {"system": CPT}),
    valueset(f"{BASE}/ValueSet/status", {"system": SOURCE, "concept": [{"code": "provider"}]}),
]


def sd(url: str, type: str, elements: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    out = {
        "resourceType": "StructureDefinition",
        "id": url.rsplit("/", 1)[-1],
        "url": url,
        "type": type,
        "kind": "complex-type" if type == "Extension" else "resource",
        "derivation": "constraint",
        "baseDefinition": SR + type,
        "differential": {"element": elements},
    }
    out.update(more)
    return out


def element(id: str, **rules: Any) -> dict[str, Any]:
    return {"id": id, "path": ".".join(p.split(":")[0] for p in id.split(".")), **rules}


SOURCE_DEF = sd(
    SOURCE_EXT,
    "Extension",
    [
        element("Extension"),
        element("Extension.url", fixedUri=SOURCE_EXT),
        element(
            "Extension.value[x]",
            min=1,
            type=[{"code": "Coding"}],
            binding={"strength": "required", "valueSet": f"{BASE}/ValueSet/source"},
        ),
    ],
    context=[{"type": "element", "expression": "ServiceRequest"}],
)
DOMAIN_DEF = sd(
    DOMAIN_EXT,
    "Extension",
    [
        element(
            "Extension.extension",
            slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"},
        ),  # fmt: skip
        element("Extension.extension:domain", sliceName="domain", min=1, max="1"),
        element("Extension.extension:domain.url", fixedUri="domain"),
        element("Extension.extension:domain.value[x]", min=1, type=[{"code": "Coding"}]),
        element("Extension.extension:status", sliceName="status", max="1"),
        element("Extension.extension:status.url", fixedUri="status"),
        element(
            "Extension.extension:status.value[x]",
            type=[{"code": "code"}],
            binding={"strength": "required", "valueSet": f"{BASE}/ValueSet/status"},
        ),
        element("Extension.url", fixedUri=DOMAIN_EXT),
        element("Extension.value[x]", max="0"),
    ],
    context=[{"type": "element", "expression": "ServiceRequest.note"}],
)
MEMBER_DEF = sd(
    MEMBER,
    "Patient",
    [
        element(
            "Patient.identifier",
            slicing={"discriminator": [{"type": "pattern", "path": "type"}], "rules": "open"},
        ),  # fmt: skip
        element("Patient.identifier:cin", sliceName="cin", min=1, max="1"),
        element("Patient.identifier:cin.type", patternCodeableConcept={"coding": [{"code": "MA"}]}),
        element("Patient.identifier:cin.system", min=1, fixedUri="urn:cin"),
        element("Patient.birthDate", min=1),
    ],
)
REFERRAL_DEF = sd(
    REFERRAL,
    "ServiceRequest",
    [
        element(
            "ServiceRequest",
            constraint=[
                {
                    "key": "ref-1",
                    "severity": "error",
                    "human": "authored unless draft",
                    "expression": "authoredOn.exists() or status = 'draft'",
                },
                {
                    "key": "ref-2",
                    "severity": "warning",
                    "human": "a note when on hold",
                    "expression": "status = 'on-hold' implies note.exists()",
                },
            ],
        ),  # fmt: skip
        element(
            "ServiceRequest.identifier",
            slicing={"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"},
        ),
        element("ServiceRequest.identifier:local", sliceName="local", min=1),
        element("ServiceRequest.identifier:local.system", fixedUri="urn:local"),
        element("ServiceRequest.identifier:local.value", min=1),
        element("ServiceRequest.identifier:other", sliceName="other", max="1"),
        element("ServiceRequest.identifier:other.system", fixedUri="urn:other"),
        element(
            "ServiceRequest.category",
            min=1,
            slicing={"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"},
        ),
        element(
            "ServiceRequest.category:ecm",
            sliceName="ecm",
            min=1,
            max="1",
            patternCodeableConcept={"coding": [{"system": PROGRAM, "code": "ecm"}]},
        ),
        element("ServiceRequest.intent", fixedCode="order"),
        element("ServiceRequest.doNotPerform", max="0"),
        element(
            "ServiceRequest.reasonCode",
            min=1,
            binding={"strength": "required", "valueSet": f"{BASE}/ValueSet/pof"},
        ),
        element(
            "ServiceRequest.priority",
            binding={"strength": "extensible", "valueSet": f"{BASE}/ValueSet/priority"},
        ),
        element(
            "ServiceRequest.orderDetail",
            binding={"strength": "required", "valueSet": f"{BASE}/ValueSet/cpt"},
        ),
        element("ServiceRequest.occurrence[x]", type=[{"code": "Period"}]),
        element(
            "ServiceRequest.subject",
            type=[{"code": "Reference", "targetProfile": [MEMBER]}],
        ),
        element(
            "ServiceRequest.requester",
            min=1,
            type=[
                {"code": "Reference", "targetProfile": [SR + "Organization", SR + "Practitioner"]}
            ],
        ),  # fmt: skip
        element("ServiceRequest.note.text", min=1, max="1"),
        element(
            "ServiceRequest.extension:source",
            sliceName="source",
            min=1,
            max="1",
            type=[{"code": "Extension", "profile": [SOURCE_EXT]}],
        ),  # fmt: skip
    ],
)
STRICT_DEF = sd(
    STRICT,
    "ServiceRequest",
    [
        element("ServiceRequest.category:ecm.text", min=1),
        element("ServiceRequest.authoredOn", min=1),
    ],
    baseDefinition=REFERRAL,
)
DEFINITIONS = [SOURCE_DEF, DOMAIN_DEF, MEMBER_DEF, REFERRAL_DEF, STRICT_DEF]


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return ProfileSet(DEFINITIONS, Terminology(CODESYSTEMS, VALUESETS))


VALID: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "identifier": [{"system": "urn:local", "value": "r-1"}],
    "category": [
        {"coding": [{"system": "http://other", "code": "x"}]},
        {"coding": [{"system": PROGRAM, "code": "ecm", "display": "ECM"}], "text": "ECM"},
    ],
    "reasonCode": [{"coding": [{"system": POF, "code": "homelessness-adult"}]}],
    "subject": {"reference": "Patient/p1"},
    "requester": {"reference": "Organization/o1"},
    "authoredOn": "2026-01-01",
    "occurrencePeriod": {"start": "2026-01-01"},
    "extension": [{"url": SOURCE_EXT, "valueCoding": {"system": SOURCE, "code": "provider"}}],
    "note": [
        {
            "text": "call first",
            "extension": [
                {
                    "url": DOMAIN_EXT,
                    "extension": [
                        {"url": "domain", "valueCoding": {"system": "urn:d", "code": "mental"}},
                        {"url": "status", "valueCode": "provider"},
                    ],
                }
            ],
        }
    ],
}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [
        {"system": "urn:ssn", "value": "1"},
        {"type": {"coding": [{"system": "v2", "code": "MA"}]}, "system": "urn:cin", "value": "C"},
    ],
    "birthDate": "1980-01-01",
}


def changed(base: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    change(out)
    return out


def shape(issues: list[Issue]) -> list[tuple[str, str, str | None]]:
    return sorted((i.severity, i.code, i.expression) for i in issues)


def test_valid_resources_have_no_issues(profiles: ProfileSet) -> None:
    assert profiles.validate(VALID, REFERRAL) == []
    assert profiles.validate(VALID, STRICT) == []
    assert profiles.validate(PATIENT, MEMBER) == []


def test_queries(profiles: ProfileSet) -> None:
    assert profiles.knows(REFERRAL) and profiles.knows(REFERRAL + "|0.1.0")
    assert not profiles.knows(SOURCE_EXT) and not profiles.knows(BASE + "/x")
    assert profiles.base_type(MEMBER) == "Patient"
    assert profiles.base_type(SOURCE_EXT) is None
    with pytest.raises(KeyError):
        profiles.validate(VALID, BASE + "/x")
    assert shape(profiles.validate(PATIENT, REFERRAL)) == [("error", "structure", "ServiceRequest")]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change setting ``value`` at a dotted path (``category.1.coding``); ``...`` deletes."""

    def change(resource: dict[str, Any]) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = resource
        for part in parts[:-1]:
            target = target[part]
        if value is ...:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value

    return change


CASES: list[tuple[str, str, Any, list[tuple[str, str, str]], str]] = [
    # (case, path, new value, [(severity, code, expression)], a diagnostics fragment)
    ("min of element", "reasonCode", ..., [("error", "required", "ServiceRequest.reasonCode")],
     "ServiceRequest.reasonCode: minimum 1, found 0 (profile test-referral)"),
    ("max 0", "doNotPerform", True, [("error", "structure", "ServiceRequest.doNotPerform")],
     "maximum 0, found 1"),
    ("nested max per parent", "note.0._text", {"extension": [{"url": "u", "valueString": "x"}]},
     [], ""),
    ("nested min per parent", "note", [{"text": "a"}, {"authorString": "b"}],
     [("error", "required", "ServiceRequest.note[1].text")],
     "ServiceRequest.note.text: minimum 1, found 0"),
    ("fixed code", "intent", "plan", [("error", "value", "ServiceRequest.intent")],
     "ServiceRequest.intent: value must be 'order' (profile test-referral)"),
    ("choice type", "occurrenceDateTime", "2026-01-01",
     [("error", "structure", "ServiceRequest.occurrence.ofType(dateTime)")],
     "type dateTime is not allowed (allowed: Period)"),
    ("slice min", "category", [{"text": "ECM"}],
     [("error", "required", "ServiceRequest.category")],
     "ServiceRequest.category:ecm: minimum 1, found 0 (profile test-referral)"),
    ("slice max", "category", [VALID["category"][1], VALID["category"][1]],
     [("error", "structure", "ServiceRequest.category")],
     "ServiceRequest.category:ecm: maximum 1, found 2"),
    ("closed slicing", "identifier", [{"system": "urn:local", "value": "1"}, {"system": "urn:x"}],
     [("error", "structure", "ServiceRequest.identifier[1]")],
     "ServiceRequest.identifier: matches none of the slices (closed slicing)"),
    ("slice child rule only in slice", "identifier",
     [{"system": "urn:local"}, {"system": "urn:other"}],
     [("error", "required", "ServiceRequest.identifier[0].value")],
     "ServiceRequest.identifier:local.value: minimum 1, found 0"),
    ("required binding CodeableConcept", "reasonCode.0.coding.0.code", "nope",
     [("error", "code-invalid", "ServiceRequest.reasonCode[0]")],
     "no coding from the value set"),
    ("required binding, text only", "reasonCode", [{"text": "homeless"}],
     [("error", "code-invalid", "ServiceRequest.reasonCode[0]")], "(required binding)"),
    ("extensible binding code", "priority", "stat",
     [("warning", "code-invalid", "ServiceRequest.priority")],
     "code 'stat' is not in the value set"),
    ("unexpandable value set: system only", "orderDetail",
     [{"coding": [{"system": CPT, "code": "1"}, {"system": "urn:x", "code": "2"}]}],
     [("warning", "code-invalid", "ServiceRequest.orderDetail[0].coding[1]")],
     "code system urn:x is not one of the value set"),
    ("reference type from string", "requester", {"reference": "Patient/p1"},
     [("error", "structure", "ServiceRequest.requester")],
     "reference to a Patient, expected Organization, Practitioner"),
    ("absolute reference type", "requester", {"reference": "http://x.org/fhir/Device/1"},
     [("error", "structure", "ServiceRequest.requester")], "reference to a Device"),
    ("unresolvable reference", "requester", {"reference": "urn:uuid:1"}, [], ""),
    ("contained target", "requester", {"reference": "#c1"}, [], ""),
    ("invariant error", "authoredOn", ..., [("error", "invariant", "ServiceRequest")],
     "ref-1: authored unless draft (profile test-referral)"),
    ("invariant warning", "status", "on-hold", [], ""),
    ("extension slice min", "extension", [],
     [("error", "required", "ServiceRequest.extension")],
     "ServiceRequest.extension:source: minimum 1"),
    ("extension value binding", "extension.0.valueCoding.code", "x",
     [("error", "code-invalid", "ServiceRequest.extension[0].value.ofType(Coding)")],
     "Extension.value[x]: coding"),
    ("extension value type", "extension.0", {"url": SOURCE_EXT, "valueString": "x"},
     [("error", "structure", "ServiceRequest.extension[0].value.ofType(string)")],
     "(extension source-ext)"),
    ("extension context", "note.0.extension.0.url", SOURCE_EXT,
     [("error", "structure", "ServiceRequest.note[0].extension[0]"),
      ("error", "required", "ServiceRequest.note[0].extension[0].value")],
     "is not allowed on ServiceRequest.note"),
    ("complex extension part missing", "note.0.extension.0.extension.0.url", "other",
     [("error", "required", "ServiceRequest.note[0].extension[0].extension"),
      ("error", "structure", "ServiceRequest.note[0].extension[0].extension[0]")],
     "Extension.extension:domain: minimum 1, found 0 (extension domain-ext)"),
    ("complex extension part binding", "note.0.extension.0.extension.1.valueCode", "bad",
     [("error", "code-invalid",
       "ServiceRequest.note[0].extension[0].extension[1].value.ofType(code)")],
     "Extension.extension:status.value[x]"),
    ("complex extension value max 0", "note.0.extension.0.valueString", "x",
     [("error", "structure", "ServiceRequest.note[0].extension[0].value")],
     "Extension.value[x]: maximum 0, found 1"),
    ("extension on a primitive", "_authoredOn", {"extension": [VALID["extension"][0]]},
     [("error", "structure", "ServiceRequest.authoredOn.extension[0]")],
     "is not allowed on ServiceRequest.authoredOn"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "expected", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules(
    profiles: ProfileSet, path: str, value: Any, expected: list[tuple[str, str, str]], fragment: str
) -> None:
    resource = changed(VALID, _set(path, value))
    resource["contained"] = [{"resourceType": "Organization", "id": "c1", "name": "x"}]
    issues = profiles.validate(resource, REFERRAL)
    assert shape(issues) == sorted(expected)
    assert not issues or any(fragment in i.diagnostics for i in issues), issues


def test_all_issues_reported_at_once(profiles: ProfileSet) -> None:
    resource = changed(VALID, _set("intent", "plan"))
    resource["doNotPerform"] = True
    del resource["reasonCode"]
    assert len(profiles.validate(resource, REFERRAL)) == 3


def test_root_expression(profiles: ProfileSet) -> None:
    resource = changed(VALID, _set("intent", "plan"))
    issues = profiles.validate(resource, REFERRAL, root="Bundle.entry[2].resource")
    assert shape(issues) == [("error", "value", "Bundle.entry[2].resource.intent")]


def test_derived_profile_applies_base_rules_and_inherited_slices(profiles: ProfileSet) -> None:
    resource = changed(VALID, _set("category.1", {"coding": VALID["category"][1]["coding"]}))
    resource["intent"] = "plan"
    issues = profiles.validate(resource, STRICT)
    assert shape(issues) == [
        ("error", "required", "ServiceRequest.category[1].text"),
        ("error", "value", "ServiceRequest.intent"),
    ]
    assert {i.diagnostics.rsplit("(", 1)[1] for i in issues} == {
        "profile test-strict)",
        "profile test-referral)",
    }


# -- reference resolution ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (PATIENT, []),
        ({**PATIENT, "identifier": []}, [("error", "structure", "ServiceRequest.subject")]),
        ({"resourceType": "Group", "type": "person", "actual": True},
         [("error", "structure", "ServiceRequest.subject")]),
        (None, []),
    ],
    ids=["conforms", "does not conform", "wrong type", "unresolved"],
)  # fmt: skip
def test_resolved_targets(
    profiles: ProfileSet, target: dict[str, Any] | None, expected: list[Any]
) -> None:
    resource = changed(VALID, _set("subject", {"reference": "urn:uuid:abc"}))
    asked: list[str] = []

    def resolve(reference: str) -> dict[str, Any] | None:
        asked.append(reference)
        return target if reference == "urn:uuid:abc" else None

    assert shape(profiles.validate(resource, REFERRAL, resolve=resolve)) == expected
    assert "urn:uuid:abc" in asked


def test_target_profile_not_conforming_message(profiles: ProfileSet) -> None:
    resource = changed(VALID, _set("subject", {"reference": "Patient/p1"}))
    issues = profiles.validate(
        resource,
        REFERRAL,
        resolve=lambda ref: {"resourceType": "Patient"} if ref == "Patient/p1" else None,
    )
    assert [i.diagnostics for i in issues] == [
        "ServiceRequest.subject: the referenced Patient does not conform to test-member "
        "(profile test-referral)"
    ]


def test_a_target_is_judged_by_its_content_each_time(profiles: ProfileSet) -> None:
    """Verdicts on targets are remembered by content: the same reference naming a changed
    target (a new version of the member) is judged again, and an unchanged one alike."""
    resource = changed(VALID, _set("subject", {"reference": "Patient/p2"}))
    versions = [PATIENT, {**PATIENT, "identifier": []}, PATIENT, {**PATIENT, "identifier": []}]
    results = []
    for target in versions:
        issues = profiles.validate(
            resource, REFERRAL, resolve=lambda ref, t=target: t if ref == "Patient/p2" else None
        )
        results.append(shape(issues))
    wrong = [("error", "structure", "ServiceRequest.subject")]
    assert results == [[], wrong, [], wrong]


# -- slicing on a nested discriminator path ---------------------------------------------------


@pytest.mark.parametrize(
    ("identifiers", "expected"),
    [
        (PATIENT["identifier"], []),
        ([{"system": "urn:cin"}], [("error", "required", "Patient.identifier")]),
        ([PATIENT["identifier"][1], PATIENT["identifier"][1]],
         [("error", "structure", "Patient.identifier")]),
        ([{**PATIENT["identifier"][1], "system": "urn:x"}],
         [("error", "value", "Patient.identifier[0].system")]),
    ],
    ids=["ok", "missing slice", "slice twice", "slice child fixed"],
)  # fmt: skip
def test_pattern_discriminator_on_child(
    profiles: ProfileSet, identifiers: list[Any], expected: list[Any]
) -> None:
    patient = {**PATIENT, "identifier": identifiers}
    assert shape(profiles.validate(patient, MEMBER)) == expected


# -- definitions the compiler refuses ---------------------------------------------------------


def _bad(*elements: dict[str, Any], **more: Any) -> dict[str, Any]:
    return sd(f"{BASE}/StructureDefinition/bad", "ServiceRequest", list(elements), **more)


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown element", _bad(element("ServiceRequest.nope", min=1)),
     "ServiceRequest.nope: unknown element nope of ServiceRequest"),
    ("unknown ValueSet", _bad(element("ServiceRequest.reasonCode", binding={
        "strength": "required", "valueSet": "http://x/vs"})), "unknown ValueSet http://x/vs"),
    ("unsupported key", _bad(element("ServiceRequest.note.text", maxLength=3)),
     "maxLength is not supported"),
    ("unsupported discriminator", _bad(element("ServiceRequest.category", slicing={
        "discriminator": [{"type": "exists", "path": "coding"}]})), "discriminator type 'exists'"),
    ("slice without value", _bad(
        element("ServiceRequest.category", slicing={
            "discriminator": [{"type": "pattern", "path": "$this"}]}),
        element("ServiceRequest.category:a", sliceName="a", min=1)), "no fixed/pattern value"),
    ("choice type unknown", _bad(element("ServiceRequest.occurrence[x]", type=[{"code": "Age"}])),
     "Age is not a type of occurrence[x]"),
    ("wrong type", _bad(element("ServiceRequest.status", type=[{"code": "Coding"}])),
     "type Coding does not fit the base type code"),
    ("unknown target profile", _bad(element("ServiceRequest.subject", type=[
        {"code": "Reference", "targetProfile": [f"{BASE}/StructureDefinition/none"]}])),
     "unknown targetProfile"),
    ("invariant outside the subset", _bad(element("ServiceRequest", constraint=[
        {"key": "k", "severity": "error", "human": "h", "expression": "subject.resolve()"}])),
     "constraint k: unsupported FHIRPath function resolve()"),
    ("invariant unknown element", _bad(element("ServiceRequest", constraint=[
        {"key": "k", "severity": "error", "human": "h", "expression": "nope.exists()"}])),
     "'nope' is not an element of ServiceRequest"),
    ("max on single element", _bad(element("ServiceRequest.status", max="2")),
     "max 2 on an element that does not repeat"),
    ("slicing a single element", _bad(element("ServiceRequest.code:a", sliceName="a")),
     "only repeating elements are sliced"),
    ("re-slicing", _bad(element("ServiceRequest.category:a/b")), "re-slicing"),
    ("children of a choice", _bad(element("ServiceRequest.occurrence[x].start", min=1)),
     "children of ServiceRequest.occurrence[x] need one single type"),
    ("extension without context", sd(f"{BASE}/StructureDefinition/bad", "Extension", []),
     "needs a context"),
    ("unknown base", _bad(baseDefinition=f"{BASE}/StructureDefinition/none"),
     "unknown baseDefinition"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("definition", "message"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_profile_errors(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        ProfileSet([*DEFINITIONS, definition], Terminology(CODESYSTEMS, VALUESETS))
    assert caught.value.url == f"{BASE}/StructureDefinition/bad"
    assert message in caught.value.message
