"""Discontinuation of ECM (seed 003 VI.F; birth equity: seed 000).

A program rule of the write pipeline: when an ``ecm-enrollment`` EpisodeOfCare becomes
``finished`` (its ``discontinuation-reason`` required by ``ecmenr-1``, its end ``period.end``),
whoever writes it (the ECM provider telling the plan, VI.F.1, or the plan):

- **the reason** is one of VI.F.1.a–j (``ecm-discontinuation-reason``), or ``other`` with its
  text (422 ``EpisodeOfCare.extension`` without);
- **graduation** (VI.F.1.a) records the three criteria met, each a ``graduation-criterion``
  extension (``graduated-goals-met``, ``graduated-self-manages``, ``graduated-connected``); 422
  when one is missing;
- **birth equity** (seed 000: "would not be disenrolled from ECM simply because their pregnancy
  and/or postpartum period concludes … would only disenroll if they meet graduation
  criteria"): an enrollment under the birth equity Population of Focus is not ended for
  ``no-longer-meets-criteria`` (422). Nothing else ends an enrollment: ``$ecm-eligibility``
  writes nothing;
- **capacity is released**: the enrollment's active ``filler-order`` ServiceRequests (the
  assignment, ``basedOn`` its referral) become ``completed``;
- **the Notice of Action** (VI.F.2.b): a DocumentReference (type
  ``ecm-referral-workflow#notice-of-action``, the notice text with the member's appeal rights
  as a ``text/plain`` attachment) and an ``ecm-notice`` Communication to the member (reason
  ``ecm-discontinuation``) pointing to it; and one to the ECM provider (VI.F.2.a, electronic);
- **transfer to an alternative programme** (VI.F.1.j, its sub-codes): a Task for the ECM
  provider (code ``ecm-referral-workflow#care-transfer``) due 30 days after the end.

All in the unit of the enrollment's write.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from server.auth.principal import Principal
from server.ecm import intake
from server.ecm.assignment_facts import FILLER_ORDER, POF_EXT, POF_SYSTEM, body, codes, local, ref
from server.ecm.assignment_records import WORKFLOW, notice
from server.ecm.calendar import local_date
from server.errors import Unprocessable
from server.fhir.ids import new_id
from server.fhir.instant import format_instant
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import SearchQuery
from server.writes.rules import ALLOW, Change, Rule, Verdict, derive, refuse
from server.writes.write import Write

BASE = "http://calaim-fhir.org/fhir"
REASON_EXT = f"{BASE}/StructureDefinition/discontinuation-reason"
REASONS = f"{BASE}/CodeSystem/ecm-discontinuation-reason"
CRITERION_EXT = f"{BASE}/StructureDefinition/graduation-criterion"
CALAIM_PROGRAM = f"{BASE}/CodeSystem/calaim-program"
GRADUATION = ("graduated-goals-met", "graduated-self-manages", "graduated-connected")
TRANSFERS = frozenset(
    {
        "transitioned-to-other-program",
        "transitioned-hospice",
        "transitioned-palliative-care",
        "transitioned-dialysis",
        "transitioned-lower-level-care-management",
    }
)
#: VI.F.1.j.1 "transfer a Member's care needs within 30 days"
TRANSFER_DAYS = 30
APPEAL_RIGHTS = (
    "You have the right to appeal this decision. To ask for an appeal, contact your health "
    "plan within 60 days of the date of this notice (seed 003 VI.F.2.b; DHCS APL 21-011, "
    "Your Rights)."
)


def _extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension") or () if e.get("url") == url]


def _is_enrollment(resource: dict[str, Any] | None) -> bool:
    return bool(resource) and "ecm" in codes((resource or {}).get("type"), CALAIM_PROGRAM)


class EnrollmentDiscontinuation(Rule):
    """VI.F on every write that finishes an ECM enrollment (module docstring)."""

    name = "ecm-enrollment-discontinuation"
    types = frozenset({"EpisodeOfCare"})

    def __init__(self, search: SearchContext) -> None:
        self.search = search

    def check(self, change: Change) -> Verdict:
        next, previous = change.next, change.previous
        if next is None or next.get("status") != "finished" or not _is_enrollment(next):
            return ALLOW
        if previous is not None and previous.get("status") == "finished":
            return ALLOW
        reasons = _extensions(next, REASON_EXT)
        concept = reasons[0].get("valueCodeableConcept") if reasons else None
        found = sorted(codes([concept], REASONS))
        if not found:
            return ALLOW  # ecmenr-1 and the binding answer for a missing or foreign reason
        reason = found[0]
        where = f"{change.root or 'EpisodeOfCare'}.extension"
        if reason == "other" and not str((concept or {}).get("text") or "").strip():
            return self._refuse("the reason 'other' states its text (seed 003 VI.F.1)", where)
        if reason == "graduated":
            met = {
                code
                for e in _extensions(next, CRITERION_EXT)
                for code in codes([e.get("valueCodeableConcept")], REASONS)
            }
            missing = [c for c in GRADUATION if c not in met]
            if missing:
                return self._refuse(
                    "graduation records the three criteria of seed 003 VI.F.1.a.1-3 as "
                    f"graduation-criterion extensions; missing: {', '.join(missing)}",
                    where,
                )
        pofs = {
            code
            for e in _extensions(next, POF_EXT)
            for code in codes([e.get("valueCodeableConcept")], POF_SYSTEM)
        }
        if reason == "no-longer-meets-criteria" and any(p.startswith("birth-equity") for p in pofs):
            return self._refuse(
                "a member enrolled under the birth equity Population of Focus is not disenrolled "
                "because their pregnancy or postpartum period ended; they disenroll when they "
                "meet graduation criteria (seed 000, birth equity; seed 003 VI.F.1.a)",
                where,
            )
        return derive(*self._consequences(change, next, reason, concept))

    def _consequences(
        self, change: Change, episode: dict[str, Any], reason: str, concept: Any
    ) -> list[Write]:
        writes: list[Write] = []
        stamp = format_instant(intake.now())
        episode_ref = f"EpisodeOfCare/{change.id}"
        member = ref(episode.get("patient")) or ""
        provider = ref(episode.get("managingOrganization"))
        for referral in (ref(r) for r in episode.get("referralRequest") or ()):
            if referral is None or local(referral) is None:
                continue
            criteria = parse_criteria_string(
                "ServiceRequest",
                f"based-on={referral}&intent={FILLER_ORDER}&status=active",
                self.search,
            )
            for version in change.reader.search(SearchQuery(criteria, count=20)).items:
                order = body(version)
                if order is None:
                    continue
                # the plan that ordered it (its requester) completes it
                acting = Principal(
                    "calaim-fhir", allow_all=True, organization=ref(order.get("requester"))
                )
                writes.append(
                    Write("update", "ServiceRequest", id=version.id,
                          resource={**order, "status": "completed"}, principal=acting)
                )
        end = str((episode.get("period") or {}).get("end") or stamp)[:10]
        why = str((concept or {}).get("text") or _display(concept) or reason)
        said = (
            f"Your Enhanced Care Management services end on {end}. Reason: {why}. "
            f"{APPEAL_RIGHTS}"
        )
        document_id = new_id()
        writes.append(
            Write(
                "create",
                "DocumentReference",
                id=document_id,
                resource=_notice_of_action(document_id, member, episode_ref, stamp, said),
            )
        )
        document = f"DocumentReference/{document_id}"
        if member.startswith("Patient/"):
            writes.append(Write("create", "Communication", resource=notice(
                recipient=member, member=member, about=[episode_ref], stamp=stamp,
                reason="ecm-discontinuation", text=said, electronic=False, attachment=document,
            )))
        if provider is not None:
            writes.append(Write("create", "Communication", resource=notice(
                recipient=provider, member=member, about=[episode_ref], stamp=stamp,
                reason="ecm-discontinuation", electronic=True,
                text=f"ECM for {member} ends on {end} ({reason}); Notice of Action {document}.",
            )))
        if reason in TRANSFERS and provider is not None:
            day = local_date(end)
            if day is not None:
                writes.append(Write("create", "Task", resource=_transfer(
                    member, provider, episode_ref, stamp, (day + timedelta(TRANSFER_DAYS))
                    .isoformat(), why)))
        return writes

    @staticmethod
    def _refuse(why: str, where: str) -> Verdict:
        return refuse(Unprocessable(f"ECM discontinuation: {why}", expression=where))


def _display(concept: Any) -> str | None:
    for coding in (concept or {}).get("coding") or ():
        if coding.get("display"):
            return str(coding["display"])
    return None


def _notice_of_action(
    id: str, member: str, episode: str, stamp: str, text: str
) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": id,
        "status": "current",
        "type": {"coding": [{"system": WORKFLOW, "code": "notice-of-action"}],
                 "text": "Notice of Action: discontinuation of Enhanced Care Management"},
        "subject": {"reference": member},
        "date": stamp,
        "description": "Notice of Action (seed 003 VI.F.2.b)",
        "content": [{"attachment": {
            "contentType": "text/plain",
            "language": "en",
            "data": base64.b64encode(text.encode()).decode(),
            "title": "Notice of Action",
        }}],
        "context": {"related": [{"reference": episode}]},
    }


def _transfer(
    member: str, provider: str, episode: str, stamp: str, due: str, why: str
) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {"coding": [{"system": WORKFLOW, "code": "care-transfer"}]},
        "description": f"Transfer the member's care needs ({why}) within 30 days "
        "(seed 003 VI.F.1.j.1)",
        "focus": {"reference": episode},
        "for": {"reference": member},
        "authoredOn": stamp,
        "owner": {"reference": provider},
        "restriction": {"period": {"start": stamp, "end": due}},
    }


__all__ = ["EnrollmentDiscontinuation"]
