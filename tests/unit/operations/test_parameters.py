"""Operation input parsing and output building against an OperationDefinition."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from server.errors import BadRequest
from server.operations.parameters import Typed, first, parse_input, to_parameters


def _p(name: str, type: str | None, min: int = 0, max: str = "1", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "use": "in", "min": min, "max": max, **extra}
    if type is not None:
        out["type"] = type
    return out


DEFINITION: dict[str, Any] = {
    "resourceType": "OperationDefinition",
    "parameter": [
        _p("url", "uri"),
        _p("flag", "boolean"),
        _p("count", "integer"),
        _p("size", "positiveInt"),
        _p("ratio", "decimal"),
        _p("when", "date"),
        _p("at", "dateTime"),
        _p("code", "code"),
        _p("text", "string"),
        _p("tag", "code", max="*"),
        _p("coding", "Coding"),
        _p("concept", "CodeableConcept"),
        _p("resource", "Resource"),
        _p("valueSet", "ValueSet"),
        _p("anything", None),
        _p(
            "dependency",
            None,
            max="*",
            part=[_p("element", "uri", min=1), _p("concept", "CodeableConcept")],
        ),
        {"name": "result", "use": "out", "min": 1, "max": "1", "type": "boolean"},
    ],
}
REQUIRED: dict[str, Any] = {"parameter": [_p("code", "code", min=1), _p("system", "uri")]}


def _body(*params: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(params)}


def _error(**kw: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_input(kw.pop("definition", DEFINITION), query=kw.get("query"), body=kw.get("body"))
    return caught.value


def test_query_primitives_are_converted() -> None:
    got = parse_input(
        DEFINITION,
        query=[
            ("url", "http://x/vs"),
            ("flag", "true"),
            ("count", "-3"),
            ("size", "7"),
            ("ratio", "1.50"),
            ("when", "2024-02"),
            ("at", "2024-02-29T10:00:00Z"),
            ("tag", "a"),
            ("tag", "b"),
            ("_format", "json"),
            ("_pretty", "true"),
        ],
        body=None,
    )
    assert got == {
        "url": ["http://x/vs"],
        "flag": [True],
        "count": [-3],
        "size": [7],
        "ratio": [Decimal("1.50")],
        "when": ["2024-02"],
        "at": ["2024-02-29T10:00:00Z"],
        "tag": ["a", "b"],
    }
    assert first(got, "flag") is True and first(got, "code", "none") == "none"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("flag", "yes", "true or false"),
        ("count", "1.5", "integer"),
        ("count", "99999999999", "out of range"),
        ("size", "0", "out of range"),
        ("ratio", "1,5", "decimal"),
        ("when", "2024-13-01", "not a valid date"),
        ("at", "2024-01-01T10:00", "not a valid dateTime"),
        ("code", " padded", "not a valid code"),
        ("url", "has space", "not a valid uri"),
        ("text", "  ", "empty value"),
    ],
)
def test_query_type_errors_name_the_parameter(name: str, value: str, message: str) -> None:
    error = _error(query=[(name, value)])
    issue = error.issues[0]
    assert issue.expression == name and message in issue.diagnostics and name in issue.diagnostics


def test_query_rejects_unknown_complex_and_out_parameters() -> None:
    assert _error(query=[("nope", "1")]).issues[0].expression == "nope"
    assert "POST" in _error(query=[("coding", "http://x|a")]).issues[0].diagnostics
    assert "POST" in _error(query=[("dependency", "x")]).issues[0].diagnostics
    assert _error(query=[("result", "true")]).issues[0].expression == "result"  # out only


def test_cardinality() -> None:
    error = _error(query=[("url", "http://a"), ("url", "http://b")])
    assert "at most 1" in error.issues[0].diagnostics and error.issues[0].expression == "url"
    error = _error(definition=REQUIRED, query=[("system", "http://x")])
    assert "'code' is required" in error.issues[0].diagnostics
    assert error.issues[0].expression == "code"
    error = _error(definition=REQUIRED, body=_body())
    assert error.issues[0].expression == "Parameters"
    error = _error(body=_body({"name": "url", "valueUri": "a"}, {"name": "url", "valueUri": "b"}))
    assert error.issues[0].expression == "Parameters.parameter[1]"


def test_body_values_by_type() -> None:
    coding = {"system": "http://x", "code": "a"}
    vs = {"resourceType": "ValueSet", "url": "http://x/vs"}
    got = parse_input(
        DEFINITION,
        query=[("flag", "false")],
        body=_body(
            {"name": "url", "valueUri": "http://x/vs"},
            {"name": "count", "valueInteger": 2},
            {"name": "ratio", "valueDecimal": 0.25},
            {"name": "code", "valueCode": "active"},
            {"name": "coding", "valueCoding": coding},
            {"name": "concept", "valueCodeableConcept": {"coding": [coding]}},
            {"name": "resource", "resource": {"resourceType": "Patient"}},
            {"name": "valueSet", "resource": vs},
            {"name": "anything", "valueQuantity": {"value": 1}},
            {
                "name": "dependency",
                "part": [
                    {"name": "element", "valueUri": "http://x/e"},
                    {"name": "concept", "valueCodeableConcept": {"text": "t"}},
                ],
            },
        ),
    )
    assert got == {
        "flag": [False],
        "url": ["http://x/vs"],
        "count": [2],
        "ratio": [Decimal("0.25")],
        "code": ["active"],
        "coding": [coding],
        "concept": [{"coding": [coding]}],
        "resource": [{"resourceType": "Patient"}],
        "valueSet": [vs],
        "anything": [{"value": 1}],
        "dependency": [{"element": ["http://x/e"], "concept": [{"text": "t"}]}],
    }


@pytest.mark.parametrize(
    ("param", "message", "expression"),
    [
        ({"name": "url", "valueString": "http://x"}, "must be a uri (valueUri)", "[0]"),
        ({"name": "count", "valueInteger": True}, "JSON integer", "[0]"),
        ({"name": "count", "valueInteger": "2"}, "JSON integer", "[0]"),
        ({"name": "flag", "valueBoolean": "true"}, "JSON boolean", "[0]"),
        ({"name": "code", "valueCode": 3}, "JSON string", "[0]"),
        ({"name": "coding", "valueCoding": "http://x|a"}, "Coding object", "[0]"),
        ({"name": "valueSet", "resource": {"resourceType": "CodeSystem"}}, "ValueSet", "[0]"),
        ({"name": "resource", "valueString": "x"}, "must be a resource", "[0]"),
        ({"name": "url"}, "exactly one of", "[0]"),
        ({"name": "url", "valueUri": "x", "valueString": "y"}, "exactly one of", "[0]"),
        ({"name": "nope", "valueString": "x"}, "Unknown parameter 'nope'", "[0]"),
        ({"valueString": "x"}, "with a name", "[0]"),
        ({"name": "dependency", "valueString": "x"}, "must have parts", "[0]"),
        (
            {"name": "dependency", "part": [{"name": "concept", "valueCodeableConcept": {}}]},
            "must be a CodeableConcept object",
            "[0].part[0]",
        ),
        (
            {"name": "dependency", "part": [{"name": "bad", "valueUri": "x"}]},
            "Unknown",
            "[0].part[0]",
        ),
        ({"name": "dependency", "part": []}, "'element' is required", "[0]"),
    ],
)
def test_body_errors_point_at_the_parameter(
    param: dict[str, Any], message: str, expression: str
) -> None:
    error = _error(body=_body({"name": "text", "valueString": "ok"}, param))
    issue = error.issues[0]
    index = int(expression[1]) + 1
    assert issue.expression == f"Parameters.parameter[{index}]{expression[3:]}"
    assert message in issue.diagnostics


def test_body_must_be_parameters() -> None:
    assert "Parameters" in _error(body={"resourceType": "Patient"}).issues[0].diagnostics
    assert "Parameters" in _error(body=[1]).issues[0].diagnostics
    bad = {"resourceType": "Parameters", "parameter": {"name": "x"}}
    assert _error(body=bad).issues[0].expression == "Parameters"
    assert parse_input(DEFINITION, query=None, body={"resourceType": "Parameters"}) == {}


def test_to_parameters() -> None:
    vs = {"resourceType": "ValueSet", "url": "http://x/vs"}
    out = to_parameters(
        [
            ("result", True),
            ("count", 3),
            ("ratio", Decimal("1.5")),
            ("whole", Decimal("2")),
            ("message", "hello"),
            ("skipped", None),
            ("code", Typed("code", "active")),
            ("coding", Typed("Coding", {"code": "a"})),
            ("return", vs),
            ("typed", Typed("ValueSet", vs)),
            ("match", [("equivalence", Typed("code", "equal")), ("none", None)]),
        ]
    )
    assert out == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "result", "valueBoolean": True},
            {"name": "count", "valueInteger": 3},
            {"name": "ratio", "valueDecimal": 1.5},
            {"name": "whole", "valueDecimal": 2},
            {"name": "message", "valueString": "hello"},
            {"name": "code", "valueCode": "active"},
            {"name": "coding", "valueCoding": {"code": "a"}},
            {"name": "return", "resource": vs},
            {"name": "typed", "resource": vs},
            {"name": "match", "part": [{"name": "equivalence", "valueCode": "equal"}]},
        ],
    }
    assert to_parameters([]) == {"resourceType": "Parameters"}
    with pytest.raises(TypeError):
        to_parameters([("x", {"code": "a"})])
