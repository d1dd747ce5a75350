"""The terminology operations, from parsed inputs to the response resource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.errors import BadRequest, FhirError, NotFound, Unprocessable
from server.fhir.definitions import r4_terminology
from server.fhir.terminology import Terminology
from server.operations.parameters import parse_input
from server.operations.terminology import TERMINOLOGY_OPERATIONS

OPERATIONS = Path(__file__).resolve().parents[3] / "profiles" / "operations"
CS = "http://example.org/cs/service"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CODESYSTEM = {
    "resourceType": "CodeSystem",
    "id": "service",
    "url": CS,
    "version": "0.1.0",
    "name": "Service",
    "content": "complete",
    "concept": [
        {
            "code": "housing",
            "display": "Housing supports",
            "definition": "Help finding and keeping housing",
            "designation": [
                {
                    "language": "es",
                    "use": {"system": "http://snomed.info/sct", "code": "900000000000013009"},
                    "value": "Apoyo de vivienda",
                }
            ],
            "property": [{"code": "hcpcs", "valueString": "H0043"}],
            "concept": [{"code": "navigation", "display": "Housing navigation"}],
        },
        {"code": "meals", "display": "Medically tailored meals"},
    ],
}
FRAGMENT = {"resourceType": "CodeSystem", "url": "http://example.org/cs/f", "content": "fragment"}
VALUESET = {
    "resourceType": "ValueSet",
    "id": "service",
    "url": "http://example.org/vs/service",
    "version": "0.1.0",
    "compose": {"include": [{"system": CS}]},
}
OPAQUE = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/opaque",
    "compose": {"include": [{"system": "http://snomed.info/sct"}]},
}
CONCEPTMAP = {
    "resourceType": "ConceptMap",
    "id": "service-to-hcpcs",
    "url": "http://example.org/cm/service-to-hcpcs",
    "sourceUri": "http://example.org/vs/service",
    "group": [
        {
            "source": CS,
            "target": HCPCS,
            "element": [
                {
                    "code": "navigation",
                    "target": [
                        {
                            "code": "H0043",
                            "equivalence": "equivalent",
                            "product": [
                                {
                                    "property": "http://example.org/modifier",
                                    "system": HCPCS,
                                    "value": "U6",
                                }
                            ],
                        }
                    ],
                },
                {"code": "meals", "target": [{"equivalence": "unmatched"}]},
            ],
        }
    ],
}


def _definition(id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OPERATIONS / f"OperationDefinition-{id}.json").read_text())
    return data


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    return Terminology([CODESYSTEM, FRAGMENT], [VALUESET, OPAQUE], [CONCEPTMAP])


def call(
    terminology: Terminology,
    type: str,
    op: str,
    query: list[tuple[str, str]] | None = None,
    body: list[dict[str, Any]] | None = None,
    instance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    definition_id, handler = TERMINOLOGY_OPERATIONS[(type, op)]
    payload = None if body is None else {"resourceType": "Parameters", "parameter": body}
    params = parse_input(_definition(definition_id), query=query, body=payload)
    return handler(terminology, instance, params)


def values(parameters: dict[str, Any]) -> dict[str, Any]:
    """name -> the value[x] of the first parameter of that name."""
    out: dict[str, Any] = {}
    for p in parameters.get("parameter", []):
        key = next((k for k in p if k.startswith("value") or k in ("part", "resource")), None)
        out.setdefault(p["name"], p.get(key) if key else None)
    return out


def failing(kind: type[FhirError], *args: Any, **kw: Any) -> FhirError:
    with pytest.raises(kind) as caught:
        call(*args, **kw)
    return caught.value


# -- definitions -------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "entry"), sorted(TERMINOLOGY_OPERATIONS.items()))
def test_each_operation_has_its_definition(key: tuple[str, str], entry: tuple[str, Any]) -> None:
    definition = _definition(entry[0])
    assert definition["id"] == entry[0]
    assert definition["url"] == f"http://calaim-fhir.org/fhir/OperationDefinition/{entry[0]}"
    assert definition["base"] == f"http://hl7.org/fhir/OperationDefinition/{entry[0]}"
    assert definition["resource"] == [key[0]] and f"${definition['code']}" == key[1]
    for field in ("version", "name", "title", "status", "date", "publisher", "description"):
        assert definition[field]


# -- $expand -----------------------------------------------------------------------------------


def test_expand_by_url_and_instance(terminology: Terminology) -> None:
    out = call(terminology, "ValueSet", "$expand", [("url", VALUESET["url"]), ("count", "2")])
    assert out["resourceType"] == "ValueSet" and out["url"] == VALUESET["url"]
    assert out["expansion"]["total"] == 3
    assert [c["code"] for c in out["expansion"]["contains"]] == ["housing", "navigation"]
    same = call(terminology, "ValueSet", "$expand", [("filter", "MEAL")], instance=VALUESET)
    assert [c["code"] for c in same["expansion"]["contains"]] == ["meals"]


def test_expand_inline_with_designations(terminology: Terminology) -> None:
    inline = {
        "resourceType": "ValueSet",
        "compose": {"include": [{"system": CS, "concept": [{"code": "housing"}]}]},
    }
    out = call(
        terminology,
        "ValueSet",
        "$expand",
        body=[
            {"name": "valueSet", "resource": inline},
            {"name": "includeDesignations", "valueBoolean": True},
            {"name": "includeDefinition", "valueBoolean": True},
        ],
    )
    assert out["compose"] == inline["compose"]
    item = out["expansion"]["contains"][0]
    assert item["display"] == "Housing supports"
    assert item["designation"][0]["value"] == "Apoyo de vivienda"


def test_expand_errors(terminology: Terminology) -> None:
    unknown = failing(NotFound, terminology, "ValueSet", "$expand", [("url", "http://x/none")])
    assert "is not known" in str(unknown)
    opaque = failing(Unprocessable, terminology, "ValueSet", "$expand", [("url", OPAQUE["url"])])
    assert "cannot be expanded" in str(opaque)
    assert failing(BadRequest, terminology, "ValueSet", "$expand", [])
    both = failing(
        BadRequest,
        terminology,
        "ValueSet",
        "$expand",
        [("url", VALUESET["url"])],
        instance=VALUESET,
    )
    assert "Give one ValueSet" in str(both)
    assert failing(BadRequest, terminology, "ValueSet", "$expand", [("valueSetVersion", "1")])
    negative = [("url", VALUESET["url"]), ("offset", "-1")]
    assert failing(BadRequest, terminology, "ValueSet", "$expand", negative)
    versioned = [("url", VALUESET["url"]), ("valueSetVersion", "9.9")]
    assert failing(NotFound, terminology, "ValueSet", "$expand", versioned)


# -- $validate-code ----------------------------------------------------------------------------


def test_valueset_validate_code(terminology: Terminology) -> None:
    query = [("url", VALUESET["url"]), ("system", CS), ("code", "navigation")]
    ok = values(call(terminology, "ValueSet", "$validate-code", query))
    assert ok == {"result": True, "display": "Housing navigation"}
    wrong = values(call(terminology, "ValueSet", "$validate-code", [*query[:2], ("code", "x")]))
    assert wrong["result"] is False and "'x'" not in wrong["message"] and "|x" in wrong["message"]
    display = values(
        call(terminology, "ValueSet", "$validate-code", [*query, ("display", "Meals")])
    )
    assert display["result"] is True and "warning" in display["message"]
    concept = {"coding": [{"system": CS, "code": "meals", "display": "Medically tailored meals"}]}
    found = call(
        terminology,
        "ValueSet",
        "$validate-code",
        instance=VALUESET,
        body=[{"name": "codeableConcept", "valueCodeableConcept": concept}],
    )
    assert values(found) == {"result": True, "display": "Medically tailored meals"}


def test_valueset_validate_code_errors(terminology: Terminology) -> None:
    assert failing(
        NotFound,
        terminology,
        "ValueSet",
        "$validate-code",
        [("url", "http://x/none"), ("code", "a")],
    )
    assert failing(
        Unprocessable,
        terminology,
        "ValueSet",
        "$validate-code",
        [("url", OPAQUE["url"]), ("code", "a")],
    )
    none = failing(
        BadRequest, terminology, "ValueSet", "$validate-code", [("url", VALUESET["url"])]
    )
    assert "exactly one of code" in str(none)
    two = failing(
        BadRequest,
        terminology,
        "ValueSet",
        "$validate-code",
        [("url", VALUESET["url"]), ("code", "a")],
        body=[{"name": "coding", "valueCoding": {"code": "a"}}],
    )
    assert "exactly one of code" in str(two)


def test_codesystem_validate_code(terminology: Terminology) -> None:
    ok = call(terminology, "CodeSystem", "$validate-code", [("url", CS), ("code", "meals")])
    assert values(ok)["result"] is True
    unknown = values(
        call(terminology, "CodeSystem", "$validate-code", [("code", "x")], instance=CODESYSTEM)
    )
    assert unknown["result"] is False and unknown["message"]
    other = call(
        terminology,
        "CodeSystem",
        "$validate-code",
        [("url", CS)],
        body=[{"name": "coding", "valueCoding": {"system": "http://other", "code": "meals"}}],
    )
    assert values(other)["result"] is False
    assert failing(
        NotFound,
        terminology,
        "CodeSystem",
        "$validate-code",
        [("url", "http://x/none"), ("code", "a")],
    )
    fragment = failing(
        Unprocessable,
        terminology,
        "CodeSystem",
        "$validate-code",
        [("url", FRAGMENT["url"]), ("code", "a")],
    )
    assert "fragment" in str(fragment)


# -- $lookup -----------------------------------------------------------------------------------


def test_lookup(terminology: Terminology) -> None:
    out = call(terminology, "CodeSystem", "$lookup", [("system", CS), ("code", "housing")])
    params = out["parameter"]
    assert params[:3] == [
        {"name": "name", "valueString": "Service"},
        {"name": "version", "valueString": "0.1.0"},
        {"name": "display", "valueString": "Housing supports"},
    ]
    designation = next(p for p in params if p["name"] == "designation")
    assert designation["part"][0] == {"name": "language", "valueCode": "es"}
    assert designation["part"][1]["valueCoding"]["code"] == "900000000000013009"
    properties = {
        p["part"][0]["valueCode"]: p["part"][1] for p in params if p["name"] == "property"
    }
    assert properties == {
        "definition": {"name": "value", "valueString": "Help finding and keeping housing"},
        "hcpcs": {"name": "value", "valueString": "H0043"},
        "child": {"name": "value", "valueCode": "navigation"},
    }
    only = call(
        terminology,
        "CodeSystem",
        "$lookup",
        [("system", CS), ("code", "housing"), ("property", "child")],
    )
    assert [p["part"][0]["valueCode"] for p in only["parameter"] if p["name"] == "property"] == [
        "child"
    ]
    child = call(
        terminology, "CodeSystem", "$lookup", [("code", "navigation")], instance=CODESYSTEM
    )
    assert {
        "name": "property",
        "part": [
            {"name": "code", "valueCode": "parent"},
            {"name": "value", "valueCode": "housing"},
        ],
    } in child["parameter"]
    coded = call(
        terminology,
        "CodeSystem",
        "$lookup",
        body=[{"name": "coding", "valueCoding": {"system": CS, "code": "meals"}}],
    )
    assert values(coded)["display"] == "Medically tailored meals"


def test_lookup_errors(terminology: Terminology) -> None:
    code = failing(NotFound, terminology, "CodeSystem", "$lookup", [("system", CS), ("code", "x")])
    assert "Code 'x' is not in" in str(code) and code.status == 404
    system = failing(
        NotFound, terminology, "CodeSystem", "$lookup", [("system", "http://x/none"), ("code", "x")]
    )
    assert "CodeSystem 'http://x/none' is not known" in str(system)
    assert failing(BadRequest, terminology, "CodeSystem", "$lookup", [("code", "x")])
    assert failing(BadRequest, terminology, "CodeSystem", "$lookup", [("system", CS)])


# -- $translate --------------------------------------------------------------------------------


def test_translate(terminology: Terminology) -> None:
    out = call(
        terminology,
        "ConceptMap",
        "$translate",
        [("url", CONCEPTMAP["url"]), ("system", CS), ("code", "navigation")],
    )
    assert out["parameter"][0] == {"name": "result", "valueBoolean": True}
    match = out["parameter"][1]
    assert match == {
        "name": "match",
        "part": [
            {"name": "equivalence", "valueCode": "equivalent"},
            {"name": "concept", "valueCoding": {"system": HCPCS, "code": "H0043"}},
            {
                "name": "product",
                "part": [
                    {"name": "element", "valueUri": "http://example.org/modifier"},
                    {"name": "concept", "valueCoding": {"system": HCPCS, "code": "U6"}},
                ],
            },
            {"name": "source", "valueUri": CONCEPTMAP["url"]},
        ],
    }
    by_source = call(
        terminology,
        "ConceptMap",
        "$translate",
        [("source", VALUESET["url"]), ("system", CS), ("code", "navigation")],
    )
    assert values(by_source)["result"] is True
    on_instance = call(
        terminology,
        "ConceptMap",
        "$translate",
        instance=CONCEPTMAP,
        body=[{"name": "coding", "valueCoding": {"system": CS, "code": "navigation"}}],
    )
    assert values(on_instance)["result"] is True


def test_translate_without_a_match(terminology: Terminology) -> None:
    unmatched = values(
        call(
            terminology,
            "ConceptMap",
            "$translate",
            [("url", CONCEPTMAP["url"]), ("system", CS), ("code", "meals")],
        )
    )
    assert unmatched["result"] is False and "No mapping found" in unmatched["message"]
    assert unmatched["match"][0] == {"name": "equivalence", "valueCode": "unmatched"}
    nothing = values(
        call(terminology, "ConceptMap", "$translate", [("system", CS), ("code", "housing")])
    )
    assert nothing == {"result": False, "message": f"No mapping found for {CS}|housing"}
    assert failing(
        NotFound, terminology, "ConceptMap", "$translate", [("url", "http://x/none"), ("code", "a")]
    )
    assert failing(BadRequest, terminology, "ConceptMap", "$translate", [("system", CS)])
    assert failing(
        BadRequest, terminology, "ConceptMap", "$translate", [("reverse", "true"), ("code", "a")]
    )


# -- against the vendored R4 base terminology --------------------------------------------------


@pytest.fixture(scope="module")
def base() -> Terminology:
    resources = r4_terminology()
    return Terminology(
        [r for r in resources if r["resourceType"] == "CodeSystem"],
        [r for r in resources if r["resourceType"] == "ValueSet"],
    )


def test_r4_expand_request_status(base: Terminology) -> None:
    out = call(
        base, "ValueSet", "$expand", [("url", "http://hl7.org/fhir/ValueSet/request-status")]
    )
    codes = [c["code"] for c in out["expansion"]["contains"]]
    assert codes == [
        "draft",
        "active",
        "on-hold",
        "revoked",
        "completed",
        "entered-in-error",
        "unknown",
    ]
    assert out["expansion"]["contains"][0]["system"] == "http://hl7.org/fhir/request-status"


def test_r4_validate_administrative_gender(base: Terminology) -> None:
    url = "http://hl7.org/fhir/ValueSet/administrative-gender"
    system = "http://hl7.org/fhir/administrative-gender"
    ok = call(
        base, "ValueSet", "$validate-code", [("url", url), ("system", system), ("code", "female")]
    )
    assert values(ok) == {"result": True, "display": "Female"}
    bad = call(
        base, "ValueSet", "$validate-code", [("url", url), ("system", system), ("code", "F")]
    )
    assert values(bad)["result"] is False


def test_r4_lookup_and_unexpandable(base: Terminology) -> None:
    found = call(
        base,
        "CodeSystem",
        "$lookup",
        [("system", "http://hl7.org/fhir/task-status"), ("code", "requested")],
    )
    assert values(found)["display"] == "Requested"
    mimetypes = [("url", "http://hl7.org/fhir/ValueSet/mimetypes")]  # BCP-13: not held
    assert failing(Unprocessable, base, "ValueSet", "$expand", mimetypes)
