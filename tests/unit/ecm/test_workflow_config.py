"""Plan configuration of the ECM referral workflow: one file per plan Organization, the
settings' value as the default (docs/ecm-workflow.md, "Plan configuration")."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from server.ecm.workflow_config import PlanConfigError, WorkflowConfig, WorkflowPlans

DEFAULT = WorkflowConfig(decision_business_days=5)


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).write_text(json.dumps(data))


def test_each_plan_file_overrides_the_default_for_its_organization(tmp_path: Path) -> None:
    _write(tmp_path, "a.json", {"organization": "Organization/a", "holidays": ["2026-12-24"]})
    _write(tmp_path, "b.json", {"organization": "Organization/b",
                                "referralDecisionBusinessDays": 10,
                                "resubmissionRestartsClock": False})
    plans = WorkflowPlans.load(tmp_path, DEFAULT)
    a = plans.select(["Organization/a"])
    assert (a.decision_business_days, a.holidays) == (5, frozenset({date(2026, 12, 24)}))
    assert a.resubmission_restarts_clock is True
    assert a.source == "plan configuration of Organization/a"
    b = plans.select([None, "Organization/x", "Organization/b"])
    assert (b.decision_business_days, b.holidays) == (10, None)
    assert b.resubmission_restarts_clock is False
    assert plans.select(["Organization/x"]) is DEFAULT
    # continuity of care (VI.G.3.e): six months unless the plan says otherwise
    assert a.continuity_authorization_months == 6


def test_a_plan_sets_a_shorter_continuity_authorization(tmp_path: Path) -> None:
    _write(tmp_path, "a.json", {"organization": "Organization/a",
                                "continuityAuthorizationMonths": 3})
    a = WorkflowPlans.load(tmp_path, DEFAULT).select(["Organization/a"])
    assert a.continuity_authorization_months == 3
    assert WorkflowPlans.load(None, DEFAULT).select(["Organization/a"]) is DEFAULT


@pytest.mark.parametrize(
    "data, message",
    [
        ({"organization": "Organization/a", "decisionDays": 3}, "unknown key 'decisionDays'"),
        ({"referralDecisionBusinessDays": 3}, "'organization' must be"),
        ({"organization": "Patient/a"}, "'organization' must be"),
        ({"organization": "Organization/a", "referralDecisionBusinessDays": -1}, "0..365"),
        ({"organization": "Organization/a", "referralDecisionBusinessDays": True}, "0..365"),
        ({"organization": "Organization/a", "holidays": ["2026-02-30"]}, "'holidays'"),
        ({"organization": "Organization/a", "holidays": "2026-12-25"}, "'holidays'"),
        ({"organization": "Organization/a", "resubmissionRestartsClock": "yes"}, "true or false"),
        ({"organization": "Organization/a", "assignmentRuleOrder": ["pcp", "language"]},
         "'assignmentRuleOrder'"),
        ({"organization": "Organization/a", "assignmentRuleOrder": ["pcp", "pcp"]},
         "'assignmentRuleOrder'"),
        ({"organization": "Organization/a", "assignmentRuleOrder": "pcp"}, "'assignmentRuleOrder'"),
        ({"organization": "Organization/a", "assignmentTieBreaker": "random"},
         "'assignmentTieBreaker'"),
        # VI.G.3.e: "up to six (6) months"
        ({"organization": "Organization/a", "continuityAuthorizationMonths": 7}, "1..6"),
        ({"organization": "Organization/a", "continuityAuthorizationMonths": 0}, "1..6"),
        # the network is recorded as HealthcareServices (docs/ecm-workflow.md), not configured
        ({"organization": "Organization/a", "ecmNetwork": ["Organization/p"]},
         "unknown key 'ecmNetwork'"),
        ({"organization": "Organization/a", "lettersOfAgreement": ["Organization/p"]},
         "unknown key 'lettersOfAgreement'"),
        ([1, 2], "a JSON object"),
    ],
)
def test_a_bad_plan_file_stops_the_server(tmp_path: Path, data: object, message: str) -> None:
    _write(tmp_path, "plan.json", data)
    with pytest.raises(PlanConfigError, match=message):
        WorkflowPlans.load(tmp_path, DEFAULT)


def test_two_files_for_one_plan_and_a_missing_folder_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a.json", {"organization": "Organization/a"})
    _write(tmp_path, "b.json", {"organization": "Organization/a"})
    with pytest.raises(PlanConfigError, match="a second file for Organization/a"):
        WorkflowPlans.load(tmp_path, DEFAULT)
    with pytest.raises(PlanConfigError, match="does not exist"):
        WorkflowPlans.load(tmp_path / "missing", DEFAULT)


def test_the_assignment_choices_default_to_a_person(tmp_path: Path) -> None:
    """The seeds rank neither the PCP, behavioural-health and CCS rules nor the candidates left:
    without a plan's choice a person decides (docs/ecm-workflow.md, "Assignment")."""
    _write(tmp_path, "a.json", {"organization": "Organization/a",
                                "assignmentRuleOrder": ["behavioral-health", "pcp"],
                                "assignmentTieBreaker": "most-open-capacity"})
    _write(tmp_path, "b.json", {"organization": "Organization/b"})
    plans = WorkflowPlans.load(tmp_path, DEFAULT)
    a, b = plans.select(["Organization/a"]), plans.select(["Organization/b"])
    assert (a.assignment_rule_order, a.assignment_tie_breaker) == (
        ("behavioral-health", "pcp"), "most-open-capacity")
    assert (b.assignment_rule_order, b.assignment_tie_breaker) == ((), None)
