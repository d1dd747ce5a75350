"""The choice of a member's ECM provider (seed 003 VI.E.1–2, VI.G.3.c), explained.

Pure policy: the facts (``Member``, ``Service``) are read elsewhere
(``server/ecm/assignment_facts.py``); this module decides and says why.

**Hard filters** (VI.E.1) — a service failing one is listed, never chosen:

- ``pof-experience`` (VI.E.1.a "experienced in serving the ECM Population(s) of Focus"): the
  service names every authorized Population of Focus of the member;
- ``capacity`` (VI.E.1.d "the capacity to provide … timely … care management"): open capacity
  left (``Service.open`` > 0);
- ``network`` (VI.E.2 "their approved ECM provider", VI.G.3.c): a contracted service, or one
  under a letter of agreement in force for a transitioning member whose existing provider it is.

**Rules** in the seed's words, each giving way to the member's stated preference (VI.E.2.a–c
"unless the Member has expressed a different preference"):

1. ``member-preference`` — the provider the member (or family) asked for (input ``preference``);
   failing a hard filter, a person decides (``needsReview``): the preference is not dropped
   silently;
2. ``referral-preference`` — the provider named by the referrer (``ServiceRequest.performer``);
3. ``existing-provider`` — the existing ECM provider of a transitioning member (VI.G.3.c);
4. ``pcp`` (VI.E.2.a), ``behavioral-health`` (VI.E.2.b), ``ccs-case-manager`` (VI.E.2.c, the
   case manager becoming the Lead Care Manager) — the seeds do not rank them: several providers
   under these rules go to a person unless the plan configured an order
   (``assignmentRuleOrder``);
5. ``language`` — a known preference (VI.E.2 "known preferences"): among the candidates left,
   those speaking the member's language;
6. one candidate left: ``single-candidate``; several: the plan's tie-breaker
   (``assignmentTieBreaker``: ``most-open-capacity``), else a person decides — the seeds give
   no tie-breaker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from server.ecm.network import Agreement

RULE_SYSTEM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-assignment-rule"

#: the hard filters and the clause each one applies
FILTERS = {
    "pof-experience": "seed 003 VI.E.1.a",
    "capacity": "seed 003 VI.E.1.d",
    "network": "seed 003 VI.E.2, VI.G.3.c",
}
#: the rules that choose, with their clauses
RULES = {
    "member-preference": "seed 003 VI.E.2, VI.E.2.a-c",
    "referral-preference": "seed 003 VI.E.2",
    "existing-provider": "seed 003 VI.G.3.c",
    "pcp": "seed 003 VI.E.2.a",
    "behavioral-health": "seed 003 VI.E.2.b",
    "ccs-case-manager": "seed 003 VI.E.2.c",
    "language": "seed 003 VI.E.2 (known preferences)",
    "single-candidate": "seed 003 VI.E.1",
    "most-open-capacity": "plan configuration assignmentTieBreaker",
}
#: the rules the seeds do not rank against each other
UNRANKED = ("pcp", "behavioral-health", "ccs-case-manager")
TIE_BREAKERS = frozenset({"most-open-capacity"})


@dataclass(frozen=True, slots=True)
class Service:
    """A contracted ECM provider's ``ecm-provider-service`` HealthcareService."""

    ref: str  # HealthcareService/id
    provider: str  # Organization/id (providedBy)
    name: str
    pofs: frozenset[str]
    languages: frozenset[str]
    limit: int  # panelSize, else openSlots as of asOf
    in_use: int  # active enrollments and pending assignments counted against the limit
    letter_of_agreement: tuple[date | None, date | None] | None = None  # its period
    ccs_case_managers: tuple[str, ...] = ()  # the provider's ccs-case-manager roles (WCM)
    #: whether ``in_use`` was counted (a service failing another filter is not counted)
    counted: bool = True

    @property
    def open(self) -> int:
        return max(self.limit - self.in_use, 0)


@dataclass(frozen=True, slots=True)
class Member:
    """What the policy needs to know about the member, as recorded (docs/ecm-workflow.md)."""

    pofs: frozenset[str]  # authorized Populations of Focus
    pcp: frozenset[str] = frozenset()  # Organization refs
    behavioral_health: frozenset[str] = frozenset()  # Organization refs (SMHS, DMC-ODS, DMC)
    whole_child_model: bool = False
    existing_provider: str | None = None  # a transitioning member's previous ECM provider
    preference: str | None = None  # the member's (input parameter)
    referral_preference: str | None = None  # the referrer's (ServiceRequest.performer)
    language: str | None = None  # BCP-47 primary tag
    exclude: frozenset[str] = frozenset()  # providers not to choose (reassignment: current)


@dataclass(frozen=True, slots=True)
class AssignmentConfig:
    """The plan's choices where the seeds are silent (default: a person decides)."""

    rule_order: tuple[str, ...] = ()
    tie_breaker: str | None = None


@dataclass(slots=True)
class Candidate:
    service: Service
    failed: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def eligible(self) -> bool:
        return not self.failed

    @property
    def explanation(self) -> str:
        """In words; compact for a candidate failing a hard filter (a preview lists every ECM
        service: most fail one): the filters and why, the clauses being in ``FILTERS``."""
        if self.failed:
            return _failing(self.failed, self.notes)
        service = self.service
        parts = [f"{service.name} ({service.provider})", f"eligible, {service.open} open"]
        if self.rules:
            parts.append("meets " + ", ".join(f"{r} ({RULES[r]})" for r in self.rules))
        parts += self.notes
        return "; ".join(parts)


@lru_cache(maxsize=1024)
def _failing(failed: tuple[str, ...], notes: tuple[str, ...]) -> str:
    """The explanation of a candidate failing ``failed`` (shared: most fail alike)."""
    return "; ".join(["fails " + ", ".join(failed), *notes])


@dataclass(frozen=True, slots=True)
class Assignment:
    """The outcome: a chosen service (with its rule) or a person to decide (``needs_review``)."""

    chosen: Candidate | None
    rule: str | None
    needs_review: bool
    explanation: str
    candidates: tuple[Candidate, ...]
    lead_care_manager: str | None = None


def _experienced(member: Member, service: Service) -> bool:
    """``pof-experience``: the service names every authorized Population of Focus."""
    return bool(member.pofs) and member.pofs <= service.pofs


def _out_of_network(member: Member, service: Service, as_of: date) -> str | None:
    """``network``: why the service is not in the member's network (None: it is)."""
    loa = service.letter_of_agreement
    if loa is None:
        return None
    in_force = Agreement(service.provider, loa).in_force(as_of)
    if member.existing_provider == service.provider and in_force:
        return None
    if in_force:
        return "letter of agreement only for its transitioning members"
    return "letter of agreement not in force"


def _filter(member: Member, service: Service, as_of: date) -> Candidate:
    failed: list[str] = []
    notes: list[str] = []
    if not _experienced(member, service):
        missing = sorted(member.pofs - service.pofs) or ["(none authorized)"]
        failed.append("pof-experience")
        notes.append("not experienced in " + ", ".join(missing))
    if not service.counted:
        notes.append("capacity not counted")
    elif service.open <= 0:
        failed.append("capacity")
        notes.append(f"capacity {service.limit}, {service.in_use} in use")
    why = _out_of_network(member, service, as_of)
    if why is not None:
        failed.append("network")
        notes.append(why)
    return Candidate(service, tuple(failed), (), tuple(notes))


_Shape = tuple[frozenset[str], bool, int, int, object, bool]


def _filtered(
    member: Member, service: Service, as_of: date, seen: dict[_Shape, Candidate]
) -> Candidate:
    """``_filter``, its filters and notes shared by the services of one shape (what the
    filters read: Populations of Focus, capacity, agreement, whether it is the member's
    existing provider): a preview filters every ECM service, most alike."""
    shape: _Shape = (
        service.pofs,
        service.counted,
        service.limit,
        service.in_use,
        service.letter_of_agreement,
        service.provider == member.existing_provider,
    )
    known = seen.get(shape)
    if known is None:
        known = seen[shape] = _filter(member, service, as_of)
        return known
    return Candidate(service, known.failed, (), known.notes)


def prefilter(member: Member, service: Service, as_of: date) -> bool:
    """Whether ``service`` passes every hard filter but capacity (worth counting its use)."""
    return (
        service.provider not in member.exclude
        and _experienced(member, service)
        and _out_of_network(member, service, as_of) is None
    )


def _rules(member: Member, service: Service) -> tuple[str, ...]:
    """The rules ``service`` meets for ``member``, in the order of ``RULES`` (run for every
    service)."""
    provider = service.provider
    rules = []
    if provider == member.preference:
        rules.append("member-preference")
    if provider == member.referral_preference:
        rules.append("referral-preference")
    if provider == member.existing_provider:
        rules.append("existing-provider")
    if provider in member.pcp:
        rules.append("pcp")
    if provider in member.behavioral_health:
        rules.append("behavioral-health")
    if member.whole_child_model and service.ccs_case_managers:
        rules.append("ccs-case-manager")
    if member.language is not None and member.language in service.languages:
        rules.append("language")
    return tuple(rules)


def _names(candidates: Iterable[Candidate]) -> str:
    return ", ".join(sorted({c.service.provider for c in candidates}))


def _lead(
    candidate: Candidate, rule: str, lead_roles: Callable[[str], Sequence[str]]
) -> tuple[str | None, str]:
    service = candidate.service
    if rule == "ccs-case-manager" or (
        "ccs-case-manager" in candidate.rules and len(service.ccs_case_managers) == 1
    ):
        if len(service.ccs_case_managers) == 1:
            return service.ccs_case_managers[0], (
                "the member's CCS case manager becomes the Lead Care Manager (VI.E.2.c)"
            )
    leads = lead_roles(service.provider)
    if len(leads) == 1:
        return leads[0], "the provider's one Lead Care Manager"
    if leads:
        return None, (
            f"the provider has {len(leads)} Lead Care Managers and names the member's (VI.E.5)"
        )
    return None, "the provider names the Lead Care Manager (VI.E.5)"


def _no_roles(provider: str) -> Sequence[str]:
    return ()


def decide(
    member: Member,
    services: Sequence[Service],
    as_of: date,
    config: AssignmentConfig,
    lead_roles: Callable[[str], Sequence[str]] = _no_roles,
) -> Assignment:
    """Choose among ``services`` for ``member`` as of ``as_of`` under the plan's ``config``;
    ``lead_roles``: a provider's ``lead-care-manager`` PractitionerRoles (asked of the chosen
    one only)."""
    candidates = []
    shapes: dict[_Shape, Candidate] = {}
    for service in services:
        if service.provider in member.exclude:
            continue
        candidate = _filtered(member, service, as_of, shapes)
        candidate.rules = _rules(member, service)
        candidates.append(candidate)
    eligible = [c for c in candidates if c.eligible]
    listed = tuple(candidates)

    def chose(candidate: Candidate, rule: str, why: str) -> Assignment:
        lead, lead_why = _lead(candidate, rule, lead_roles)
        text = f"{candidate.service.provider} chosen by {rule} ({RULES[rule]}): {why}; {lead_why}"
        return Assignment(candidate, rule, False, text, listed, lead)

    def review(why: str) -> Assignment:
        return Assignment(None, None, True, f"Care Coordination decides: {why}", listed)

    # 1. the member's (or family's) stated preference
    if member.preference is not None:
        preferred = [c for c in candidates if c.service.provider == member.preference]
        ok = [c for c in preferred if c.eligible]
        if ok:
            return chose(_best(ok), "member-preference", "the member's stated preference")
        why = (
            "it fails " + ", ".join(sorted({f for c in preferred for f in c.failed}))
            if preferred
            else "it offers no contracted ECM service"
        )
        return review(f"the member prefers {member.preference}, but {why}")
    # 2. the referrer's named provider
    named = [c for c in eligible if "referral-preference" in c.rules]
    if named:
        return chose(_best(named), "referral-preference", "the provider named in the referral")
    # 3. a transitioning member's existing ECM provider (VI.G.3.c)
    existing = [c for c in eligible if "existing-provider" in c.rules]
    if existing:
        return chose(
            _best(existing), "existing-provider", "the member's existing ECM provider"
        )
    # 4. PCP, behavioural health, CCS case manager: not ranked by the seeds
    by_rule = {rule: [c for c in eligible if rule in c.rules] for rule in UNRANKED}
    under = [c for rule in UNRANKED for c in by_rule[rule]]
    pool = eligible
    pool_why = "the only eligible provider"
    if under:
        providers = {c.service.provider for c in under}
        if len(providers) == 1:
            rule = next(r for r in UNRANKED if by_rule[r])
            return chose(_best(under), rule, f"{RULES[rule]} applies to one provider")
        ordered = [r for r in config.rule_order if by_rule.get(r)]
        if not ordered:
            return review(
                "the rules pcp, behavioral-health and ccs-case-manager point to different "
                f"providers ({_names(under)}) and the seeds do not rank them; the plan "
                "configured no order (assignmentRuleOrder)"
            )
        top = ordered[0]
        if len({c.service.provider for c in by_rule[top]}) == 1:
            return chose(
                _best(by_rule[top]), top, f"first of the plan's order {list(config.rule_order)}"
            )
        pool = by_rule[top]
        pool_why = f"the only provider under {top}"
    if not pool:
        return review("no ECM provider passes the hard filters (VI.E.1)")
    # 5. language, a known preference
    speaking = [c for c in pool if "language" in c.rules]
    if speaking and len(speaking) < len(pool):
        pool = speaking
        pool_why = f"the only one speaking the member's language ({member.language})"
        if len({c.service.provider for c in pool}) == 1:
            return chose(_best(pool), "language", pool_why)
    # 6. one left, or the plan's tie-breaker
    if len({c.service.provider for c in pool}) == 1:
        return chose(_best(pool), "single-candidate", pool_why)
    if config.tie_breaker == "most-open-capacity":
        most = max(c.service.open for c in pool)
        top_open = [c for c in pool if c.service.open == most]
        if len({c.service.provider for c in top_open}) == 1:
            return chose(
                _best(top_open), "most-open-capacity", f"the most open capacity ({most})"
            )
        return review(
            f"{_names(top_open)} tie on open capacity ({most}); the seeds give no further "
            "tie-breaker"
        )
    return review(
        f"several eligible providers ({_names(pool)}) and the seeds give no tie-breaker; the "
        "plan configured none (assignmentTieBreaker)"
    )


def _best(candidates: Sequence[Candidate]) -> Candidate:
    """Of one provider's services, the one with the most open capacity (then by reference)."""
    return sorted(candidates, key=lambda c: (-c.service.open, c.service.ref))[0]


__all__ = [
    "FILTERS",
    "RULES",
    "RULE_SYSTEM",
    "TIE_BREAKERS",
    "UNRANKED",
    "Assignment",
    "AssignmentConfig",
    "Candidate",
    "Member",
    "Service",
    "decide",
    "prefilter",
]
