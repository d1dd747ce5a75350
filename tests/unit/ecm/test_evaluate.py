"""Rule kinds on hand-made records, for the cases the HTTP scenarios do not reach: statuses that
void a record, codes a criterion excludes, attestations made on the same day, and the data
problems reported as issues."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest

from server.ecm.codes import Codes
from server.ecm.evaluate import Eligibility, Evaluator
from server.ecm.plan import Payor, PlanConfig
from server.ecm.record import Entry, MemberRecord
from server.ecm.ruleset import CURRENT, RULES, parse, rule_set
from server.fhir.conformance import conformance
from server.operations.ecm_eligibility import plan_config
from server.settings import Settings

FINDING = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-finding"
PROGRAM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-program"
CRITERION = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-criterion"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SUBJECT = {"reference": "Patient/p"}


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(rule_set(), Codes(conformance().terminology))


def _record(*resources: dict[str, Any], birth: str | None = "1980-01-01") -> MemberRecord:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "p"}
    if birth:
        patient["birthDate"] = birth
    record = MemberRecord(Entry(patient, "Patient/p"))
    for i, r in enumerate(resources):
        record.add(Entry(r, f"{r['resourceType']}/{i}"))
    return record


def _criterion(answer: Eligibility, pof: str, id: str) -> str:
    judged = next(p for p in (*answer.pofs, *answer.exclusions) if p.code == pof)
    return next(f.result for f in judged.findings if f.id == id)


def _episode(code: str, status: str, start: str, end: str | None = None) -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "EpisodeOfCare",
        "status": status,
        "patient": SUBJECT,
        "period": period,
        "type": [{"coding": [{"system": PROGRAM, "code": code}]}],
    }


def test_statute_homelessness_is_excluded_before_july_2023_also_as_a_value(
    evaluator: Evaluator,
) -> None:
    observed = {
        "resourceType": "Observation",
        "status": "final",
        "subject": SUBJECT,
        "code": {"coding": [{"system": "http://loinc.org", "code": "71802-3"}]},
        "effectiveDateTime": "2023-04-01",
        "valueCodeableConcept": {
            "coding": [{"system": FINDING, "code": "homeless-other-federal-statute"}]
        },
    }
    before = evaluator.evaluate(_record(observed), date(2023, 5, 1))
    assert _criterion(before, "homelessness-adult", "experiencing-homelessness") == "not-met"
    after = evaluator.evaluate(_record(observed), date(2023, 7, 1))
    assert _criterion(after, "homelessness-adult", "experiencing-homelessness") == "met"


def test_a_condition_with_an_excluded_and_a_counting_coding_counts(evaluator: Evaluator) -> None:
    condition = {
        "resourceType": "Condition",
        "subject": SUBJECT,
        "onsetDateTime": "2023-01-01",
        "code": {
            "coding": [
                {"system": FINDING, "code": "homeless-other-federal-statute"},
                {"system": ICD, "code": "Z59.02"},
            ]
        },
    }
    answer = evaluator.evaluate(_record(condition), date(2023, 5, 1))
    assert _criterion(answer, "homelessness-adult", "experiencing-homelessness") == "met"


@pytest.mark.parametrize("status", ["entered-in-error", "planned", "cancelled", "waitlist"])
def test_voided_episodes_never_count_as_recently_ended(evaluator: Evaluator, status: str) -> None:
    episode = _episode("correctional-facility", status, "2023-01-01", "2024-03-01")
    answer = evaluator.evaluate(_record(episode), date(2024, 6, 1))
    assert _criterion(answer, "justice-involved-adult", "incarceration") == "not-met"
    finished = _episode("correctional-facility", "finished", "2023-01-01", "2024-03-01")
    answer = evaluator.evaluate(_record(finished), date(2024, 6, 1))
    assert _criterion(answer, "justice-involved-adult", "incarceration") == "met"


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_a_voided_delivery_is_no_postpartum(evaluator: Evaluator, verification: str) -> None:
    delivery = {
        "resourceType": "Condition",
        "subject": SUBJECT,
        "onsetDateTime": "2024-03-01",
        "code": {"coding": [{"system": ICD, "code": "Z37.0"}]},
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        },
    }
    answer = evaluator.evaluate(_record(delivery), date(2024, 6, 1))
    assert _criterion(answer, "birth-equity-adult", "pregnant-or-postpartum") == "not-met"


@pytest.mark.parametrize("link", ["reasonReference", "diagnosis", "Condition.encounter"])
@pytest.mark.parametrize("verification", ["confirmed", "refuted"])
def test_a_visit_is_for_smh_sud_through_each_link_unless_the_diagnosis_is_refuted(
    evaluator: Evaluator, link: str, verification: str
) -> None:
    """Resource i of ``_record`` is named ``<Type>/i``: visits 0 and 2, their Conditions 1 and 3."""
    resources: list[dict[str, Any]] = []
    for day in ("2024-02-01", "2024-05-01"):
        visit: dict[str, Any] = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "subject": SUBJECT,
            "period": {"start": f"{day}T10:00:00-08:00"},
        }
        condition: dict[str, Any] = {
            "resourceType": "Condition",
            "subject": SUBJECT,
            "onsetDateTime": day,
            "code": {"coding": [{"system": ICD, "code": "F10.20"}]},
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": verification,
                    }
                ]
            },
        }
        named = {"reference": f"Condition/{len(resources) + 1}"}
        if link == "reasonReference":
            visit["reasonReference"] = [named]
        elif link == "diagnosis":
            visit["diagnosis"] = [{"condition": named}]
        else:
            condition["encounter"] = {"reference": f"Encounter/{len(resources)}"}
        resources += [visit, condition]
    answer = evaluator.evaluate(_record(*resources), date(2024, 6, 1))
    expected = "met" if verification == "confirmed" else "not-met"
    assert _criterion(answer, "smh-sud-adult", "smh-sud-utilization") == expected


def test_the_later_of_two_attestations_on_one_day_wins(evaluator: Evaluator) -> None:
    def attest(at: str, value: bool) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "subject": SUBJECT,
            "code": {"coding": [{"system": CRITERION, "code": "avoidable-utilization"}]},
            "effectiveDateTime": at,
            "valueBoolean": value,
            "performer": [{"reference": "Practitioner/x"}],
        }

    later_false = _record(
        attest("2024-05-01T09:00:00-07:00", True), attest("2024-05-01T15:00:00-07:00", False)
    )
    answer = evaluator.evaluate(later_false, date(2024, 6, 1))
    assert _criterion(answer, "avoidable-utilization-adult", "avoidable-utilization") == "not-met"
    later_true = _record(
        attest("2024-05-01T15:00:00-07:00", True), attest("2024-05-01T09:00:00-07:00", False)
    )
    answer = evaluator.evaluate(later_true, date(2024, 6, 1))
    assert _criterion(answer, "avoidable-utilization-adult", "avoidable-utilization") == "met"


def test_data_problems_are_reported(evaluator: Evaluator) -> None:
    answer = evaluator.evaluate(_record(birth=None), date(2024, 6, 1))
    assert answer.determination == "insufficient-data"
    assert {where for _, where in answer.issues} == {"Patient.birthDate", "Coverage"}


@pytest.mark.parametrize(
    ("birth", "as_of", "adult", "youth"),
    [
        ("2003", date(2024, 6, 1), "insufficient-data", "insufficient-data"),  # 20 or 21
        ("2003", date(2025, 1, 1), "met", "not-met"),  # 21 whatever the day
        ("2003", date(2023, 12, 31), "not-met", "met"),  # 19 or 20
        ("2003-05", date(2024, 6, 1), "met", "not-met"),
        ("2003-05", date(2024, 5, 15), "insufficient-data", "insufficient-data"),
        ("2003-05-15", date(2024, 5, 15), "met", "not-met"),
    ],
)
def test_a_partial_birth_date_decides_an_age_only_when_every_day_it_spans_agrees(
    evaluator: Evaluator, birth: str, as_of: date, adult: str, youth: str
) -> None:
    answer = evaluator.evaluate(_record(birth=birth), as_of)
    assert _criterion(answer, "smh-sud-adult", "age") == adult
    assert _criterion(answer, "smh-sud-youth", "age") == youth
    partial = [text for text, where in answer.issues if where == "Patient.birthDate"]
    assert bool(partial) == (adult == "insufficient-data")
    if partial:
        assert "partial" in partial[0]


def test_a_baseline_not_met_is_not_eligible_whatever_is_missing(evaluator: Evaluator) -> None:
    ended = {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": SUBJECT,
        "payor": [{"reference": "Organization/o"}],
        "period": {"end": "2023-12-31"},
        "type": {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.221.5", "code": "21"}]},
    }
    answer = evaluator.evaluate(_record(ended, birth=None), date(2024, 6, 1))
    assert answer.baseline.result == "not-met"
    assert answer.determination == "not-eligible"


def test_exclusions_out_of_force_are_not_reported() -> None:
    data = orjson.loads((RULES / f"{CURRENT}.json").read_bytes())
    data["exclusions"][0]["to"] = "2023-12-31"
    dated = Evaluator(parse(data), Codes(conformance().terminology))
    hospice = _episode("hospice", "active", "2023-01-01")
    codes = {e.code for e in dated.evaluate(_record(hospice), date(2023, 12, 31)).exclusions}
    assert "hospice-or-palliative-care" in codes
    answer = dated.evaluate(_record(hospice), date(2024, 1, 1))
    assert "hospice-or-palliative-care" not in {e.code for e in answer.exclusions}


# -- plan configuration and what the answer says about it -----------------------------------------

MEDI_CAL = {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.221.5", "code": "21"}]}
PLAN_ID = ("https://calaim-fhir.org/fhir/sid/health-plan", "golden-poppy")


def _explanation(answer: Eligibility, pof: str, id: str) -> str:
    judged = next(p for p in (*answer.pofs, *answer.exclusions) if p.code == pof)
    return next(f.explanation for f in judged.findings if f.id == id)


def _coverage(payor: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": SUBJECT,
        "payor": [payor],
        "type": MEDI_CAL,
    }


def test_the_baseline_says_whether_the_plan_is_configured(evaluator: Evaluator) -> None:
    coverage = _coverage({"reference": "Organization/redwood"})
    unset = evaluator.evaluate(_record(coverage), date(2024, 6, 1))
    assert unset.baseline.result == "met"
    assert "CALAIM_FHIR_PLAN_IDENTIFIER is unset" in unset.baseline.explanation
    configured = Evaluator(rule_set(), evaluator.codes, PlanConfig(identifier=PLAN_ID))
    other = configured.evaluate(_record(coverage), date(2024, 6, 1))
    assert other.baseline.result == "not-met"
    assert "another plan's" in other.baseline.explanation
    ours = Payor(PLAN_ID, frozenset({"Organization/poppy"}))
    for payor in (
        {"reference": "Organization/poppy"},
        {"identifier": {"system": PLAN_ID[0], "value": PLAN_ID[1]}},
    ):
        answer = configured.evaluate(_record(_coverage(payor)), date(2024, 6, 1), payor=ours)
        assert answer.baseline.result == "met"
        assert "golden-poppy" in answer.baseline.explanation


def test_a_youth_from_an_adult_facility_names_the_reading(evaluator: Evaluator) -> None:
    released = _episode("correctional-facility", "finished", "2024-01-01", "2024-05-01")
    answer = evaluator.evaluate(_record(released, birth="2008-01-01"), date(2024, 6, 1))
    text = _explanation(answer, "justice-involved-youth", "incarceration")
    assert _criterion(answer, "justice-involved-youth", "incarceration") == "met"
    assert "is counted as the youth correctional facility of VI.A.5.d.1" in text
    assert "CALAIM_FHIR_ELIGIBILITY_YOUTH_ADULT_FACILITY" in text
    literal = Evaluator(rule_set(), evaluator.codes, PlanConfig(youth_adult_facility=False))
    answer = literal.evaluate(_record(released, birth="2008-01-01"), date(2024, 6, 1))
    assert _criterion(answer, "justice-involved-youth", "incarceration") == "not-met"
    assert "is not counted" in _explanation(answer, "justice-involved-youth", "incarceration")


def test_the_release_horizon_is_the_plans(evaluator: Evaluator) -> None:
    held = _episode("correctional-facility", "active", "2023-01-01", "2024-08-15")
    answer = evaluator.evaluate(_record(held), date(2024, 6, 1))  # 75 days ahead
    assert _criterion(answer, "justice-involved-adult", "incarceration") == "met"
    short = Evaluator(rule_set(), evaluator.codes, PlanConfig(release_horizon_days=30))
    answer = short.evaluate(_record(held), date(2024, 6, 1))
    assert _criterion(answer, "justice-involved-adult", "incarceration") == "not-met"
    assert "within 30 days" in _explanation(answer, "justice-involved-adult", "incarceration")


def test_no_dependent_children_recorded_is_said_to_be_assumed(evaluator: Evaluator) -> None:
    answer = evaluator.evaluate(_record(), date(2024, 6, 1))
    assert _criterion(answer, "homelessness-adult", "no-dependent-children") == "met"
    assert "assumed" in _explanation(answer, "homelessness-adult", "no-dependent-children")


def test_the_complex_social_factors_are_the_plans(evaluator: Evaluator) -> None:
    unemployed = {
        "resourceType": "Condition",
        "subject": SUBJECT,
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": ICD, "code": "Z56.0"}]},
        "onsetDateTime": "2024-01-01",
    }
    answer = evaluator.evaluate(_record(unemployed), date(2024, 6, 1))
    assert _criterion(answer, "ltc-risk-adult", "complex-social-factor") == "met"
    narrow = PlanConfig(
        complex_social_factor="http://calaim-fhir.org/fhir/ValueSet/ecm-elig-ccs-social-factor"
    )
    answer = Evaluator(rule_set(), evaluator.codes, narrow).evaluate(
        _record(unemployed), date(2024, 6, 1)
    )
    assert _criterion(answer, "ltc-risk-adult", "complex-social-factor") == "not-met"
    text = _explanation(answer, "ltc-risk-adult", "complex-social-factor")
    assert "CALAIM_FHIR_ELIGIBILITY_COMPLEX_SOCIAL_FACTOR_VALUESET" in text


def test_stale_pregnancy_and_missing_race_are_reported_as_issues(evaluator: Evaluator) -> None:
    pregnant = {
        "resourceType": "Condition",
        "subject": SUBJECT,
        "code": {"coding": [{"system": ICD, "code": "Z34.00"}]},
        "onsetDateTime": "2023-01-01",
    }
    answer = evaluator.evaluate(_record(pregnant), date(2024, 6, 1))
    assert _criterion(answer, "birth-equity-adult", "pregnant-or-postpartum") == "insufficient-data"
    wheres = {where for _, where in answer.issues}
    assert "Condition.onset" in wheres
    assert any("us-core-race" in where for where in wheres)
    texts = " ".join(text for text, _ in answer.issues)
    assert "older than 300 days" in texts


def test_settings_make_the_plan_configuration() -> None:
    settings = Settings(
        plan_identifier="https://calaim-fhir.org/fhir/sid/health-plan|golden-poppy",
        eligibility_release_horizon_days=60,
        eligibility_youth_adult_facility=False,
    )
    plan = plan_config(settings)
    assert plan.identifier == PLAN_ID
    assert (plan.release_horizon_days, plan.youth_adult_facility) == (60, False)
    assert plan_config(Settings()) == PlanConfig()
    with pytest.raises(ValueError):
        Settings(plan_identifier="golden-poppy")
