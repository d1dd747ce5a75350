"""The shipped Community Supports rule set: it loads, covers every code of ``community-supports``,
cites a clause for every reported criterion, names only ValueSets the server expands and
attestation codes it defines; malformed files (readings, exiting, observation-value, unknown
definitions) are refused. The ``readings`` kind is checked on its own."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import orjson
import pytest

from server.ecm.codes import Codes
from server.ecm.community_supports import CURRENT, cs_rule_set, evaluate_services, parse
from server.ecm.evaluate import Evaluator
from server.ecm.record import Entry, MemberRecord
from server.ecm.ruleset import RULES, RuleSetError, walk
from server.fhir.conformance import conformance

CRITERION = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-criterion"


def _data() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((RULES / f"{CURRENT}.json").read_bytes())
    return data


def _codes(id: str) -> set[str]:
    cs = conformance().resource("CodeSystem", id)
    assert cs is not None
    return {c["code"] for c in cs["concept"]}


def test_every_community_support_has_rules() -> None:
    rules = cs_rule_set()
    assert rules.version == CURRENT
    assert set(rules.pof_codes) == _codes("community-supports")


def test_every_value_set_expands_and_every_attestation_code_exists() -> None:
    rules = cs_rule_set()
    codes = Codes(conformance().terminology)
    for url in sorted(rules.value_sets()):
        assert codes.expansion(url), url
    assert rules.attestation_codes() <= _codes("ecm-eligibility-criterion")


def test_every_reported_criterion_cites_the_source() -> None:
    for service in cs_rule_set().populations:
        for node in walk(service.criteria):
            if node.get("id"):
                assert "seed 004" in node["clause"] or "standards.md" in node["clause"], node


def test_shared_definitions_are_one_node() -> None:
    """The housing services share their criteria; HUD homelessness is defined once."""
    rules = cs_rule_set()
    day = date(2024, 10, 15)
    navigation = rules.population("housing-transition-navigation", day)
    deposits = rules.population("housing-deposits", day)
    assert navigation is not None and deposits is not None
    assert navigation.criteria == deposits.criteria
    assert "hud-homeless" in _data()["definitions"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["services"][0]["allOf"].append({"use": "nowhere"}), "unknown definition"),
        (lambda d: d["services"][0]["allOf"][0]["readings"].pop(), "at least two readings"),
        (
            lambda d: d["services"][0]["allOf"][0]["readings"][0].update({"expression": "x"}),
            "unknown terms",
        ),
        (
            lambda d: d["services"][0]["allOf"][0]["readings"][0].update(
                {"expression": {"xor": ["ecm-enrolled"]}}
            ),
            "all or any",
        ),
        (
            lambda d: d["services"][1]["allOf"][0]["terms"][1].pop("codes"),
            "exiting needs codes",
        ),
        (lambda d: d["services"][4]["allOf"][0]["nodes"][3].pop("max"), "min or max"),
        (
            lambda d: d["services"][4]["allOf"][0]["nodes"][2].pop("typeValueSets"),
            "typeValueSets",
        ),
        (lambda d: d["services"][0].pop("codes"), "malformed"),
    ],
)
def test_malformed_cs_rule_sets_are_refused(change: Any, message: str) -> None:
    data = copy.deepcopy(_data())
    change(data)
    with pytest.raises(RuleSetError, match=message):
        parse(data)


def _term(id: str, met: bool) -> dict[str, Any]:
    """A term that is met (age 0 or over) or not (age 200 or over) for anyone born."""
    return {"id": id, "kind": "age", "min": 0 if met else 200, "clause": "test"}


def _readings(a: bool, b: bool, attestation: bool | None = None) -> dict[str, Any]:
    data = copy.deepcopy(_data())
    data["services"] = [
        {
            "codes": ["sobering-centers"],
            "clause": "test",
            "allOf": [
                {
                    "id": "chain",
                    "kind": "readings",
                    "clause": "test",
                    "ambiguity": "a and b or b",
                    "attestation": "cs-intoxicated",
                    "terms": [_term("a", a), _term("b", b)],
                    "readings": [
                        {"text": "a and b", "expression": {"all": ["a", "b"]}},
                        {"text": "a or b", "expression": {"any": ["a", "b"]}},
                    ],
                }
            ],
        }
    ]
    return data


@pytest.mark.parametrize(
    ("a", "b", "attested", "result"),
    [
        (True, True, None, "met"),  # every reading met
        (False, False, None, "not-met"),  # every reading not met
        (True, False, None, "needs-attestation"),  # they disagree: a person's call
        (True, False, True, "met"),
        (True, False, False, "not-met"),
    ],
)
def test_readings_agree_or_ask_a_person(
    a: bool, b: bool, attested: bool | None, result: str
) -> None:
    rules = parse(_readings(a, b))
    evaluator = Evaluator(rules, Codes(conformance().terminology))
    record = MemberRecord(Entry({"resourceType": "Patient", "birthDate": "1980-01-01"}, "P/1"))
    if attested is not None:
        record.add(
            Entry(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": CRITERION, "code": "cs-intoxicated"}]},
                    "effectiveDateTime": "2024-10-01",
                    "valueBoolean": attested,
                },
                "Observation/1",
            )
        )
    answer = evaluate_services(evaluator, record, date(2024, 10, 15), ["sobering-centers"])
    (service,) = answer.services
    assert service.judged.result == result
    chain = service.judged.findings[0]
    assert chain.id == "chain"
    assert "reading a and b" in chain.explanation
    if result == "needs-attestation":
        assert "a and b or b" in chain.explanation  # the ambiguity is named
    # each term is reported once, after the criterion that reads it
    assert [f.id for f in service.judged.findings] == ["chain", "a", "b"]


def test_readings_that_disagree_with_missing_data_are_insufficient() -> None:
    """'a and b' lacks the birth date, 'a or b' is met through b: completing the data may make
    them agree, so the answer is insufficient-data, not a person's call."""
    data = _readings(True, True)
    chain = data["services"][0]["allOf"][0]
    chain["terms"][1] = {
        "id": "b",
        "kind": "not",
        "clause": "test",
        "node": {
            "kind": "condition",
            "valueSets": ["http://calaim-fhir.org/fhir/ValueSet/cs-elig-asthma"],
            "clause": "test",
        },
    }
    evaluator = Evaluator(parse(data), Codes(conformance().terminology))
    record = MemberRecord(Entry({"resourceType": "Patient"}, "P/1"))  # no birthDate
    answer = evaluate_services(evaluator, record, date(2024, 10, 15), ["sobering-centers"])
    (service,) = answer.services
    assert [(f.id, f.result) for f in service.judged.findings] == [
        ("chain", "insufficient-data"),
        ("a", "insufficient-data"),
        ("b", "met"),
    ]
    assert service.determination == "insufficient-data"
    assert answer.issues  # the missing birth date is reported
