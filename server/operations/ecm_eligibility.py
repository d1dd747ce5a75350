"""``$ecm-eligibility``: Populations of Focus, exclusions and the baseline, explained.

Two OperationDefinitions share the code (``profiles/operations/``):

* ``ecm-eligibility`` — one member, reads only (GET or POST): ``Patient/[id]/$ecm-eligibility``,
  or ``Patient/$ecm-eligibility`` with ``patient`` (a stored Patient) or ``bundle`` (the
  member's data inline; nothing is stored and evidence names the entries' fullUrls);
* ``ecm-eligibility-population`` — population mode, POST only: ``Group/[id]/$ecm-eligibility``
  (the Group's active members) and ``$ecm-eligibility`` (every member with an active Medi-Cal
  managed care Coverage on ``asOf``). Writes the prioritized ``List`` (seed 003 VI.D.3) and
  answers it with a summary; long runs go asynchronous with ``Prefer: respond-async``.

The policy is :mod:`server.ecm`; this module gathers the data and renders the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from functools import cache
from typing import Any

import orjson

from server.auth.interactions import Interaction
from server.auth.operation_rules import Needs
from server.ecm.calendar import ZONE
from server.ecm.codes import Codes, UnknownValueSet
from server.ecm.evaluate import Eligibility, Evaluator, Finding, Judged
from server.ecm.facts import baseline_coverage
from server.ecm.plan import Payor, PlanConfig
from server.ecm.population import REVIEW, Candidate, candidate, prioritized
from server.ecm.record import PATIENT_REFERENCES, Entry, MemberRecord, record_of
from server.ecm.ruleset import rule_set
from server.errors import BadRequest, FhirError, InvalidResource, NotFound
from server.fhir.base_validation import base_validator
from server.fhir.outcome import Issue, operation_outcome
from server.fhir.references import local_target
from server.fhir.terminology import Terminology
from server.operations.call import Call, Implementation
from server.operations.output import OutputPolicy
from server.operations.parameters import Typed, first, to_parameters
from server.ports import Reader
from server.search.parse import parse_criteria
from server.search.query import SearchQuery
from server.settings import Settings
from server.writes.write import Write

POF_SYSTEM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-population-of-focus"
EXCLUSION_SYSTEM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-exclusion-reason"
ENTRY_EXTENSION = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-entry"
FINDING_SYSTEM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-finding"
LIST_ORDER = "http://terminology.hl7.org/CodeSystem/list-order"
LIST_PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-list"
BATCH = 500
DETERMINATIONS = ("eligible", "needs-attestation", "insufficient-data", "not-eligible")
SEARCH_PARAMS = {type: (param,) for type, (_, param) in PATIENT_REFERENCES.items()}


class Cancelled(FhirError):
    status = 409
    code = "processing"


def _evaluator(call: Call) -> Evaluator:
    return _evaluator_on(call.terminology, plan_config(call.settings))


@cache
def _evaluator_on(terminology: Terminology, plan: PlanConfig) -> Evaluator:
    """One evaluator per terminology and plan configuration: its ValueSet expansions are made
    once, not per call. A plan ValueSet the server cannot expand is a configuration error."""
    return Evaluator(rule_set(), plan_codes(terminology, plan), plan)


@cache
def plan_codes(terminology: Terminology, plan: PlanConfig) -> Codes:
    """The ValueSet expansions of one terminology (shared by the ECM and CS evaluators), the
    plan's complex social factor ValueSet checked."""
    codes = Codes(terminology)
    try:
        codes.expansion(plan.complex_social_factor)
    except UnknownValueSet:
        raise MisconfiguredPlan(
            f"The complex social factor ValueSet {plan.complex_social_factor[:200]} "
            "(CALAIM_FHIR_ELIGIBILITY_COMPLEX_SOCIAL_FACTOR_VALUESET) is not known to this "
            "server or cannot be expanded"
        ) from None
    return codes


class MisconfiguredPlan(FhirError):
    """A plan setting names something the server does not have (500: fix the configuration)."""

    code = "exception"


def plan_config(settings: Settings) -> PlanConfig:
    """The plan's choices, from the ``CALAIM_FHIR_*`` settings."""
    return PlanConfig(
        identifier=PlanConfig.parse_identifier(settings.plan_identifier),
        release_horizon_days=settings.eligibility_release_horizon_days,
        pregnancy_stale_days=settings.eligibility_pregnancy_stale_days,
        housing_loss_days=settings.eligibility_housing_loss_days,
        youth_adult_facility=settings.eligibility_youth_adult_facility,
        complex_social_factor=settings.eligibility_complex_social_factor_valueset,
        discharge_days=settings.eligibility_cs_discharge_days,
    )


def _stored_payor(call: Call, plan: PlanConfig) -> Payor:
    """The plan as stored Coverages name it: its identifier, and the references of the stored
    Organizations that carry it (relative and absolute); a rule lookup, with the system reader
    where the call has one."""
    if plan.identifier is None:
        return Payor(None)
    criteria = parse_criteria(
        "Organization",
        [("identifier", plan.identifier_token or "")],
        call.services.search.context,
    )
    page = (call.system or call.reader).search(SearchQuery(criteria, 100))
    refs = {f"Organization/{v.id}" for v in page.items}
    return Payor(plan.identifier, frozenset(refs | {f"{call.fhir_base}/{r}" for r in refs}))


def _inline_payor(entries: list[Entry], plan: PlanConfig) -> Payor:
    """The plan as an inline Bundle's Coverages name it: the Organization entries carrying its
    identifier, by fullUrl or ``Organization/<id>`` (nothing is read from the server)."""
    if plan.identifier is None:
        return Payor(None)
    refs: set[str] = set()
    for entry in entries:
        r = entry.resource
        if r.get("resourceType") != "Organization":
            continue
        idents = {(i.get("system"), i.get("value")) for i in r.get("identifier") or []}
        if plan.identifier in idents:
            refs.add(entry.ref)
            if r.get("id"):
                refs.add(f"Organization/{r['id']}")
    return Payor(plan.identifier, frozenset(refs))


# -- inputs ------------------------------------------------------------------------------------


def as_of_input(call: Call) -> date:
    """The ``asOf`` input: a full date (400 otherwise); default today in the program's zone."""
    given = first(call.params, "asOf")
    if given is None:
        return datetime.now(ZONE).date()
    try:
        if len(str(given)) != 10:
            raise ValueError
        return date.fromisoformat(str(given))
    except ValueError:
        raise BadRequest(
            f"asOf must be a full date (YYYY-MM-DD), got '{str(given)[:40]}'", expression="asOf"
        ) from None


def _pof(call: Call) -> str | None:
    pof = first(call.params, "pof")
    if pof is None:
        return None
    if not rule_set().codes_for(str(pof)):
        raise BadRequest(
            f"pof '{str(pof)[:60]}' is not a Population of Focus of {POF_SYSTEM}",
            expression="pof",
        )
    return str(pof)


# -- one member --------------------------------------------------------------------------------


def stored_records(reader: Reader, ids: list[str]) -> Iterator[MemberRecord]:
    """The records of stored Patients ``ids`` (unknown or deleted ones are skipped), read with
    one streaming query per batch."""
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        records: dict[str, MemberRecord] = {}
        for id in batch:
            version = reader.read("Patient", id)
            if version is not None and version.body is not None:
                records[id] = MemberRecord(Entry(orjson.loads(version.body), f"Patient/{id}"))
        for patient_id, version in reader.patient_resources(list(records), SEARCH_PARAMS):
            record = records.get(patient_id)
            if record is not None and version.body is not None:
                record.add(Entry(orjson.loads(version.body), f"{version.type}/{version.id}"))
        yield from (records[id] for id in batch if id in records)


def _stored_member(call: Call, id: str) -> MemberRecord:
    """The member's whole record (the system reader, where the call has one: a determination
    rests on all of it), once the caller may see the Patient (hidden reads as unknown)."""
    found = call.reader.read("Patient", id)
    record = None
    if found is not None:
        record = next(stored_records(call.system or call.reader, [id]), None)
    if record is None:
        raise NotFound(f"Patient/{id} is not known", expression="patient")
    return record


def _inline_member(bundle: Any) -> tuple[MemberRecord, list[Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("bundle must be a Bundle", expression="bundle")
    entries: list[Entry] = []
    issues: list[Issue] = []
    for i, item in enumerate(bundle.get("entry") or []):
        resource = item.get("resource") if isinstance(item, dict) else None
        where = f"bundle.entry[{i}]"
        if not isinstance(resource, dict):
            issues.append(Issue("error", "required", "The entry has no resource", where))
            continue
        for issue in base_validator().validate(resource):
            if issue.severity in ("error", "fatal"):
                path = (issue.expression or "").split(".", 1)
                tail = f".{path[1]}" if len(path) == 2 else ""
                issues.append(
                    Issue(issue.severity, issue.code, issue.diagnostics, f"{where}.resource{tail}")
                )
        rtype, rid = resource.get("resourceType"), resource.get("id")
        ref = item.get("fullUrl") or (f"{rtype}/{rid}" if rid else f"{where}.resource")
        entries.append(Entry(resource, str(ref)))
    if issues:
        raise InvalidResource(issues=issues)
    patients = [e for e in entries if e.resource.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise BadRequest(
            f"The bundle must hold exactly one Patient, the member (found {len(patients)})",
            expression="bundle",
        )
    chosen = patients[0]
    return record_of(chosen, entries, _names(chosen)), entries


def _names(entry: Entry) -> set[str]:
    names = {entry.ref}
    if entry.resource.get("id"):
        names.add(f"Patient/{entry.resource['id']}")
    return names


def _patient_id(call: Call, reference: Any) -> str:
    ref = reference.get("reference") if isinstance(reference, dict) else None
    target = local_target(ref, call.fhir_base) if isinstance(ref, str) else None
    if target is None or target[0] != "Patient":
        raise BadRequest(
            "patient must be a reference to a Patient on this server (Patient/[id])",
            expression="patient",
        )
    return target[1]


def member_of(call: Call, operation: str, plan: PlanConfig) -> tuple[MemberRecord, Payor]:
    """The member a member-mode call evaluates (``Patient/[id]``, or ``patient`` or ``bundle``
    at type level) and how its Coverages name the plan; ``operation`` names it in errors."""
    bundle, patient = first(call.params, "bundle"), first(call.params, "patient")
    if call.id is not None:
        if bundle is not None or patient is not None:
            raise BadRequest(f"Patient/[id]/${operation} takes neither patient nor bundle")
        return _stored_member(call, call.id), _stored_payor(call, plan)
    if bundle is not None and patient is not None:
        raise BadRequest("Give patient or bundle, not both", expression="patient")
    if bundle is not None:
        record, entries = _inline_member(bundle)
        return record, _inline_payor(entries, plan)
    if patient is not None:
        return _stored_member(call, _patient_id(call, patient)), _stored_payor(call, plan)
    raise BadRequest(
        f"Patient/${operation} needs patient (a reference) or bundle (inline data)",
        expression="patient",
    )


# What a member evaluation read with the system reader may tell a restricted caller: the
# outcomes and the clauses they rest on; evidence only from resources it may read, and an
# explanation only when all its finding's evidence is such (the text describes that evidence);
# the data problems (they quote what was read) only to unrestricted principals.
MEMBER_OUTPUT = OutputPolicy(
    everyone=frozenset(
        {
            "eligible",
            "determination",
            "ruleSetVersion",
            "asOf",
            "baseline",
            "pof",
            "exclusion",
            "code",
            "result",
            "criterion",
            "id",
            "clause",
        }
    ),
    references=frozenset({"evidence"}),
    explained_by={"explanation": "evidence"},
    operators=frozenset({"issues"}),
)


def run_member(call: Call) -> dict[str, Any]:
    as_of, pof = as_of_input(call), _pof(call)
    evaluator = _evaluator(call)
    record, payor = member_of(call, "ecm-eligibility", evaluator.plan)
    answer = member_parameters(evaluator.evaluate(record, as_of, pof, payor))
    if first(call.params, "bundle") is not None:
        return answer  # the caller's own data: nothing was read from the server but the plan
    return MEMBER_OUTPUT.apply(
        answer, call.reader.visible, call.fhir_base, restricted=call.restricted
    )


# -- rendering ---------------------------------------------------------------------------------


def explained(finding: Finding) -> list[tuple[str, Any]]:
    """A finding's ``result``, ``clause``, ``explanation`` and ``evidence`` parts."""
    parts: list[tuple[str, Any]] = [
        ("result", Typed("code", finding.result)),
        ("clause", finding.clause),
        ("explanation", finding.explanation or None),
    ]
    parts += [("evidence", Typed("Reference", {"reference": r})) for r in finding.evidence]
    return parts


def criterion_parts(finding: Finding) -> list[tuple[str, Any]]:
    return [("id", finding.id), *explained(finding)]


def _judged(system: str, judged: Judged) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = [
        ("code", Typed("Coding", {"system": system, "code": judged.code})),
        ("result", Typed("code", judged.result)),
    ]
    parts += [("criterion", criterion_parts(f)) for f in judged.findings]
    return parts


def member_parameters(answer: Eligibility) -> dict[str, Any]:
    values: list[tuple[str, Any]] = [
        ("eligible", answer.eligible),
        ("determination", Typed("code", answer.determination)),
        ("ruleSetVersion", answer.version),
        ("asOf", Typed("date", answer.as_of.isoformat())),
        ("baseline", explained(answer.baseline)),
    ]
    values += [("pof", _judged(POF_SYSTEM, p)) for p in answer.pofs]
    values += [("exclusion", _judged(EXCLUSION_SYSTEM, e)) for e in answer.exclusions]
    values.append(("issues", data_issues(answer.issues)))
    return to_parameters(values)


def data_issues(found: tuple[tuple[str, str], ...]) -> dict[str, Any] | None:
    """The data problems met, as an OperationOutcome of warnings (None when there are none)."""
    if not found:
        return None
    return operation_outcome([Issue("warning", "incomplete", text, where) for text, where in found])


# -- population mode ---------------------------------------------------------------------------


def _group_members(call: Call) -> tuple[list[str], list[Issue]]:
    group = call.instance or {}
    ids: list[str] = []
    issues: list[Issue] = []
    for i, member in enumerate(group.get("member") or []):
        if member.get("inactive") is True:
            continue
        ref = (member.get("entity") or {}).get("reference")
        target = local_target(ref, call.fhir_base) if isinstance(ref, str) else None
        if target is None or target[0] != "Patient":
            issues.append(
                Issue(
                    "warning",
                    "not-supported",
                    f"Group member {str(ref)[:80]} is not a Patient on this server: skipped",
                    f"Group.member[{i}].entity",
                )
            )
            continue
        ids.append(target[1])
    return list(dict.fromkeys(ids)), issues


def _covered_members(call: Call, as_of: date, codes: Codes, payor: Payor) -> list[str]:
    """Every Patient with a baseline Coverage on ``as_of`` (Coverage read in pages): of this
    plan when it is configured."""
    value_set = rule_set().baseline["valueSet"]
    ids: list[str] = []
    after: int | None = None
    while True:
        page = call.reader.scan("Coverage", after, 1000)
        for version in page:
            if version.body is None:
                continue
            coverage = orjson.loads(version.body)
            if baseline_coverage(coverage, as_of, codes, value_set) and (
                payor.identifier is None or payor.pays(coverage)
            ):
                ref = (coverage.get("beneficiary") or {}).get("reference")
                target = local_target(ref, call.fhir_base) if isinstance(ref, str) else None
                if target is not None and target[0] == "Patient":
                    ids.append(target[1])
        if len(page) < 1000:
            break
        after = page[-1].position
    return sorted(set(ids))


def _list_resource(ranked: list[Candidate], as_of: date, version: str) -> dict[str, Any]:
    entries = []
    for rank, c in enumerate(ranked, 1):
        parts: list[dict[str, Any]] = [
            {"url": "rank", "valueInteger": rank},
            {"url": "determination", "valueCode": c.determination},
        ]
        parts += [{"url": "pof", "valueCoding": {"system": POF_SYSTEM, "code": p}} for p in c.pofs]
        flag = c.determination
        if c.review:
            parts.append(
                {"url": "review", "valueCoding": {"system": FINDING_SYSTEM, "code": REVIEW}}
            )
            flag = f"{c.determination}: in plan case management, for Care Coordination review"
        entries.append(
            {
                "extension": [{"url": ENTRY_EXTENSION, "extension": parts}],
                "flag": {"text": flag},
                "item": {"reference": f"Patient/{c.patient_id}"},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [LIST_PROFILE]},
        "status": "current",
        "mode": "snapshot",
        "title": f"Potentially eligible ECM members as of {as_of.isoformat()}",
        "code": {
            "coding": [{"system": FINDING_SYSTEM, "code": "prioritized-list"}],
            "text": f"ECM prioritized list ({version})",
        },
        "date": datetime.now(ZONE).isoformat(timespec="seconds"),
        "orderedBy": {"coding": [{"system": LIST_ORDER, "code": "priority"}]},
    }
    if entries:
        resource["entry"] = entries
    else:
        resource["emptyReason"] = {
            "text": "No member is eligible, needs attestation or is for Care Coordination review"
        }
    return resource


def run_population(call: Call) -> dict[str, Any]:
    as_of, pof = as_of_input(call), _pof(call)
    if call.write is None:
        raise BadRequest("Population mode runs with POST")
    evaluator = _evaluator(call)
    payor = _stored_payor(call, evaluator.plan)
    if call.type == "Group":
        ids, issues = _group_members(call)
    else:
        ids, issues = _covered_members(call, as_of, evaluator.codes, payor), []
    if call.restricted:  # the members the caller may see, each judged on the whole record
        ids = [id for id in ids if call.reader.visible("Patient", id)]
    counts = dict.fromkeys(DETERMINATIONS, 0)
    kept: list[Candidate] = []
    done = 0
    call.progress(0, len(ids))
    for record in stored_records(call.system or call.reader, ids):
        answer = evaluator.evaluate(record, as_of, pof, payor)
        counts[answer.determination] += 1
        listed = candidate(record.patient_ref.removeprefix("Patient/"), answer)
        if listed is not None:
            kept.append(listed)
        done += 1
        if done % 100 == 0:
            call.progress(done, len(ids))
            if call.cancelled():
                raise Cancelled("The run was cancelled")
    missing = len(ids) - sum(counts.values())
    if missing:
        issues.append(
            Issue("warning", "not-found", f"{missing} member(s) are not stored Patients: skipped")
        )
    ranked = prioritized(kept)
    resource = _list_resource(ranked, as_of, evaluator.rules.version)

    written = call.write(Write("create", "List", resource=resource))
    assert written.result is not None and written.result.version is not None
    list_id = written.result.version.id
    call.progress(len(ids), len(ids))
    summary: list[tuple[str, Any]] = [
        ("evaluated", sum(counts.values())),
        ("eligible", counts["eligible"]),
        ("needsAttestation", counts["needs-attestation"]),
        ("insufficientData", counts["insufficient-data"]),
        ("notEligible", counts["not-eligible"]),
        ("listed", len(ranked)),
        ("careCoordinationReview", sum(1 for c in ranked if c.review)),
    ]
    values: list[tuple[str, Any]] = [
        ("ruleSetVersion", evaluator.rules.version),
        ("asOf", Typed("date", as_of.isoformat())),
        ("list", Typed("Reference", {"reference": f"List/{list_id}"})),
        ("summary", summary),
    ]
    if issues:
        values.append(("issues", operation_outcome(issues)))
    return POPULATION_OUTPUT.apply(
        to_parameters(values), call.reader.visible, call.fhir_base, restricted=call.restricted
    )


# a restricted caller's run: its members only, judged on the whole record; the List (written
# by the server on its behalf) is referred to only when the caller may read it
POPULATION_OUTPUT = OutputPolicy(
    everyone=frozenset(
        {
            "ruleSetVersion",
            "asOf",
            "summary",
            "evaluated",
            "eligible",
            "needsAttestation",
            "insufficientData",
            "notEligible",
            "listed",
            "careCoordinationReview",
        }
    ),
    references=frozenset({"list"}),
    operators=frozenset({"issues"}),
)


MEMBER = Implementation(
    "ecm-eligibility",
    run_member,
    needs=(Needs.of("Patient", Interaction.READ),),
)
POPULATION = Implementation(
    "ecm-eligibility-population",
    run_population,
    long_running=True,
    progress_unit="members",
    needs=(Needs.of("Patient", Interaction.SEARCH_TYPE), Needs.of("List", Interaction.CREATE)),
)
