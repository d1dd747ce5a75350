from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from server.fhir.base_validation import BaseValidator, base_validator
from server.fhir.outcome import Issue

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "meta": {"lastUpdated": "2024-05-01T10:00:00Z"},
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"}],
    "name": [{"use": "official", "family": "Garcia", "given": ["Maria", "Elena"]}],
    "gender": "female",
    "birthDate": "1980-02-29",
    "deceasedBoolean": False,
    "address": [{"line": ["1 Main St"], "city": "Fresno", "state": "CA"}],
    "extension": [{"url": "http://example.org/ext", "valueString": "x"}],
}
SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "code": {"coding": [{"system": "http://example.org/svc", "code": "ECM"}]},
    "subject": {"reference": "Patient/pat-1"},
    "occurrencePeriod": {"start": "2024-05-01", "end": "2024-11-01"},
    "authoredOn": "2024-04-28T09:30:00-07:00",
}
TASK: dict[str, Any] = {
    "resourceType": "Task",
    "status": "requested",
    "intent": "order",
    "for": {"reference": "Patient/pat-1"},
    "input": [{"type": {"text": "note"}, "valueString": "call member"}],
}


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{i}",
                "resource": r,
                "request": {"method": "POST", "url": r.get("resourceType", "x")},
            }
            for i, r in enumerate(resources)
        ],
    }


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def validate(resource: object, **kw: Any) -> list[Issue]:
    return base_validator().validate(resource, **kw)


def at(issues: list[Issue], expression: str) -> Issue:
    found = [i for i in issues if i.expression == expression]
    assert found, f"no issue at {expression}: {issues}"
    return found[0]


@pytest.mark.parametrize(
    "resource", [PATIENT, SERVICE_REQUEST, TASK, bundle(PATIENT, SERVICE_REQUEST, TASK)]
)
def test_valid_resources_pass(resource: dict[str, Any]) -> None:
    assert validate(resource) == []


def test_singleton_and_issue_shape() -> None:
    assert base_validator() is base_validator()
    issue = validate(with_(PATIENT, foo=1))[0]
    assert (issue.severity, issue.code) == ("error", "structure")


def test_unknown_element_is_named() -> None:
    issues = validate(with_(PATIENT, foo="bar", name=[{"family": "X", "nickname": "Y"}]))
    assert "foo" in at(issues, "Patient.foo").diagnostics
    assert "nickname" in at(issues, "Patient.name[0].nickname").diagnostics
    assert len(issues) == 2


def test_wrong_datatype() -> None:
    issues = validate(with_(PATIENT, name={"family": "X"}, active="yes", gender=3))
    assert at(issues, "Patient.name").code == "structure"
    assert "array" in at(issues, "Patient.name").diagnostics
    assert at(issues, "Patient.active").code == "structure"
    assert at(issues, "Patient.gender").code == "structure"


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Bundle"}, "Bundle.type"),
        (with_(TASK, intent=...), "Task.intent"),
        (with_(TASK, status=...), "Task.status"),
        (with_(SERVICE_REQUEST, subject=...), "ServiceRequest.subject"),
        (with_(PATIENT, extension=[{"valueString": "x"}]), "Patient.extension[0].url"),
        (
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/1"},
            },
            "MedicationRequest.medication",
        ),
    ],
)
def test_missing_required_element(resource: dict[str, Any], expression: str) -> None:
    issues = validate(resource)
    assert [(i.code, i.expression) for i in issues] == [("required", expression)]


def test_primitive_extension_stands_in_for_a_required_value() -> None:
    ext = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }
    assert validate(with_(TASK, status=..., _status=ext)) == []


def test_task_without_intent_and_status_lists_both() -> None:
    issues = validate(with_(TASK, intent=..., status=...))
    assert sorted(i.expression or "" for i in issues) == ["Task.intent", "Task.status"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("birthDate", "1980/01/01"),
        ("birthDate", "80-01-01"),
        ("id", "has space"),
        ("multipleBirthInteger", 1.5),
        ("multipleBirthInteger", 2**40),
        ("deceasedDateTime", "2020-01-01T10:00:00"),
        ("deceasedDateTime", "2023-13-01"),
        ("deceasedDateTime", "2024-01-01T24:00:00Z"),
        ("deceasedDateTime", "2024-01-01T10:00:00+15:00"),
    ],
)
def test_invalid_primitive_values(field: str, value: Any) -> None:
    resource = with_(PATIENT, **{field: value})
    if field.startswith("deceased"):
        resource.pop("deceasedBoolean")
    issues = validate(resource)
    assert [(i.code, i.expression) for i in issues] == [("value", f"Patient.{field}")]


def test_calendar_invalid_dates() -> None:
    for bad in ("1980-02-30", "2023-04-31", "1900-02-29", "2023-02-29"):
        issues = validate(with_(PATIENT, birthDate=bad))
        assert [(i.code, i.expression) for i in issues] == [("value", "Patient.birthDate")], bad
        assert "calendar" in issues[0].diagnostics
    for good in ("2000-02-29", "2024-02-29", "1980", "1980-02", "2023-12-31"):
        assert validate(with_(PATIENT, birthDate=good)) == [], good
    issues = validate(with_(SERVICE_REQUEST, authoredOn="2023-02-29T10:00:00Z"))
    assert at(issues, "ServiceRequest.authoredOn").code == "value"
    meta = {"lastUpdated": "2023-06-31T10:00:00Z"}
    assert at(validate(with_(PATIENT, meta=meta)), "Patient.meta.lastUpdated").code == "value"


def test_calendar_patterns_agree_with_datetime() -> None:
    day = dt.date(1899, 12, 1)
    while day < dt.date(2101, 3, 1):
        assert validate(with_(PATIENT, birthDate=day.isoformat())) == [], day
        day += dt.timedelta(days=1)
    for year in (1900, 1999, 2000, 2023, 2024, 2100):
        for month in range(1, 13):
            for d in (29, 30, 31):
                try:
                    dt.date(year, month, d)
                    ok = True
                except ValueError:
                    ok = False
                got = validate(with_(PATIENT, birthDate=f"{year}-{month:02d}-{d}")) == []
                assert got == ok, (year, month, d)


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"gender": ""}, "Patient.gender"),
        ({"name": [{"family": ""}]}, "Patient.name[0].family"),
        ({"name": []}, "Patient.name"),
        ({"name": [{}]}, "Patient.name[0]"),
        ({"meta": {}}, "Patient.meta"),
        ({"_birthDate": {}}, "Patient._birthDate"),
        ({"extension": [{"url": ""}]}, "Patient.extension[0].url"),
    ],
)
def test_empty_values(changes: dict[str, Any], expression: str) -> None:
    issues = validate(with_(PATIENT, **changes))
    assert [(i.code, i.expression) for i in issues] == [("structure", expression)]
    assert "empty" in issues[0].diagnostics


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"gender": None}, "Patient.gender"),
        ({"meta": None}, "Patient.meta"),
        ({"name": None}, "Patient.name"),
        ({"name": [None]}, "Patient.name[0]"),
        ({"name": [{"given": ["a", None]}]}, "Patient.name[0].given[1]"),
    ],
)
def test_null_values(changes: dict[str, Any], expression: str) -> None:
    issues = validate(with_(PATIENT, **changes))
    assert [(i.code, i.expression, i.diagnostics) for i in issues] == [
        ("structure", expression, "null value")
    ]


def test_null_in_primitive_array_paired_with_element_array_is_allowed() -> None:
    name = {
        "given": ["Maria", None],
        "_given": [None, {"extension": [{"url": "http://e.org/x", "valueCode": "a"}]}],
    }
    assert validate(with_(PATIENT, name=[name])) == []


def test_whitespace_only_strings() -> None:
    issues = validate(with_(PATIENT, name=[{"family": "   "}], gender=" "))
    assert at(issues, "Patient.name[0].family").code == "value"
    assert at(issues, "Patient.gender").code == "value"
    assert validate(with_(PATIENT, name=[{"family": " de la Cruz "}])) == []


def test_service_request_bogus_status_is_code_invalid() -> None:
    issues = validate(with_(SERVICE_REQUEST, status="bogus"))
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", "ServiceRequest.status")]
    assert "bogus" in issues[0].diagnostics and "active" in issues[0].diagnostics


def test_required_binding_in_backbone_and_datatype() -> None:
    b = bundle(PATIENT)
    b["entry"][0]["request"]["method"] = "FETCH"
    b["type"] = "pile"
    issues = validate(b)
    assert at(issues, "Bundle.entry[0].request.method").code == "code-invalid"
    assert at(issues, "Bundle.type").code == "code-invalid"
    issues = validate(with_(PATIENT, name=[{"use": "nickname-ish"}]))
    assert at(issues, "Patient.name[0].use").code == "code-invalid"


def test_two_choice_variants() -> None:
    issues = validate(with_(PATIENT, deceasedDateTime="2020-01-01"))
    assert [(i.code, i.expression) for i in issues] == [("structure", "Patient.deceased")]
    assert "deceasedBoolean" in issues[0].diagnostics
    assert "deceasedDateTime" in issues[0].diagnostics
    ext = [{"url": "http://e.org/x", "valueString": "a", "valueInteger": 1}]
    issues = validate(with_(PATIENT, extension=ext))
    assert [i.expression for i in issues] == ["Patient.extension[0].value"]


@pytest.mark.parametrize("rid", ["x" * 65, "", "a_b", "a/b"])
def test_invalid_id(rid: str) -> None:
    issues = validate(with_(PATIENT, id=rid))
    assert [i.expression for i in issues] == ["Patient.id"]


def test_id_of_64_characters_is_fine() -> None:
    assert validate(with_(PATIENT, id="A-1." + "x" * 60)) == []


def test_bundle_entry_errors_are_prefixed() -> None:
    bad_task = with_(TASK, status="bogus", foo=1)
    issues = validate(bundle(PATIENT, bad_task, SERVICE_REQUEST))
    assert sorted((i.code, i.expression) for i in issues) == [
        ("code-invalid", "Bundle.entry[1].resource.status"),
        ("structure", "Bundle.entry[1].resource.foo"),
    ]


def test_nested_resources_of_unknown_or_missing_type() -> None:
    issues = validate(bundle(PATIENT, {"resourceType": "Nope"}, {"id": "x"}))
    assert {i.expression for i in issues} == {
        "Bundle.entry[1].resource.resourceType",
        "Bundle.entry[2].resource.resourceType",
    }
    assert all(i.code == "structure" for i in issues)
    b = bundle(PATIENT)
    b["entry"][0]["resource"] = "Patient"
    assert [i.expression for i in validate(b)] == ["Bundle.entry[0].resource"]


def test_contained_and_parameters_resources() -> None:
    p = with_(PATIENT, contained=[{"resourceType": "Organization", "id": "o", "active": "y"}])
    assert [i.expression for i in validate(p)] == ["Patient.contained[0].active"]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "a", "resource": with_(PATIENT, gender="x")},
            {"name": "b", "part": [{"name": "c", "resource": with_(TASK, intent=...)}]},
        ],
    }
    issues = validate(params)
    assert sorted(i.expression or "" for i in issues) == [
        "Parameters.parameter[0].resource.gender",
        "Parameters.parameter[1].part[0].resource.intent",
    ]


def test_expression_root() -> None:
    issues = validate(with_(PATIENT, foo=1), expression_root="Bundle.entry[2].resource")
    assert [i.expression for i in issues] == ["Bundle.entry[2].resource.foo"]


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "Patient",
        3,
        {},
        {"resourceType": 1},
        {"resourceType": "Foo"},
        {"resourceType": "MedicinalProduct"},
    ],
)
def test_not_a_supported_resource(value: object) -> None:
    issues = validate(value)
    assert len(issues) == 1 and issues[0].code == "structure"


def test_all_errors_in_one_pass() -> None:
    resource = with_(
        PATIENT,
        foo=1,
        gender="bogus",
        birthDate="1980-02-30",
        telecom=[],
        deceasedDateTime="2020",
        name=[{"family": ""}],
        id="x" * 70,
    )
    issues = validate(resource)
    assert sorted(i.expression or "" for i in issues) == sorted(
        [
            "Patient.foo",
            "Patient.gender",
            "Patient.birthDate",
            "Patient.telecom",
            "Patient.deceased",
            "Patient.name[0].family",
            "Patient.id",
        ]
    )


def test_diagnostics_never_echo_long_values() -> None:
    secret = "SSN-123-45-6789-" + "z" * 200
    resource = with_(
        PATIENT,
        gender=secret,
        birthDate=secret,
        id=secret,
        name=[{"family": " " * 300}],
        active=secret,
    )
    resource[secret] = 1  # an unknown element with a long name
    issues = validate(resource)
    assert len(issues) >= 5
    for issue in issues:
        assert "z" * 61 not in issue.diagnostics, issue
        assert len(issue.diagnostics) < 400


def test_validator_caches_compiled_schemas() -> None:
    v = BaseValidator()
    assert v.validate(PATIENT) == []
    first = v._validators["Patient"]
    assert v.validate(PATIENT) == [] and v._validators["Patient"] is first


def test_unicode_spaces_are_fine_control_characters_are_not() -> None:
    assert validate(with_(PATIENT, name=[{"family": "de\u00a0la Cruz"}])) == []
    issues = validate(with_(PATIENT, name=[{"family": "bad\u0001char"}]))
    assert [(i.code, i.expression) for i in issues] == [("value", "Patient.name[0].family")]


def test_primitive_element_extension_without_value_sibling_in_schema() -> None:
    # the HL7 schema lacks `_baseDefinition`; FHIR JSON allows it for every primitive
    sd = {
        "resourceType": "StructureDefinition",
        "url": "http://e.org/sd",
        "name": "X",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "_baseDefinition": {"extension": [{"url": "http://e.org/x", "valueCode": "a"}]},
    }
    assert validate(sd) == []
