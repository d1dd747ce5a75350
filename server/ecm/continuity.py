"""Continuity of care: members who join the plan with ECM are authorized automatically.

Seed 003 VI.G.3: "Members transitioning to Partnership from another managed care plan and /or
fee-for-service Medi-Cal who are currently enrolled in ECM, shall automatically be authorized
for ECM services", identified from "available utilization data ... in receipt of ECM within
the previous 6 months of their assignment to Partnership" (VI.G.3.a) or on the member's own
request (VI.G.3.b, a referral); the existing ECM provider is kept "if ... part of
Partnership's ECM network or agrees to a letter of agreement" (VI.G.3.c); "ECM services shall be
authorized for up to six (6) months. At which time, the Member shall be reassessed" (VI.G.3.e).

A program rule of the write pipeline (decision 0020), checked

- when a **Coverage** with a plan starts for a member (created active, or its payor, start or
  status changes to an active one) — the plan is the Coverage's payor Organization, the plan
  start its ``period.start``; and
- at each **referral intake** (an ECM referral Task taken in as ``received``, not a duplicate),
  for each of the member's active Coverages.

The member *joined* the plan when no other Coverage of the member with the same payor covers the
day before the plan start. The **evidence** of ECM in the 6 months before the plan start
(``[start - 6 months, start - 1 day]``): an ``ecm-enrollment`` EpisodeOfCare of the member that
began before the plan start and had not ended before the window (the member was not the
plan's then, so it was another plan's or fee-for-service), or a Claim / ExplanationOfBenefit
line with HCPCS G9008 or G9012 (ECM, standards.md §2.4) served in the window.

The authorization is the plan's **preauthorization ClaimResponse** (profile
``ecm-continuity-authorization``: ``use`` = ``preauthorization``, ``outcome`` = ``complete``,
``insurer`` the plan, ``preAuthPeriod`` [plan start, plan start + N months - 1 day] with N the
plan's ``continuityAuthorizationMonths``, default 6 and never more), citing its evidence in the
``continuity-of-care`` extension and ``disposition``. The existing provider — the most recent
evidence's managing organisation or billing provider — is kept (``requestor``) when it is in
the plan's ECM network on the plan start, as ``$ecm-assign`` reads the network (``network.py``):
it provides an active ECM HealthcareService (``in-network``), or only one under a
``letter-of-agreement`` whose period holds the plan start (``letter-of-agreement``: the day the
authorization begins; a letter agreed later is for ``$ecm-assign`` to apply on its own date).
Otherwise it is named as the prior provider and an in-network provider is assigned (VI.G.2.b).
The enrollment with the provider's lead care manager is then an ordinary ``ecm-enrollment``
whose ``ecm-tar`` is this ClaimResponse (``authorization.py``: in force over its period,
authorization date its ``created``). A **reassessment Task** (code
``ecm-referral-workflow#ecm-reassessment``, owner the plan, focus the authorization) is due
(``restriction.period.end``, searchable with ``due``) on the authorization's last day. A
referral that triggered it is ``accepted`` and ``authorized`` by the plan (its notices follow,
``notices.py``), its output naming the authorization; an authorization already recorded for
the same plan start is not repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, timedelta
from threading import Lock
from typing import Any
from urllib.parse import quote
from weakref import WeakKeyDictionary

from server.auth.principal import Principal
from server.ecm import intake
from server.ecm.calendar import add_months, local_date
from server.ecm.intake import RECEIVED, REFERRAL_STATUS, WORKFLOW, business_status
from server.ecm.network import SERVICES, standing
from server.ecm.referral_lifecycle import REFERRAL, _body, _local, _ref, machine_of
from server.ecm.workflow_config import MAX_CONTINUITY_MONTHS, WorkflowConfig, WorkflowPlans
from server.errors import Unprocessable
from server.fhir.ids import new_id
from server.fhir.instant import format_instant
from server.ports import Reader, Version
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import Criteria, PerTypeClause, SearchQuery
from server.writes.rules import ALLOW, Change, Rule, Verdict, derive, refuse
from server.writes.write import Write

PROGRAM = "http://calaim-fhir.org/fhir/CodeSystem/calaim-program"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
#: ECM's HCPCS codes (standards.md §2.4: "G9008 and G9012 with modifiers U1, U2, U8").
ECM_CODES = frozenset({"G9008", "G9012"})
PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-continuity-authorization"
CONTINUITY = "http://calaim-fhir.org/fhir/StructureDefinition/continuity-of-care"
CONTINUITY_CODE = "continuity-of-care"
#: VI.G.3.a "in receipt of ECM within the previous 6 months of their assignment".
WINDOW_MONTHS = 6
CLAUSE = "seed 003 VI.G.3"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
#: statuses of records that never happened
_VOID = frozenset({"entered-in-error", "cancelled"})
#: statuses of an enrollment in which the member received ECM
_RECEIVED_ECM = frozenset({"active", "onhold", "finished"})
#: the types whose records are evidence (``_EVIDENCE`` reads them)
_EVIDENCE_TYPES = frozenset({"Claim", "EpisodeOfCare", "ExplanationOfBenefit"})


def _q(text: str) -> str:
    return quote(text, safe=":/")


@dataclass(frozen=True, slots=True)
class Evidence:
    """ECM the member received before joining: ``reference`` (the record), ``last`` (the last
    day of ECM it shows, within the window), ``provider`` (who delivered it) and ``says``."""

    reference: str
    last: date
    provider: str | None
    says: str


def window(plan_start: date) -> tuple[date, date]:
    """The 6 months before the plan start (VI.G.3.a), both ends inclusive."""
    return add_months(plan_start, -WINDOW_MONTHS), plan_start - timedelta(days=1)


def authorized_until(plan_start: date, months: int) -> date:
    """The last day of an authorization of ``months`` months from the plan start."""
    return add_months(plan_start, months) - timedelta(days=1)


def enrollment_evidence(ref: str, episode: dict[str, Any], plan_start: date) -> Evidence | None:
    """An ECM enrollment that began before the plan start and reached into the window."""
    if episode.get("status") not in _RECEIVED_ECM or not _is_ecm(episode):
        return None
    period = episode.get("period") or {}
    start, end = local_date(period.get("start")), local_date(period.get("end"))
    first, last = window(plan_start)
    if start is None or start > last or (end is not None and end < first):
        return None
    until = last if end is None or end > last else end
    ended = f"until {end.isoformat()}" if end is not None else "ongoing"
    return Evidence(
        ref,
        until,
        _ref(episode.get("managingOrganization")),
        f"{ref} (ECM enrollment from {start.isoformat()}, {ended})",
    )


def claim_evidence(ref: str, claim: dict[str, Any], plan_start: date) -> Evidence | None:
    """A claim line for ECM (HCPCS G9008 / G9012) served in the window."""
    if claim.get("status") in _VOID:
        return None
    first, last = window(plan_start)
    billed = (claim.get("billablePeriod") or {}).get("start")
    days: list[tuple[date, str]] = []
    for item in claim.get("item") or ():
        if not isinstance(item, dict):
            continue
        codes = [
            str(c.get("code"))
            for c in (item.get("productOrService") or {}).get("coding") or ()
            if isinstance(c, dict) and c.get("system") == HCPCS and c.get("code") in ECM_CODES
        ]
        served = local_date(
            item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start") or billed
        )
        if codes and served is not None and first <= served <= last:
            days.append((served, codes[0]))
    if not days:
        return None
    day, code = max(days)
    return Evidence(ref, day, _ref(claim.get("provider")), f"{ref} (ECM {code} served {day})")


def _is_ecm(episode: dict[str, Any]) -> bool:
    return any(
        c.get("system") == PROGRAM and c.get("code") == "ecm"
        for t in episode.get("type") or ()
        for c in (t or {}).get("coding") or ()
        if isinstance(c, dict)
    )


def _continuity(resource: dict[str, Any]) -> dict[str, Any] | None:
    for e in resource.get("extension") or ():
        if isinstance(e, dict) and e.get("url") == CONTINUITY:
            return e
    return None


def prior_provider(evidence: Iterable[Evidence]) -> str | None:
    """The existing ECM provider: that of the most recent evidence naming one."""
    return next((e.provider for e in evidence if e.provider is not None), None)


def authorization(
    *,
    member: str,
    plan: str,
    plan_start: date,
    evidence: list[Evidence],
    config: WorkflowConfig,
    created: str,
    basis: str | None,
) -> dict[str, Any]:
    """The plan's automatic ECM authorization (the ``ecm-continuity-authorization``
    ClaimResponse) for ``evidence``, the most recent first; ``basis``: how the existing provider
    is in the network on the plan start (``network.standing``), None: it is not."""
    months = config.continuity_authorization_months
    end = authorized_until(plan_start, months)
    prior = prior_provider(evidence)
    parts: list[dict[str, Any]] = [
        {"url": "evidence", "valueReference": {"reference": e.reference}} for e in evidence
    ]
    if prior is not None:
        parts.append({"url": "priorProvider", "valueReference": {"reference": prior}})
    if basis is not None:
        parts.append({"url": "providerBasis", "valueCode": basis})
    first, last = window(plan_start)
    provider = (
        f"the existing ECM provider {prior} is kept ({basis.replace('-', ' ')}, VI.G.3.c)"
        if basis is not None
        else (
            f"the existing ECM provider {prior} provides no contracted ECM service and none "
            f"under a letter of agreement in force on {plan_start}: an in-network provider is "
            "to be assigned (VI.G.2.b, VI.G.3.c)"
            if prior is not None
            else "no existing ECM provider is known: an in-network provider is to be assigned"
        )
    )
    body: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "meta": {"profile": [PROFILE]},
        "extension": [{"url": CONTINUITY, "extension": parts}],
        "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]},
        "use": "preauthorization",
        "patient": {"reference": member},
        "created": created,
        "insurer": {"reference": plan},
        "outcome": "complete",
        "disposition": (
            f"Continuity of care ({CLAUSE}): ECM received between {first} and {last}, the 6 "
            f"months before the member's plan start {plan_start} (VI.G.3.a): "
            + "; ".join(e.says for e in evidence)
            + f". Authorized automatically {plan_start} to {end} ({months} months, "
            f"{config.source}; up to six months, VI.G.3.e); {provider}."
        ),
        "preAuthPeriod": {"start": plan_start.isoformat(), "end": end.isoformat()},
    }
    if basis is not None and prior is not None:
        body["requestor"] = {"reference": prior}
    return body


def reassessment(
    *, member: str, plan: str, authorization_ref: str, period: dict[str, str], created: str
) -> dict[str, Any]:
    """The Task flagging the reassessment due on the authorization's last day (VI.G.3.e)."""
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "priority": "routine",
        "code": {"coding": [{"system": WORKFLOW, "code": "ecm-reassessment"}]},
        "description": (
            "Reassess the member for ECM before the continuity-of-care authorization ends "
            f"{period['end']} (seed 003 VI.G.3.e; criteria VI.A, VI.B, VI.F)"
        ),
        "focus": {"reference": authorization_ref},
        "for": {"reference": member},
        "authoredOn": created,
        "requester": {"reference": plan},
        "owner": {"reference": plan},
        "restriction": {"period": {"start": period["start"], "end": period["end"]}},
    }


@dataclass(frozen=True, slots=True)
class Found:
    """The continuity authorization of a member's plan start: ``id`` (stored or to create) and
    the writes that record it (none when it is already stored)."""

    id: str
    writes: tuple[Write, ...]


class ContinuityOfCare(Rule):
    """The continuity-of-care rule (module docstring)."""

    name = "ecm-continuity-of-care"
    # the evidence types too: a unit's write of one makes what the unit read of them stale
    types = frozenset({"Coverage", "Task", "ClaimResponse", *_EVIDENCE_TYPES})

    def __init__(self, search: SearchContext, plans: WorkflowPlans) -> None:
        self.search = search
        self.plans = plans
        # the evidence search of a member, parsed once, and its answer kept for the rest of the
        # unit that read it (until the unit writes evidence): a transaction checks the member's
        # Coverage and then the referral Task
        self._criteria: dict[str, Criteria] = {}
        self._read: WeakKeyDictionary[Reader, dict[str, list[Version]]] = WeakKeyDictionary()
        self._lock = Lock()

    def check(self, change: Change) -> Verdict:
        next = change.next
        if next is None:
            if change.type in _EVIDENCE_TYPES:  # a deletion of evidence
                self._forget(change.reader)
            return ALLOW
        if change.type == "Coverage":
            return self._coverage(change, next)
        if change.type == "Task":
            return self._intake(change, next)
        if change.type in _EVIDENCE_TYPES:
            self._forget(change.reader)
            return ALLOW
        return self._limited(change, next)

    # -- triggers ------------------------------------------------------------------------------

    def _coverage(self, change: Change, coverage: dict[str, Any]) -> Verdict:
        previous = change.previous
        if coverage.get("status") != "active":
            return ALLOW
        if previous is not None and previous.get("status") == "active" and all(
            previous.get(k) == coverage.get(k) for k in ("payor", "period", "beneficiary")
        ):
            return ALLOW  # nothing about the plan's start changed
        writes: list[Write] = []
        records: dict[str, list[Version]] = {}
        for plan, start, member in _starts(coverage):
            if member not in records:
                records[member] = self._records(change.reader, member)
            found = self._authorize(change, member, plan, start, change.id, records[member])
            if found is not None:
                writes += found.writes
        return derive(*writes) if writes else ALLOW

    def _intake(self, change: Change, task: dict[str, Any]) -> Verdict:
        previous = change.previous
        if machine_of(task) is not REFERRAL or task.get("status") != "requested":
            return ALLOW
        if previous is not None and previous.get("status") not in (None, "draft"):
            return ALLOW
        if business_status(task) != RECEIVED:  # a duplicate, or not the intake's
            return ALLOW
        local = _local(_ref(task.get("focus")))
        if local is None or local[0] != "ServiceRequest":
            return ALLOW
        request = _body(change.reader.read(*local))
        if request is None or not any(
            c.get("system") == PROGRAM and c.get("code") == "ecm"
            for cat in request.get("category") or ()
            for c in (cat or {}).get("coding") or ()
            if isinstance(c, dict)
        ):
            return ALLOW
        member = _ref(task.get("for"))
        if member is None or _local(member) is None:
            return ALLOW
        records = self._records(change.reader, member)
        if not records:  # most members: no ECM history, and their Coverages are not read
            return ALLOW
        criteria = parse_criteria_string(
            "Coverage", f"beneficiary={_q(member)}&status=active", self.search
        )
        for version in change.reader.search(SearchQuery(criteria, count=20)).items:
            coverage = _body(version) or {}
            for plan, start, _ in _starts(coverage):
                found = self._authorize(change, member, plan, start, version.id, records)
                if found is None:
                    continue
                authorized = {
                    **task,
                    "id": change.id,
                    "status": "accepted",
                    "businessStatus": {
                        "coding": [{"system": REFERRAL_STATUS, "code": "authorized"}]
                    },
                    "output": [
                        *(task.get("output") or ()),
                        {
                            "type": {"coding": [{"system": WORKFLOW, "code": CONTINUITY_CODE}]},
                            "valueReference": {"reference": f"ClaimResponse/{found.id}"},
                        },
                    ],
                }
                acting = Principal(
                    "calaim-fhir", allow_all=True, organization=_ref(task.get("owner")) or plan
                )
                update = Write("update", "Task", id=change.id, resource=authorized,
                               principal=acting)
                return derive(*found.writes, update)
        return ALLOW

    def _limited(self, change: Change, claim: dict[str, Any]) -> Verdict:
        """A continuity authorization lasts up to six months (VI.G.3.e), whoever records it."""
        if _continuity(claim) is None:
            return ALLOW
        period = claim.get("preAuthPeriod") or {}
        start, end = local_date(period.get("start")), local_date(period.get("end"))
        if start is None or end is None or end <= authorized_until(start, MAX_CONTINUITY_MONTHS):
            return ALLOW  # the profile requires both ends
        return refuse(
            Unprocessable(
                f"Continuity of care: ECM is authorized for up to six months ({CLAUSE}.e): "
                f"{start} to {end} is longer (at most to "
                f"{authorized_until(start, MAX_CONTINUITY_MONTHS)})",
                expression=f"{change.root}.preAuthPeriod.end",
            )
        )

    # -- the check ------------------------------------------------------------------------------

    def _authorize(
        self,
        change: Change,
        member: str,
        plan: str,
        start: date,
        coverage_id: str,
        records: list[Version],
    ) -> Found | None:
        """``records``: the member's ``_records``, read first (most members have none, and
        then nothing else is read)."""
        reader = change.reader
        evidence = sorted(_evidence(records, start), key=lambda e: e.last, reverse=True)
        if not evidence or not self._joined(reader, member, plan, start, coverage_id):
            return None
        stored = self._stored(change, member, plan, start)
        if stored is not None:
            return Found(stored, ())
        config = self.plans.select([plan])
        created = format_instant(intake.now())  # the workflow's clock
        prior = prior_provider(evidence)
        body = authorization(
            member=member, plan=plan, plan_start=start, evidence=evidence, config=config,
            created=created,
            basis=None if prior is None else self._standing(reader, prior, start),
        )
        id = new_id()
        task = reassessment(
            member=member,
            plan=plan,
            authorization_ref=f"ClaimResponse/{id}",
            period=body["preAuthPeriod"],
            created=created,
        )
        acting = Principal("calaim-fhir", allow_all=True, organization=plan)
        return Found(
            id,
            (
                Write("create", "ClaimResponse", id=id, resource=body, principal=acting),
                Write("create", "Task", resource=task, principal=acting),
            ),
        )

    def _standing(self, reader: Reader, provider: str, start: date) -> str | None:
        """How the existing provider is in the network on the plan start (VI.G.3.c), by its
        ECM HealthcareServices (``network.py``, as ``$ecm-assign`` reads them)."""
        if _local(provider) is None:
            return None
        criteria = parse_criteria_string(
            "HealthcareService", f"organization={_q(provider)}&{SERVICES}", self.search
        )
        services = (
            body
            for version in reader.search(SearchQuery(criteria, count=100)).items
            if (body := _body(version)) is not None
        )
        return standing(services, provider, start)

    def _joined(self, reader: Reader, member: str, plan: str, start: date, coverage_id: str
                ) -> bool:
        """No other Coverage of the member with this plan covers the day before its start."""
        before = start - timedelta(days=1)
        criteria = parse_criteria_string("Coverage", f"beneficiary={_q(member)}", self.search)
        for version in reader.search(SearchQuery(criteria, count=100)).items:
            other = _body(version)
            if version.id == coverage_id or other is None or other.get("status") in _VOID:
                continue
            if plan not in (_ref(p) for p in other.get("payor") or ()):
                continue
            period = other.get("period") or {}
            begin, end = local_date(period.get("start")), local_date(period.get("end"))
            if (begin is None or begin <= before) and (end is None or end >= before):
                return False
        return True

    def _stored(self, change: Change, member: str, plan: str, start: date) -> str | None:
        """The continuity authorization already recorded for this plan start, found under the
        unit's locked criteria (two writes at once record one)."""
        criteria = parse_criteria_string(
            "ClaimResponse", f"patient={_q(member)}&use=preauthorization", self.search
        )
        match: Callable[..., list[Version]] | None = getattr(change.reader, "match", None)
        found = (
            match(criteria, None)
            if match is not None
            else change.reader.search(SearchQuery(criteria, count=100)).items
        )
        for version in found:
            body = _body(version) or {}
            if (
                _continuity(body) is not None
                and _ref(body.get("insurer")) == plan
                and local_date((body.get("preAuthPeriod") or {}).get("start")) == start
                and body.get("status") not in _VOID
            ):
                return version.id
        return None

    def _forget(self, reader: Reader) -> None:
        """The unit writes evidence: what it read of the evidence is stale."""
        with self._lock, suppress(TypeError):
            self._read.pop(reader, None)

    def _records(self, reader: Reader, member: str) -> list[Version]:
        """The member's ECM enrollments and claims, read in one search of the three types
        (most members have none: one query answers), for ``_evidence`` to judge per plan
        start. Kept for the unit (``reader``) until it writes a record of the three types."""
        with self._lock:
            kept = None
            with suppress(TypeError):  # a reader that cannot be weakly kept is not kept
                kept = self._read.get(reader)
            if kept is not None and member in kept:
                return kept[member]
            criteria = self._criteria.get(member)
        if criteria is None:
            criteria = self._evidence_criteria(member)
            with self._lock:
                if len(self._criteria) >= _CRITERIA_KEPT:
                    self._criteria.clear()
                self._criteria[member] = criteria
        records = reader.search(SearchQuery(criteria, count=600)).items
        with self._lock, suppress(TypeError):
            self._read.setdefault(reader, {})[member] = records
        return records

    def _evidence_criteria(self, member: str) -> Criteria:
        """``_type=Claim,EpisodeOfCare,ExplanationOfBenefit&patient=<member>``, the
        EpisodeOfCare only of type ``ecm``."""
        patient = f"patient={_q(member)}"
        claims = parse_criteria_string("Claim", patient, self.search)
        episodes = parse_criteria_string(
            "EpisodeOfCare", f"{patient}&type={_q(PROGRAM + '|ecm')}", self.search
        )
        ecm = tuple(
            PerTypeClause("EpisodeOfCare", c) for c in episodes.clauses if c not in claims.clauses
        )
        return Criteria(
            None, tuple(sorted({*claims.params, *episodes.params})),
            (*claims.clauses, *ecm), tuple(sorted(_EVIDENCE)),
        )


_EVIDENCE: dict[str, Callable[[str, dict[str, Any], date], Evidence | None]] = {
    "EpisodeOfCare": enrollment_evidence,
    "Claim": claim_evidence,
    "ExplanationOfBenefit": claim_evidence,
}
_CRITERIA_KEPT = 1024  # members whose evidence criteria are kept parsed


def _evidence(records: Iterable[Version], start: date) -> Iterable[Evidence]:
    """The evidence among a member's ``records`` for a plan start (VI.G.3.a's window)."""
    for version in records:
        body = _body(version)
        if body is None:
            continue
        found = _EVIDENCE[version.type](f"{version.type}/{version.id}", body, start)
        if found is not None:
            yield found


def _starts(coverage: dict[str, Any]) -> list[tuple[str, date, str]]:
    """(plan, plan start, member) of an active Coverage: each payor Organization."""
    member = _ref(coverage.get("beneficiary"))
    start = local_date((coverage.get("period") or {}).get("start"))
    if member is None or _local(member) is None or start is None:
        return []
    return [
        (plan, start, member)
        for plan in (_ref(p) for p in coverage.get("payor") or ())
        if plan is not None and plan.startswith("Organization/") and _local(plan) is not None
    ]


__all__ = [
    "ContinuityOfCare",
    "Evidence",
    "authorization",
    "authorized_until",
    "claim_evidence",
    "enrollment_evidence",
    "prior_provider",
    "reassessment",
    "window",
]
