"""Plan configuration of the ECM referral workflow, keyed by the plan's Organization.

The seeds leave the referral deadlines to the health plan: seed 003 VI.D.7.a says the plan
acknowledges receipt of a referral but not by when it decides, and names no holiday calendar.
Each of those values is plan configuration with a documented default (docs/ecm-workflow.md,
"Plan configuration"), never a rule of the server's own. One server serves several plans, so a
value is looked up for the plan of the referral: the plan Organization of the member's active
Coverage, else the organisation of the caller (a plan's own staff entering a referral); the
global settings are only the default.

A plan's configuration is a JSON file in the directory of the ``ecm_plan_config_dir`` setting
(``CALAIM_FHIR_ECM_PLAN_CONFIG_DIR``), one file per plan::

    {"organization": "Organization/golden-poppy-health-plan",
     "referralDecisionBusinessDays": 5,
     "holidays": ["2026-12-24", "2026-12-25"],
     "resubmissionRestartsClock": true,
     "assignmentRuleOrder": ["pcp", "behavioral-health", "ccs-case-manager"],
     "assignmentTieBreaker": "most-open-capacity",
     "continuityAuthorizationMonths": 6}

Keys left out take the default; an unknown key, a bad value or two files for one organisation
stop the server at start-up (a plan's deadlines must never silently fall back).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

#: Default business days from receipt to the plan's decision on a referral. The seeds give no
#: number (seed 003 VI.D.6-8); a Medi-Cal plan publishes 5 business days for processing ECM and
#: Community Supports referrals (standards.md §2.1, Alliance [S2]).
DEFAULT_DECISION_BUSINESS_DAYS = 5
#: Continuity of care: "ECM services shall be authorized for up to six (6) months" (seed 003
#: VI.G.3.e). A plan may authorize for less; never more.
MAX_CONTINUITY_MONTHS = 6


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    """One plan's choices for the referral workflow (docs/ecm-workflow.md)."""

    #: the plan Organization (``Organization/id``) this configuration is for; None: the default
    organization: str | None = None
    #: business days from receipt to the decision (``Task.restriction.period.end``)
    decision_business_days: int = DEFAULT_DECISION_BUSINESS_DAYS
    #: the plan's holidays; None: the U.S. federal holidays (``calendar.federal_holidays``)
    holidays: frozenset[date] | None = None
    #: whether a referral resubmitted after correction (VI.D.7.b) gets a new decision date
    #: counted from the resubmission (True) or keeps the first one (False)
    resubmission_restarts_clock: bool = True
    #: the order of the assignment rules the seeds do not rank (``pcp``, ``behavioral-health``,
    #: ``ccs-case-manager``; seed 003 VI.E.2.a-c); empty: a person decides (``needsReview``)
    assignment_rule_order: tuple[str, ...] = ()
    #: how ``$ecm-assign`` chooses among several eligible providers no rule separates
    #: (``most-open-capacity``); None: a person decides — the seeds give no tie-breaker
    assignment_tie_breaker: str | None = None
    #: months of a continuity-of-care authorization (seed 003 VI.G.3.e: "up to six (6) months")
    continuity_authorization_months: int = MAX_CONTINUITY_MONTHS

    @property
    def source(self) -> str:
        """Where the values come from, for explanations."""
        if self.organization is None:
            return "plan configuration default"
        return f"plan configuration of {self.organization}"


_KEYS = {
    "organization": "organization",
    "referralDecisionBusinessDays": "decision_business_days",
    "holidays": "holidays",
    "resubmissionRestartsClock": "resubmission_restarts_clock",
    "assignmentRuleOrder": "assignment_rule_order",
    "assignmentTieBreaker": "assignment_tie_breaker",
    "continuityAuthorizationMonths": "continuity_authorization_months",
}
#: what ``assignmentRuleOrder`` may rank and ``assignmentTieBreaker`` may name
#: (``server/ecm/assignment.py``)
_UNRANKED_RULES = ("pcp", "behavioral-health", "ccs-case-manager")
_TIE_BREAKERS = ("most-open-capacity",)


class PlanConfigError(ValueError):
    """A plan configuration file that cannot be used."""


def parse_config(data: Mapping[str, Any], default: WorkflowConfig, where: str) -> WorkflowConfig:
    """One plan's file over ``default``."""
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise PlanConfigError(f"{where}: unknown key {unknown[0]!r} (known: {sorted(_KEYS)})")
    org = data.get("organization")
    if not isinstance(org, str) or not org.startswith("Organization/") or "/" in org[13:]:
        raise PlanConfigError(f"{where}: 'organization' must be 'Organization/<id>'")
    days = data.get("referralDecisionBusinessDays", default.decision_business_days)
    if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 365:
        raise PlanConfigError(f"{where}: 'referralDecisionBusinessDays' is 0..365")
    restarts = data.get("resubmissionRestartsClock", default.resubmission_restarts_clock)
    if not isinstance(restarts, bool):
        raise PlanConfigError(f"{where}: 'resubmissionRestartsClock' is true or false")
    months = data.get("continuityAuthorizationMonths", default.continuity_authorization_months)
    if (
        not isinstance(months, int)
        or isinstance(months, bool)
        or not 1 <= months <= MAX_CONTINUITY_MONTHS
    ):
        raise PlanConfigError(
            f"{where}: 'continuityAuthorizationMonths' is 1..{MAX_CONTINUITY_MONTHS} (seed 003 "
            "VI.G.3.e: up to six months)"
        )
    holidays = default.holidays
    if "holidays" in data:
        raw = data["holidays"]
        if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
            raise PlanConfigError(f"{where}: 'holidays' is a list of dates (YYYY-MM-DD)")
        try:
            holidays = frozenset(date.fromisoformat(d) for d in raw)
        except ValueError as exc:
            raise PlanConfigError(f"{where}: 'holidays': {exc}") from None
    order = data.get("assignmentRuleOrder", list(default.assignment_rule_order))
    if (
        not isinstance(order, list)
        or not all(r in _UNRANKED_RULES for r in order)
        or len(set(order)) != len(order)
    ):
        raise PlanConfigError(
            f"{where}: 'assignmentRuleOrder' lists distinct rules of {list(_UNRANKED_RULES)}"
        )
    tie = data.get("assignmentTieBreaker", default.assignment_tie_breaker)
    if tie is not None and tie not in _TIE_BREAKERS:
        raise PlanConfigError(
            f"{where}: 'assignmentTieBreaker' is null or one of {list(_TIE_BREAKERS)}"
        )
    return replace(
        default,
        organization=org,
        decision_business_days=days,
        holidays=holidays,
        resubmission_restarts_clock=restarts,
        assignment_rule_order=tuple(order),
        assignment_tie_breaker=tie,
        continuity_authorization_months=months,
    )


@dataclass(frozen=True, slots=True)
class WorkflowPlans:
    """The default and each plan's configuration, by plan Organization reference."""

    default: WorkflowConfig = WorkflowConfig()
    plans: Mapping[str, WorkflowConfig] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path | None, default: WorkflowConfig) -> WorkflowPlans:
        """The files of ``folder`` (None: only the default)."""
        plans: dict[str, WorkflowConfig] = {}
        if folder is not None:
            path = Path(folder)
            if not path.is_dir():
                raise PlanConfigError(f"{path}: the plan configuration folder does not exist")
            for file in sorted(path.glob("*.json")):
                try:
                    data = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise PlanConfigError(f"{file}: {exc}") from None
                if not isinstance(data, dict):
                    raise PlanConfigError(f"{file}: a JSON object")
                config = parse_config(data, default, str(file))
                assert config.organization is not None
                if config.organization in plans:
                    raise PlanConfigError(f"{file}: a second file for {config.organization}")
                plans[config.organization] = config
        return cls(default, plans)

    def select(self, candidates: Iterable[str | None]) -> WorkflowConfig:
        """The configuration of the first candidate plan Organization that has one."""
        for ref in candidates:
            if ref is not None and ref in self.plans:
                return self.plans[ref]
        return self.default
