"""The resources an ECM provider assignment writes (``$ecm-assign`` ``mode=commit``), and its
deadlines (seed 003 VI.E.3-4).

Gravity's coordination-platform shape (standards.md §1.8, docs/closed-loop.md): the plan's
referral Task stays the plan's; the provider gets its own referral Task ``partOf`` it, whose
``focus`` is a ``filler-order`` ServiceRequest ``basedOn`` the member's referral, ``performer``
the provider and its ECM HealthcareService (what capacity counts). The CareTeam names the Lead
Care Manager when known; the enrollment gets the provider as ``managingOrganization``; one
``ecm-notice`` Communication each to the provider, the member and the referrer.

Deadlines, on the provider's Task (``restriction.period.end``, searchable with ``due``):

- **the provider is told within ten business days of authorization** (VI.E.4): counted from
  the enrollment's ``authorization-date`` (else the assignment day) on the plan's business-day
  calendar (``workflow_config.py``: its holidays, else the federal ones). "Told" is the
  provider's answer: its Task ``accepted`` or ``rejected``; a Task still ``requested`` past its
  ``due`` is overdue;
- **a reassignment the member asked for is made within 30 calendar days of the request**
  (VI.E.3): ``due`` = the request date + 30 days.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from typing import Any

from server.ecm.calendar import add_business_days

BASE = "http://calaim-fhir.org/fhir"
WORKFLOW = f"{BASE}/CodeSystem/ecm-referral-workflow"
CARE_TEAM_ROLE = f"{BASE}/CodeSystem/ecm-care-team-role"
TASK_PROFILE = f"{BASE}/StructureDefinition/ecm-referral-task"
CARE_TEAM_PROFILE = f"{BASE}/StructureDefinition/ecm-care-team"
NOTICE_PROFILE = f"{BASE}/StructureDefinition/ecm-notice"
MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
#: VI.E.4 "within ten (10) business days of authorization"
NOTICE_BUSINESS_DAYS = 10
#: VI.E.3 "within 30 days of the request date"
REASSIGNMENT_DAYS = 30


def notice_due(authorized: date, holidays: frozenset[date] | None) -> date:
    """The last day to tell the provider (VI.E.4)."""
    return add_business_days(authorized, NOTICE_BUSINESS_DAYS, holidays)


def reassignment_due(requested: date) -> date:
    """The last day of a reassignment the member asked for (VI.E.3)."""
    return requested + timedelta(days=REASSIGNMENT_DAYS)


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def filler_order(
    referral: dict[str, Any],
    referral_ref: str,
    plan: str,
    provider: str,
    service: str,
    stamp: str,
    replaces: str | None,
) -> dict[str, Any]:
    """The provider's order for the member: the referral, as the plan orders it from the
    provider (``performer``: the provider and the service whose capacity it takes)."""
    order = copy.deepcopy(referral)
    for key in ("id", "identifier", "performer", "replaces", "requisition"):
        order.pop(key, None)
    meta = {k: v for k, v in (order.pop("meta", None) or {}).items() if k == "profile"}
    if meta:
        order["meta"] = meta
    order.update(
        status="active",
        intent="filler-order",
        basedOn=[_ref(referral_ref)],
        requester=_ref(plan),
        performer=[_ref(provider), _ref(service)],
        authoredOn=stamp,
    )
    if replaces is not None:
        order["replaces"] = [_ref(replaces)]
    return order


def provider_task(
    *,
    member: str,
    order: str,
    plan: str,
    provider: str,
    plan_task: str,
    stamp: str,
    due: date,
    reason: str,
) -> dict[str, Any]:
    """The provider's referral Task, ``partOf`` the plan's, due as the deadline says."""
    return {
        "resourceType": "Task",
        "meta": {"profile": [TASK_PROFILE]},
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "description": reason,
        "partOf": [_ref(plan_task)],
        "focus": _ref(order),
        "for": _ref(member),
        "authoredOn": stamp,
        "requester": _ref(plan),
        "owner": _ref(provider),
        "restriction": {"period": {"start": stamp, "end": due.isoformat()}},
    }


def care_team(member: str, provider: str, lead: str, episode: str, name: str) -> dict[str, Any]:
    """The member's care team at the provider, its Lead Care Manager named."""

    def role(code: str) -> list[dict[str, Any]]:
        return [{"coding": [{"system": CARE_TEAM_ROLE, "code": code}]}]

    return {
        "resourceType": "CareTeam",
        "meta": {"profile": [CARE_TEAM_PROFILE]},
        "status": "proposed",
        "name": f"ECM care team ({name})",
        "subject": _ref(member),
        "managingOrganization": [_ref(provider)],
        "participant": [
            {"role": role("lead-care-manager"), "member": _ref(lead)},
            {"role": role("member"), "member": _ref(member)},
        ],
        "note": [{"text": f"ECM enrollment {episode}"}],
    }


def assigned_episode(
    episode: dict[str, Any], provider: str, lead: str | None, team: str | None
) -> dict[str, Any]:
    """The enrollment with its provider (and Lead Care Manager and care team, when known)."""
    updated = dict(episode)
    updated["managingOrganization"] = _ref(provider)
    if lead is not None:
        updated["careManager"] = _ref(lead)
    else:
        updated.pop("careManager", None)
    if team is not None:
        updated["team"] = [_ref(team)]
    else:
        updated.pop("team", None)
    return updated


def notice(
    *,
    recipient: str,
    member: str,
    about: list[str],
    stamp: str,
    reason: str,
    text: str,
    electronic: bool,
    attachment: str | None = None,
) -> dict[str, Any]:
    """One ``ecm-notice`` Communication (``reason``: an ``ecm-notice-reason`` code of
    ``ecm-referral-workflow``)."""
    body: dict[str, Any] = {
        "resourceType": "Communication",
        "meta": {"profile": [NOTICE_PROFILE]},
        "status": "completed",
        "category": [{"coding": [{"system": WORKFLOW, "code": "ecm-notice"}]}],
        "subject": _ref(member),
        "about": [_ref(a) for a in about],
        "sent": stamp,
        "recipient": [_ref(recipient)],
        "reasonCode": [{"coding": [{"system": WORKFLOW, "code": reason}]}],
        "payload": [{"contentString": text}],
    }
    if attachment is not None:
        body["payload"].append({"contentReference": _ref(attachment)})
    if electronic:
        body["medium"] = [{"coding": [{"system": MODE, "code": "ELECTRONIC"}]}]
    return body


__all__ = [
    "NOTICE_BUSINESS_DAYS",
    "REASSIGNMENT_DAYS",
    "assigned_episode",
    "care_team",
    "filler_order",
    "notice",
    "notice_due",
    "provider_task",
    "reassignment_due",
]
