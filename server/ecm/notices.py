"""Notices to the member and the referrer (``ecm-notice`` Communications).

DHCS closed-loop referral duties (standards.md §2.2): the plan tells the **member** when a
service is authorized (with the assigned provider's name and contact) and the **referring
entity** when it is authorized and when the referral is closed; when it is not authorized,
the notice says why; the referrer is told **electronically** (fax does not qualify). Seed 003
VI.D.6.a.1 tells the member "via telephone, mail and/or Member portal".

A program rule: when an ECM or Community Supports referral Task's DHCS Referral Status
(``businessStatus``) becomes ``authorized``, ``not-authorized`` or ``closed``, the server writes,
in the same unit, one ``ecm-notice`` Communication to the member (``Task.for``) and one to the
referrer (``Task.requester``, medium ``ELECTRONIC``), each ``about`` the Task and its
ServiceRequest, ``sent`` now, with what it says as its payload: the provider assigned (the
enrollment's managing organisation, name and phone, when an ``ecm-enrollment`` EpisodeOfCare
names the referral), the reason (``statusReason``) when not authorized or closed.
``received`` is left for the recipient's system to set.
"""

from __future__ import annotations

from typing import Any

import orjson

from server.ecm.continuity import CONTINUITY_CODE
from server.ecm.intake import REFERRAL_STATUS, business_status, now
from server.ecm.referral_lifecycle import REFERRAL, _local, _read, _ref, machine_of
from server.fhir.instant import format_instant
from server.ports import Reader
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import SearchQuery
from server.writes.rules import ALLOW, Change, Rule, Verdict, derive
from server.writes.write import Write

WORKFLOW = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-workflow"
PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-notice"
MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
NOTICES = ("authorized", "not-authorized", "closed")
_SAYS = {
    "authorized": "The referral for {service} was authorized.",
    "not-authorized": "The referral for {service} was not authorized.",
    "closed": "The referral for {service} was closed.",
}


def _body(reader: Reader, ref: str | None) -> dict[str, Any] | None:
    local = _local(ref)
    return None if local is None else _read(reader, local)


class ReferralNotices(Rule):
    """The notices of a referral's authorization, denial and closure (module docstring)."""

    name = "ecm-referral-notices"
    types = frozenset({"Task"})

    def __init__(self, search: SearchContext) -> None:
        self.search = search

    def check(self, change: Change) -> Verdict:
        next = change.next
        if next is None or machine_of(next) is not REFERRAL:
            return ALLOW
        status = business_status(next)
        if status not in NOTICES or status == business_status(change.previous):
            return ALLOW
        focus = _ref(next.get("focus"))
        request = _body(change.reader, focus)
        if request is None or "ServiceRequest/" not in (focus or ""):
            return ALLOW
        text = self._text(change.reader, status, next, request, focus or "")
        member, referrer = _ref(next.get("for")), _ref(next.get("requester"))
        notices = []
        sent = format_instant(now())
        for recipient, medium in ((member, None), (referrer, "ELECTRONIC")):
            if recipient is None:
                continue
            notice: dict[str, Any] = {
                "resourceType": "Communication",
                "meta": {"profile": [PROFILE]},
                "status": "completed",
                "category": [{"coding": [{"system": WORKFLOW, "code": "ecm-notice"}]}],
                "subject": {"reference": member} if member else None,
                "about": [{"reference": f"Task/{change.id}"}, {"reference": focus}],
                "sent": sent,
                "recipient": [{"reference": recipient}],
                "reasonCode": [{"coding": [{"system": REFERRAL_STATUS, "code": status}]}],
                "payload": [{"contentString": text}],
            }
            if notice["subject"] is None or not str(member).startswith("Patient/"):
                notice.pop("subject")
            if medium is not None:
                notice["medium"] = [{"coding": [{"system": MODE, "code": medium}]}]
            notices.append(Write("create", "Communication", resource=notice))
        return derive(*notices)

    def _text(
        self,
        reader: Reader,
        status: str,
        task: dict[str, Any],
        request: dict[str, Any],
        focus: str,
    ) -> str:
        service = ((request.get("code") or {}).get("text")) or "the requested service"
        parts = [_SAYS[status].format(service=service)]
        if status == "authorized":
            provider = self._provider(reader, focus) or self._kept(reader, task)
            parts.append(
                f"Assigned provider: {provider}." if provider else "The provider will be "
                "named once the member is assigned."
            )
        else:
            reason = (task.get("statusReason") or {}).get("text")
            if reason:
                parts.append(f"Reason: {reason}")
        return " ".join(parts)

    def _provider(self, reader: Reader, focus: str) -> str | None:
        """The managing organisation (name and phone) of an enrollment naming the referral."""
        criteria = parse_criteria_string("EpisodeOfCare", f"incoming-referral={focus}", self.search)
        for version in reader.search(SearchQuery(criteria, count=5)).items:
            episode = orjson.loads(version.body) if version.body is not None else {}
            found = _named(reader, _ref(episode.get("managingOrganization")))
            if found is not None:
                return found
        return None

    @staticmethod
    def _kept(reader: Reader, task: dict[str, Any]) -> str | None:
        """The existing provider a continuity-of-care authorization the Task names keeps
        (its ``requestor``, seed 003 VI.G.3.c)."""
        for output in task.get("output") or ():
            codes = (output.get("type") or {}).get("coding") or ()
            if not any((c.get("system"), c.get("code")) == (WORKFLOW, CONTINUITY_CODE)
                       for c in codes):
                continue
            authorization = _body(reader, _ref(output.get("valueReference"))) or {}
            found = _named(reader, _ref(authorization.get("requestor")))
            if found is not None:
                return found
        return None


def _named(reader: Reader, ref: str | None) -> str | None:
    """An organisation's name and phone (None: not stored here)."""
    org = _body(reader, ref)
    if org is None:
        return None
    phones = [t.get("value") for t in org.get("telecom") or () if t.get("system") == "phone"]
    name = org.get("name") or ref
    return f"{name}, {phones[0]}" if phones else str(name)


__all__ = ["ReferralNotices"]
