"""The shipped rule set loads, cites a clause for every reported criterion, covers every
Population of Focus of the CodeSystem and names only ValueSets the server can expand."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import orjson
import pytest

from server.ecm.codes import Codes
from server.ecm.ruleset import CURRENT, RULES, RuleSetError, parse, rule_set
from server.fhir.conformance import conformance


def _data() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((RULES / f"{CURRENT}.json").read_bytes())
    return data


def test_shipped_rule_set_loads() -> None:
    rules = rule_set()
    assert rules.version == CURRENT
    assert len(rules.pof_codes) == 15


def test_every_pof_variant_of_the_code_system_has_rules() -> None:
    cs = conformance().resource("CodeSystem", "ecm-population-of-focus")
    assert cs is not None
    variants = {child["code"] for c in cs["concept"] for child in c.get("concept", [])}
    assert variants == set(rule_set().pof_codes)


def test_every_exclusion_is_a_code_of_the_exclusion_code_system() -> None:
    cs = conformance().resource("CodeSystem", "ecm-exclusion-reason")
    assert cs is not None
    codes = {c["code"] for c in cs["concept"]}
    assert {e.code for e in rule_set().exclusions} <= codes


def test_every_value_set_expands() -> None:
    codes = Codes(conformance().terminology)
    for url in sorted(rule_set().value_sets()):
        assert codes.expansion(url), url


def test_homelessness_definition_changes_on_2023_07_01() -> None:
    rules = rule_set()
    before = rules.population("homelessness-adult", date(2023, 6, 30))
    after = rules.population("homelessness-adult", date(2023, 7, 1))
    assert before is not None and after is not None and before is not after
    # children in homeless families: through the family until 2023-06-30 (VI.A.4.a "and their
    # families"), in their own right from 2023-07-01 (VI.A.5.a)
    family = rules.population("homelessness-family-youth", date(2023, 6, 30))
    own = rules.population("homelessness-family-youth", date(2023, 7, 1))
    assert family is not None and own is not None and family is not own
    assert rules.population("homelessness-family-youth", date(2021, 12, 31)) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["populations"][0]["allOf"].append({"kind": "magic"}), "unknown kind"),
        (lambda d: d["populations"][0]["allOf"].append({"kind": "age", "id": "x"}), "cites no"),
        (lambda d: d["populations"][0]["allOf"].append({"kind": "program"}), "needs codes"),
        (lambda d: d["populations"][1].update({"from": "2023-06-01"}), "overlap"),
        (lambda d: d.pop("baseline"), "malformed"),
    ],
)
def test_malformed_rule_sets_are_refused(change: Any, message: str) -> None:
    data = copy.deepcopy(_data())
    change(data)
    with pytest.raises(RuleSetError, match=message):
        parse(data)
