"""The program rules every server runs on every write (registered by ``server/app.py``)."""

from __future__ import annotations

from server.ecm.assignment_receipt import AssignmentReceipt
from server.ecm.authorization import EnrollmentAuthorization
from server.ecm.continuity import ContinuityOfCare
from server.ecm.discontinuation import EnrollmentDiscontinuation
from server.ecm.intake import ReferralIntake
from server.ecm.notices import ReferralNotices
from server.ecm.referral_lifecycle import ReferralLifecycle
from server.ecm.workflow_config import WorkflowConfig, WorkflowPlans
from server.search.parse import SearchContext
from server.settings import Settings
from server.writes.rules import Rule


def workflow_plans(settings: Settings) -> WorkflowPlans:
    """The ECM referral workflow's plan configuration: the settings' default and each plan's
    file (docs/ecm-workflow.md, "Plan configuration")."""
    default = WorkflowConfig(decision_business_days=settings.ecm_referral_decision_business_days)
    return WorkflowPlans.load(settings.ecm_plan_config_dir, default)


def program_rules(settings: Settings, context: SearchContext) -> list[Rule]:
    """The rules, reading search criteria with ``context`` (the server's)."""
    plans = workflow_plans(settings)
    return [
        ReferralLifecycle(context, settings.coordination_platform),
        ReferralIntake(context, plans),
        ContinuityOfCare(context, plans),
        EnrollmentAuthorization(),
        ReferralNotices(context),
        EnrollmentDiscontinuation(context),
        AssignmentReceipt(),
    ]
