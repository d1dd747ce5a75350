"""``Patient/[id]/$ecm-assign``: the member's ECM provider, chosen by the policy and explained
(seed 003 VI.E, VI.G.3.c; docs/ecm-workflow.md, "Assignment").

``mode=preview`` (the default) writes nothing and runs on a reader (no write unit, no writers'
lock: writes go on meanwhile); ``mode=commit`` writes the assignment in the operation's one
unit, through the pipeline as the caller (``server/ecm/assignment_records.py``). Every count a
commit rests on (capacity in use) is read in that unit, which holds the writers' lock:
concurrent commits see each other's assignments and never exceed a service's capacity. Both
modes read the caller's view of the store.
A commit for a referral already assigned (an active filler order ``basedOn`` it) answers that
assignment and writes nothing.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any

from server.auth.interactions import Interaction
from server.auth.operation_rules import Needs
from server.ecm import intake
from server.ecm.assignment import RULES, Assignment, AssignmentConfig, Candidate, decide, prefilter
from server.ecm.assignment_facts import (
    CALAIM_PROGRAM,
    FILLER_ORDER,
    OPEN_ENROLLMENT,
    POF_SYSTEM,
    Facts,
    codes,
    local,
    pofs_of,
    ref,
)
from server.ecm.assignment_records import (
    assigned_episode,
    care_team,
    filler_order,
    notice,
    notice_due,
    provider_task,
    reassignment_due,
)
from server.ecm.calendar import local_date
from server.ecm.program import workflow_plans
from server.ecm.subreferrals import SPLITTABLE
from server.ecm.workflow_config import WorkflowConfig, WorkflowPlans
from server.errors import BadRequest, Conflict, NotFound, Unprocessable
from server.fhir.instant import format_instant
from server.operations.call import Call, Implementation
from server.operations.parameters import Typed, first, to_parameters
from server.settings import Settings
from server.writes.write import Write

AUTHORIZATION_DATE = "http://calaim-fhir.org/fhir/StructureDefinition/authorization-date"


_PLANS: dict[tuple[str | None, int], WorkflowPlans] = {}


def _plans(settings: Settings) -> WorkflowPlans:
    """The plan configuration files, read once per folder (they are checked at start-up)."""
    key = (settings.ecm_plan_config_dir, settings.ecm_referral_decision_business_days)
    if key not in _PLANS:
        _PLANS[key] = workflow_plans(settings)
    return _PLANS[key]


def _config(call: Call, facts: Facts, member: str, plan: str | None) -> WorkflowConfig:
    """The plan configuration: the payor of the member's active Coverage, else the plan the
    referral was sent to (its Task's owner), else the default."""
    plans = _plans(call.settings)
    if not plans.plans:
        return plans.default
    payors = [
        ref(p)
        for _, coverage in facts.find("Coverage", f"beneficiary={member}&status=active", 20)
        for p in coverage.get("payor") or ()
    ]
    return plans.select([*payors, plan])


def _reference(call: Call, name: str, type: str) -> str | None:
    value = first(call.params, name)
    if value is None:
        return None
    reference = ref(value)
    key = local(reference)
    if key is None or key[0] != type:
        raise BadRequest(f"{name} is a reference to a {type} on this server", expression=name)
    return reference


def _date(call: Call, name: str) -> date | None:
    value = first(call.params, name)
    if value is None:
        return None
    if len(str(value)) != 10:
        raise BadRequest(f"{name} is a full date (YYYY-MM-DD)", expression=name)
    return date.fromisoformat(str(value))


class _Inputs:
    def __init__(self, call: Call) -> None:
        self.mode = first(call.params, "mode", "preview")
        if self.mode not in ("preview", "commit"):
            raise BadRequest("mode is preview or commit", expression="mode")
        self.referral = _reference(call, "referral", "ServiceRequest")
        self.preference = _reference(call, "preference", "Organization")
        self.reassign = bool(first(call.params, "reassign", False))
        self.request_date = _date(call, "requestDate")
        if self.reassign and self.request_date is None:
            raise BadRequest(
                "a reassignment names its requestDate (VI.E.3)", expression="requestDate"
            )
        if self.request_date is not None and not self.reassign:
            raise BadRequest("requestDate goes with reassign=true", expression="requestDate")
        if self.mode == "commit" and self.referral is None:
            raise BadRequest("a commit names the referral", expression="referral")
        self.stamp = format_instant(intake.now())
        today = local_date(self.stamp)
        assert today is not None
        self.as_of = _date(call, "asOf") or today
        if self.request_date is not None and self.request_date > today:
            raise BadRequest("requestDate is not in the future", expression="requestDate")


def _open_referral(facts: Facts, member: str) -> str | None:
    """The referral of the member's open ECM enrollment (the latest one)."""
    found = sorted(
        (str((e.get("period") or {}).get("start") or ""), r)
        for _, e in facts.enrollments(member)
        if e.get("status") in OPEN_ENROLLMENT
        for r in [ref(x) for x in e.get("referralRequest") or ()]
        if r is not None
    )
    return found[-1][1] if found else None


class _Case:
    """The member's referral, its authorization, the plan's Task and the current assignment."""

    def __init__(self, facts: Facts, member: str, referral_ref: str | None) -> None:
        if referral_ref is None:
            referral_ref = _open_referral(facts, member)
        if referral_ref is None:
            raise Unprocessable(
                "the member has no authorized ECM referral: name the referral",
                expression="referral",
            )
        referral = facts.read(referral_ref)
        if referral is None or not intake.is_ecm_referral(referral):
            raise NotFound(f"{referral_ref} is not a stored ECM referral", expression="referral")
        if ref(referral.get("subject")) != member:
            raise Conflict(f"{referral_ref} is not {member}'s referral", expression="referral")
        self.referral_ref, self.referral = referral_ref, referral
        episodes = [
            (id, e)
            for id, e in facts.find(
                "EpisodeOfCare", f"incoming-referral={referral_ref}&type={CALAIM_PROGRAM}|ecm", 10
            )
            if e.get("status") in OPEN_ENROLLMENT
        ]
        self.episode_id: str | None = episodes[0][0] if episodes else None
        self.episode: dict[str, Any] | None = episodes[0][1] if episodes else None
        tasks = [
            (id, t)
            for id, t in facts.find("Task", f"focus={referral_ref}", 20)
            if not t.get("partOf")
        ]
        self.task_id: str | None = tasks[0][0] if tasks else None
        self.task: dict[str, Any] | None = tasks[0][1] if tasks else None
        orders = list(
            facts.find(
                "ServiceRequest",
                f"based-on={referral_ref}&intent={FILLER_ORDER}&status=active",
                5,
            )
        )
        self.order_id: str | None = orders[0][0] if orders else None
        self.order: dict[str, Any] | None = orders[0][1] if orders else None

    @property
    def pofs(self) -> frozenset[str]:
        """Authorized Populations of Focus: the enrollment's, else the referral's reasons."""
        if self.episode is not None and pofs_of(self.episode):
            return pofs_of(self.episode)
        return frozenset(codes(self.referral.get("reasonCode"), POF_SYSTEM))

    @property
    def plan(self) -> str | None:
        return ref((self.task or {}).get("owner"))

    @property
    def current_provider(self) -> str | None:
        for p in (self.order or {}).get("performer") or ():
            if (ref(p) or "").startswith("Organization/"):
                return ref(p)
        return None

    def authorized_on(self, fallback: date) -> date:
        for e in (self.episode or {}).get("extension") or ():
            if e.get("url") == AUTHORIZATION_DATE:
                day = local_date(e.get("valueDate"))
                if day is not None:
                    return day
        return fallback


def _decide(
    call: Call, facts: Facts, member: str, patient: dict[str, Any], case: _Case, inputs: _Inputs
) -> tuple[Assignment, WorkflowConfig]:
    exclude: frozenset[str] = frozenset()
    if inputs.reassign and case.current_provider is not None:
        exclude = frozenset({case.current_provider})
    performer = next(
        (r for p in case.referral.get("performer") or () if (r := ref(p)) is not None), None
    )
    facts_of_member = facts.member(
        patient,
        member,
        None if case.episode_id is None else f"EpisodeOfCare/{case.episode_id}",
        case.pofs,
        inputs.preference,
        performer if performer and performer.startswith("Organization/") else None,
        exclude,
    )
    found = facts.services()
    counted = [(s, since) for s, since in found if prefilter(facts_of_member, s, inputs.as_of)]
    in_use = facts.capacity_in_use(counted)
    services = [
        facts.with_use(service, in_use[service.ref], facts_of_member)
        if service.ref in in_use
        else service  # not counted
        for service, _ in found
    ]
    config = _config(call, facts, member, case.plan)
    plan = AssignmentConfig(config.assignment_rule_order, config.assignment_tie_breaker)
    outcome = decide(facts_of_member, services, inputs.as_of, plan, facts.lead_care_managers)
    return outcome, config


_ELIGIBLE = {True: {"name": "eligible", "valueBoolean": True},
             False: {"name": "eligible", "valueBoolean": False}}


@lru_cache(maxsize=20_000)
def _service_parts(provider: str, service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A service's ``provider`` and ``healthcareService`` parts, built once (only
    serialized, never changed)."""
    return (
        {"name": "provider", "valueReference": {"reference": provider}},
        {"name": "healthcareService", "valueReference": {"reference": service}},
    )


_Tail = tuple[bool, tuple[str, ...], tuple[str, ...], int | None, str]


def _candidate(c: Candidate, tails: dict[_Tail, list[dict[str, Any]]]) -> dict[str, Any]:
    """One ``candidate`` parameter, built directly (a preview lists every ECM service): the
    parts after the service's are shared by the candidates of one answer that have the same
    (``tails``; most fail the same filter the same way; only serialized, never changed)."""
    key: _Tail = (
        c.eligible,
        tuple(c.rules),
        tuple(c.failed),
        c.service.open if c.service.counted else None,
        c.explanation,
    )
    tail = tails.get(key)
    if tail is None:
        eligible, rules, failed, open, explanation = key
        tail = [_ELIGIBLE[eligible]]
        tail += [{"name": "rule", "valueCode": r} for r in rules]
        tail += [{"name": "failed", "valueCode": f} for f in failed]
        if open is not None:
            tail.append({"name": "openCapacity", "valueInteger": open})
        tail.append({"name": "explanation", "valueString": explanation})
        tails[key] = tail
    return {"name": "candidate", "part": [*_service_parts(c.service.provider, c.service.ref),
                                          *tail]}


def _answer(
    outcome: Assignment,
    due: date | None,
    extra: list[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    values: list[tuple[str, Any]] = []
    if outcome.chosen is not None:
        values += [
            ("provider", Typed("Reference", {"reference": outcome.chosen.service.provider})),
            ("healthcareService", Typed("Reference", {"reference": outcome.chosen.service.ref})),
        ]
    if outcome.lead_care_manager is not None:
        values.append(
            ("leadCareManager", Typed("Reference", {"reference": outcome.lead_care_manager}))
        )
    if outcome.rule is not None:
        values.append(("rule", Typed("code", outcome.rule)))
    values += [("needsReview", outcome.needs_review), ("explanation", outcome.explanation)]
    if due is not None and not outcome.needs_review:
        values.append(("due", Typed("date", due.isoformat())))
    values += extra or []
    answer = to_parameters(values)
    tails: dict[_Tail, list[dict[str, Any]]] = {}
    answer["parameter"] += [_candidate(c, tails) for c in outcome.candidates]
    return answer


def _existing(case: _Case) -> dict[str, Any]:
    """The answer of a commit for a referral already assigned: what is stored."""
    order = case.order or {}
    performers = [r for p in order.get("performer") or () if (r := ref(p)) is not None]
    values: list[tuple[str, Any]] = [
        (
            "provider",
            Typed("Reference", {"reference": next(p for p in performers if "Organization/" in p)}),
        )
    ]
    values += [
        ("healthcareService", Typed("Reference", {"reference": p}))
        for p in performers
        if p.startswith("HealthcareService/")
    ]
    lead = ref((case.episode or {}).get("careManager"))
    if lead is not None:
        values.append(("leadCareManager", Typed("Reference", {"reference": lead})))
    values += [
        ("needsReview", False),
        ("explanation", f"{case.referral_ref} is already assigned "
         f"(ServiceRequest/{case.order_id})"),
    ]
    if case.episode_id is not None:
        values.append(
            ("episodeOfCare", Typed("Reference", {"reference": f"EpisodeOfCare/{case.episode_id}"}))
        )
    values.append(("existing", True))
    return to_parameters(values)


def run(call: Call) -> dict[str, Any]:
    assert call.instance is not None and call.id is not None
    inputs = _Inputs(call)
    facts = Facts(call.reader, call.services.search.context)
    member = f"Patient/{call.id}"
    case = _Case(facts, member, inputs.referral)
    if inputs.mode == "commit" and not inputs.reassign and case.order is not None:
        return _existing(case)
    if inputs.reassign and case.order is None:
        raise Conflict(
            f"{case.referral_ref} has no assignment to change (reassign)", expression="reassign"
        )
    if inputs.reassign and case.order is not None and inputs.request_date is not None:
        made = local_date(case.order.get("authoredOn"))
        if inputs.mode == "commit" and case.order.get("replaces") and made is not None and (
            made >= inputs.request_date
        ):
            return _existing(case)
    outcome, config = _decide(call, facts, member, call.instance, case, inputs)
    today = local_date(inputs.stamp)
    assert today is not None
    if inputs.reassign:
        assert inputs.request_date is not None
        due = reassignment_due(inputs.request_date)
    else:
        due = notice_due(case.authorized_on(today), config.holidays)
    if inputs.mode == "preview":
        return _answer(outcome, due)
    return _commit(call, case, outcome, inputs, due, member)


def _commit(
    call: Call, case: _Case, outcome: Assignment, inputs: _Inputs, due: date, member: str
) -> dict[str, Any]:
    assert call.write is not None
    chosen = outcome.chosen
    if chosen is None:
        raise Unprocessable(
            f"nothing to commit: {outcome.explanation}", expression="mode"
        )
    if case.episode is None or case.episode_id is None:
        raise Conflict(
            f"{case.referral_ref} is not authorized: no open ecm-enrollment EpisodeOfCare names "
            "it (seed 003 VI.D.8, VI.E.4: the provider is assigned after authorization)",
            expression="referral",
        )
    if case.task is None or case.task_id is None or case.plan is None:
        raise Conflict(f"{case.referral_ref} has no referral Task", expression="referral")
    if case.task.get("status") not in SPLITTABLE:
        raise Conflict(
            f"Task/{case.task_id} is {case.task.get('status')}: the plan assigns a provider once "
            "it has accepted the referral (authorized)",
            expression="referral",
        )
    lead = outcome.lead_care_manager
    if lead is None and case.episode.get("status") == "active":
        raise Unprocessable(
            f"{chosen.service.provider} has no Lead Care Manager to name and the enrollment is "
            "active (ecmenr-5): the provider records a lead-care-manager PractitionerRole first",
            expression="mode",
        )
    service, provider, plan = chosen.service.ref, chosen.service.provider, case.plan
    write = call.write
    replaced = None
    if inputs.reassign and case.order is not None and case.order_id is not None:
        replaced = f"ServiceRequest/{case.order_id}"
        write(Write("update", "ServiceRequest", id=case.order_id,
                    resource={**case.order, "status": "revoked"}))
    order_body = filler_order(
        case.referral, case.referral_ref, plan, provider, service, inputs.stamp, replaced
    )
    order_id = _id(write(Write("create", "ServiceRequest", resource=order_body)))
    order = f"ServiceRequest/{order_id}"
    reason = f"ECM assignment: {outcome.explanation}"
    task = provider_task(
        member=member, order=order, plan=plan, provider=provider,
        plan_task=f"Task/{case.task_id}", stamp=inputs.stamp, due=due, reason=reason[:1000],
    )
    task_ref = f"Task/{_id(write(Write('create', 'Task', resource=task)))}"
    if replaced is not None:
        _cancel_replaced(call, replaced, inputs)
        _end_former_teams(call, case.episode, inputs)
    episode_ref = f"EpisodeOfCare/{case.episode_id}"
    team_ref = None
    if lead is not None:
        team = care_team(member, provider, lead, episode_ref, chosen.service.name)
        team_ref = f"CareTeam/{_id(write(Write('create', 'CareTeam', resource=team)))}"
    episode = assigned_episode(case.episode, provider, lead, team_ref)
    write(Write("update", "EpisodeOfCare", id=case.episode_id, resource=episode))
    said = (
        f"{member} is assigned to {chosen.service.name} ({provider}) for Enhanced Care "
        f"Management; the provider is told by {due.isoformat()}."
    )
    referrer = ref(case.referral.get("requester"))
    for recipient, electronic in ((provider, True), (member, False), (referrer, True)):
        if recipient is None:
            continue
        write(Write("create", "Communication", resource=notice(
            recipient=recipient, member=member, about=[task_ref, order, episode_ref],
            stamp=inputs.stamp, reason="ecm-assignment", text=said, electronic=electronic,
        )))
    extra: list[tuple[str, Any]] = [
        ("task", Typed("Reference", {"reference": task_ref})),
        ("episodeOfCare", Typed("Reference", {"reference": episode_ref})),
        ("existing", False),
    ]
    return _answer(outcome, due, extra)


def _cancel_replaced(call: Call, replaced: str, inputs: _Inputs) -> None:
    """The former provider's open Task for the replaced order: cancelled, with why (after the
    new one is written, so the plan's Task does not roll up to on-hold)."""
    assert call.write is not None and inputs.request_date is not None
    facts = Facts(call.reader, call.services.search.context)
    for id, task in facts.find("Task", f"focus={replaced}", 10):
        if task.get("status") not in ("requested", "accepted", "in-progress", "on-hold"):
            continue
        why = (f"The member asked on {inputs.request_date.isoformat()} to change their ECM "
               "provider (seed 003 VI.E.3)")
        call.write(Write("update", "Task", id=id, resource={
            **task, "status": "cancelled", "statusReason": {"text": why}}))


def _end_former_teams(call: Call, episode: dict[str, Any], inputs: _Inputs) -> None:
    """The enrollment's care teams at the former provider: ended (``inactive``, ``period.end``
    the day of the change) with why; the new provider's team (or none, until it names its
    Lead Care Manager) is the enrollment's now."""
    assert call.write is not None and inputs.request_date is not None
    facts = Facts(call.reader, call.services.search.context)
    today = local_date(inputs.stamp)
    assert today is not None
    why = (f"Ended when the ECM provider changed at the member's request of "
           f"{inputs.request_date.isoformat()} (seed 003 VI.E.3)")
    for reference in episode.get("team") or ():
        key = local(ref(reference))
        if key is None or key[0] != "CareTeam":
            continue
        team = facts.read(f"CareTeam/{key[1]}")
        if team is None or team.get("status") not in ("proposed", "active", "suspended"):
            continue
        call.write(Write("update", "CareTeam", id=key[1], resource={
            **team,
            "status": "inactive",
            "period": {**(team.get("period") or {}), "end": today.isoformat()},
            "note": [*(team.get("note") or []), {"text": why}],
        }))


def _id(written: Any) -> str:
    assert written.result is not None and written.result.version is not None
    return str(written.result.version.id)


IMPLEMENTATION = Implementation(
    "Patient-ecm-assign",
    run,
    writes_when=lambda params: first(params, "mode", "preview") == "commit",
    # the operations table: the plan's view of a commit, preview and commit alike
    needs=(
        Needs.of("Patient", Interaction.READ),
        *(
            Needs.of(type, interaction)
            for type in ("Task", "CareTeam", "EpisodeOfCare")
            for interaction in (Interaction.CREATE, Interaction.UPDATE)
        ),
    ),
)

__all__ = ["IMPLEMENTATION", "RULES"]
