"""Evaluating the rule set for one member on one day: every criterion, with its evidence.

Each node kind of :mod:`server.ecm.ruleset` is a method here. A node answers a
:class:`Answer`: its result (:mod:`server.ecm.results`), the record entries it rests on and a
sentence a care coordinator can read; nodes with an ``id`` are also reported as
:class:`Finding`s, in rule order. Populations are judged on their own criteria, whatever the
baseline and the exclusions say; the determination then combines them (``docs/eligibility.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from server.ecm.calendar import birthday, in_window, local_date, window_start
from server.ecm.codes import Codes, codings, split
from server.ecm.facts import PROGRAM, Facts, baseline_coverage, dated_on
from server.ecm.plan import COMPLEX_SOCIAL_FACTOR, DEFAULT, Payor, PlanConfig
from server.ecm.record import Entry, MemberRecord
from server.ecm.results import (
    INSUFFICIENT,
    MET,
    NEEDS_ATTESTATION,
    NOT_MET,
    Result,
    all_of,
    any_of,
    negate,
)
from server.ecm.ruleset import Node, Population, RuleSet, in_force, iso_date

OMB_RACE = "urn:oid:2.16.840.1.113883.6.238"
PLAN_SETTING = "CALAIM_FHIR_PLAN_IDENTIFIER"
DISCHARGE_SETTING = "CALAIM_FHIR_ELIGIBILITY_CS_DISCHARGE_DAYS"
STAYS_COUNTED = (
    "; stays are inpatient Encounters (class IMP, ACUTE or NONAC, or an inpatient type): "
    "observation stays (OBSENC) are not stays, and nursing facility residence (program "
    "nursing-facility) is not a short-term stay"
)

Determination = Literal["eligible", "needs-attestation", "insufficient-data", "not-eligible"]


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    result: Result
    clause: str
    explanation: str
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    result: Result
    evidence: tuple[str, ...] = ()
    explanation: str = ""
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class Judged:
    """A Population of Focus or an exclusion, judged."""

    code: str
    result: Result
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class Judgement:
    """The baseline and some groups of a rule set (POFs, Community Supports), judged."""

    baseline: Finding
    groups: tuple[Judged, ...]
    issues: tuple[tuple[str, str], ...] = ()  # (data problem, FHIRPath)


@dataclass(frozen=True, slots=True)
class Eligibility:
    as_of: date
    version: str
    baseline: Finding
    pofs: tuple[Judged, ...]
    exclusions: tuple[Judged, ...]
    eligible: bool
    determination: Determination
    utilization: int  # ED visits and stays in the last 12 months (for ranking)
    issues: tuple[tuple[str, str], ...] = field(default=())  # (data problem, FHIRPath)

    @property
    def met_pofs(self) -> list[str]:
        return [p.code for p in self.pofs if p.result == MET]


def _refs(entries: Iterable[Entry]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e.ref for e in entries))


def _days(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _names(value_sets: list[str]) -> str:
    """``ecm-elig-smi, cs-elig-asthma`` as ``smi, asthma``."""
    return ", ".join(
        v.rsplit("/", 1)[-1].removeprefix("ecm-elig-").removeprefix("cs-elig-") for v in value_sets
    )


class _Run:
    """One member, one day."""

    def __init__(self, rules: RuleSet, facts: Facts, plan: PlanConfig, payor: Payor) -> None:
        self.rules = rules
        self.facts = facts
        self.plan = plan
        self.payor = payor
        self.as_of = facts.as_of
        self._pof_cache: dict[tuple[str, bool], Answer] = {}
        self._within: list[str] = []  # the POFs being evaluated, innermost last
        self._nested = False  # inside another POF's other-pof: other-pof is not read again
        self.issues: dict[tuple[str, str], None] = {}  # data problems met, once each

    def problem(self, text: str, expression: str) -> None:
        self.issues[(text, expression)] = None

    # -- structure -----------------------------------------------------------------------------

    def node(self, node: Node) -> Answer:
        method: Callable[[Node], Answer] = getattr(self, "k_" + node["kind"].replace("-", "_"))
        answer = method(node)
        if node.get("id"):
            finding = Finding(
                node["id"], answer.result, node["clause"], answer.explanation, answer.evidence
            )
            return Answer(
                answer.result, answer.evidence, answer.explanation, (finding, *answer.findings)
            )
        return answer

    def _children(self, node: Node) -> list[Answer]:
        return [self.node(n) for n in node["nodes"] if in_force(n, self.as_of)]

    def _combine(self, answers: list[Answer], result: Result, joiner: str) -> Answer:
        relevant = [a for a in answers if a.result == result] or answers
        return Answer(
            result,
            tuple(dict.fromkeys(r for a in relevant for r in a.evidence)),
            joiner.join(a.explanation for a in relevant if a.explanation),
            tuple(f for a in answers for f in a.findings),
        )

    def k_all(self, node: Node) -> Answer:
        answers = self._children(node)
        return self._combine(answers, all_of(a.result for a in answers), "; ")

    def k_any(self, node: Node) -> Answer:
        answers = self._children(node)
        return self._combine(answers, any_of(a.result for a in answers), "; or ")

    def k_not(self, node: Node) -> Answer:
        inner = self.node(node["node"])
        return Answer(
            negate(inner.result), inner.evidence, "not: " + inner.explanation, inner.findings
        )

    # -- the member ----------------------------------------------------------------------------

    def k_age(self, node: Node) -> Answer:
        low, high = node.get("min"), node.get("max")
        wanted = " and ".join(
            ([f"{low} or over"] if low is not None else [])
            + ([f"under {high}"] if high is not None else [])
        )
        ages = self.facts.ages
        if ages is None:
            self.problem(
                "Patient.birthDate is missing: age criteria cannot be judged", "Patient.birthDate"
            )
            return Answer(INSUFFICIENT, (), f"no birthDate on file (age must be {wanted})")
        youngest, oldest = ages
        fits = [(low is None or age >= low) and (high is None or age < high) for age in ages]
        born = self.facts.record.patient.resource.get("birthDate")
        if fits[0] != fits[1]:
            self.problem(
                f"Patient.birthDate {born} is partial: the age on {self.as_of} may be "
                f"{youngest} or {oldest}, so an age criterion cannot be judged",
                "Patient.birthDate",
            )
            return Answer(
                INSUFFICIENT,
                (self.facts.record.patient.ref,),
                f"age {youngest} or {oldest} on {self.as_of} (born {born}; must be {wanted})",
            )
        age = youngest if youngest == oldest else f"{youngest} to {oldest}"
        return Answer(
            MET if fits[0] else NOT_MET,
            (self.facts.record.patient.ref,),
            f"age {age} on {self.as_of} (born {born}; must be {wanted})",
        )

    def k_race(self, node: Node) -> Answer:
        """US Core race, detailed codes rolled up to their OMB category (one ValueSet per
        category). No race, or only UNK / ASKU (not in the race code system): unknown."""
        known = [(s, c) for s, c in self.facts.races() if s == OMB_RACE]
        categories = node["valueSets"]
        found = [
            f"{c} ({_names([url])})"
            for s, c in known
            for url in categories
            if self.facts.codes.has([url], s, c)
        ]
        patient = (self.facts.record.patient.ref,)
        if found:
            return Answer(MET, patient, f"US Core race {', '.join(found)}")
        if known:
            codes = ", ".join(c for _, c in known)
            return Answer(NOT_MET, patient, f"US Core race {codes}: none of {_names(categories)}")
        if self.facts.pregnancy.state != "no":  # race is read for birth equity only
            self.problem(
                "No US Core race is recorded (or only unknown / asked but unknown): the birth "
                "equity race criterion cannot be judged",
                "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')",
            )
        return Answer(
            INSUFFICIENT, (), "no race recorded (none, or only unknown / asked but unknown)"
        )

    # -- coverage and programs -----------------------------------------------------------------

    def k_coverage(self, node: Node) -> Answer:
        coverages = self.facts.coverages
        if not coverages:
            self.problem(
                "No Coverage on file: the Medi-Cal managed care baseline cannot be judged",
                "Coverage",
            )
            return Answer(INSUFFICIENT, (), "no Coverage on file")
        good = [
            e
            for e, _ in coverages
            if baseline_coverage(e.resource, self.as_of, self.facts.codes, node["valueSet"])
        ]
        if good and self.payor.identifier is None:
            return Answer(
                MET,
                _refs(good),
                f"Medi-Cal managed care Coverage active on {self.as_of} (the plan is not "
                f"configured: {PLAN_SETTING} is unset, so any Medi-Cal managed care payor counts)",
            )
        ours = [e for e in good if self.payor.pays(e.resource)]
        plan = "|".join(self.payor.identifier or ())
        if ours:
            return Answer(
                MET,
                _refs(ours),
                f"Medi-Cal managed care Coverage of this plan ({plan}) active on {self.as_of}",
            )
        if good:
            return Answer(
                NOT_MET,
                _refs(good),
                f"the active Medi-Cal managed care Coverage on {self.as_of} is another plan's: "
                f"no payor is this plan ({plan}, {PLAN_SETTING})",
            )
        return Answer(
            NOT_MET,
            _refs(e for e, _ in coverages),
            f"no active Medi-Cal managed care Coverage on {self.as_of}",
        )

    def k_program(self, node: Node) -> Answer:
        wanted = set(node["codes"])
        state, months = node["state"], node.get("months", 12)
        if state == "transitioning":
            return self._transitioning(node, wanted, months)
        exception = node.get("exception") or {}
        excepted: set[str] = set()
        if exception and iso_date(exception["from"]) <= self.as_of <= iso_date(exception["to"]):
            excepted = set(exception["codes"])
        hits: list[Entry] = []
        spared: list[Entry] = []
        for ep in self.facts.episodes:
            codes = ep.codes & wanted
            if not codes:
                continue
            if state in ("active", "active-or-recent") and ep.active:
                (spared if codes <= excepted else hits).append(ep.entry)
            elif state in ("recent", "active-or-recent") and not ep.active and ep.end is not None:
                if in_window(ep.end, self.as_of, months):
                    hits.append(ep.entry)
            elif state == "aged-out" and ep.end is not None and ep.end <= self.as_of:
                birth = self.facts.birth
                if birth is not None and ep.end >= birthday(birth, node.get("ageAtEnd", 18)):
                    hits.append(ep.entry)
        names = ", ".join(sorted(wanted))
        phrase = {
            "active": f"enrolled on {self.as_of}",
            "recent": f"ended between {window_start(self.as_of, months)} and {self.as_of}",
            "active-or-recent": f"enrolled on {self.as_of} or ended since "
            f"{window_start(self.as_of, months)}",
            "aged-out": f"ended on or after age {node.get('ageAtEnd', 18)}",
        }[state]
        if hits:
            return Answer(MET, _refs(hits), f"{names}: {phrase}")
        if spared:
            return Answer(
                NOT_MET,
                _refs(spared),
                f"{names}: enrolled, but for a purpose excepted from {exception['from']} to "
                f"{exception['to']}",
            )
        return Answer(NOT_MET, (), f"no {names} {phrase}")

    def _transitioning(self, node: Node, wanted: set[str], months: int) -> Answer:
        """Leaving custody (VI.A.4.e.1, VI.A.5.d.1): released within ``months``; or in custody
        with an expected release (``period.end``) within the plan's horizon, or with a
        pre-release status (``preReleaseCodes``, VI.B.1). Custody without either is not
        transitioning: an incarceration over 30 days ends ECM (VI.F.1.h)."""
        horizon = self.plan.release_horizon_days
        pre_release = set(node.get("preReleaseCodes", ()))
        adult_only = set(node.get("adultFacilityCodes", ()))
        since = window_start(self.as_of, months)
        counted: list[tuple[Entry, frozenset[str], str]] = []
        held: list[Entry] = []
        for ep in self.facts.episodes:
            codes = ep.codes & wanted
            if not codes:
                continue
            if ep.active and codes & pre_release:
                counted.append((ep.entry, codes, f"pre-release status on {self.as_of}"))
            elif ep.active and ep.end is not None and ep.end >= self.as_of:
                if (ep.end - self.as_of).days <= horizon:
                    why = f"in custody, expected release on {ep.end}, within {horizon} days"
                    counted.append((ep.entry, codes, why))
                else:
                    held.append(ep.entry)
            elif ep.active:
                held.append(ep.entry)
            elif ep.end is not None and in_window(ep.end, self.as_of, months):
                counted.append((ep.entry, codes, f"released on {ep.end} (since {since})"))
        setting = (
            " (release horizon: plan setting CALAIM_FHIR_ELIGIBILITY_RELEASE_HORIZON_DAYS)"
            if any("expected release" in why for _, _, why in counted) or held
            else ""
        )
        youth = [c for c in counted if not c[1] <= adult_only]
        adult = [c for c in counted if c[1] <= adult_only]
        note = ""
        if adult and not youth:
            reading = "counted" if self.plan.youth_adult_facility else "not counted"
            note = (
                f"; an adult facility ({', '.join(sorted(adult_only))}) is {reading} as the "
                "youth correctional facility of VI.A.5.d.1 (plan setting "
                "CALAIM_FHIR_ELIGIBILITY_YOUTH_ADULT_FACILITY)"
            )
            if not self.plan.youth_adult_facility:
                counted = []
        if counted:
            text = "; ".join(f"{', '.join(sorted(c))}: {why}" for _, c, why in counted)
            return Answer(MET, _refs(e for e, _, _ in counted), text + setting + note)
        names = ", ".join(sorted(wanted - pre_release))
        if held:
            return Answer(
                NOT_MET,
                _refs(held),
                f"{names}: in custody on {self.as_of} with no expected release within {horizon} "
                f"days nor a pre-release status: not transitioning{setting}{note}",
            )
        return Answer(
            NOT_MET, (), f"no {names} release since {since} and no release upcoming{note}"
        )

    # -- clinical data -------------------------------------------------------------------------

    def _coded(self, value_sets: list[str], concept: object, exclude: set[tuple[str, str]]) -> bool:
        """Whether ``concept`` has a coding in ``value_sets`` other than the ``exclude`` ones."""
        return any(
            self.facts.codes.has(value_sets, s, c)
            for s, c in codings(concept)
            if (s, c) not in exclude
        )

    def _observed(
        self, value_sets: list[str], months: int, exclude: set[tuple[str, str]]
    ) -> list[Entry]:
        found: list[Entry] = []
        latest_flag: set[tuple[str | None, str | None]] = set()
        for dated in self.facts.observations:
            if dated.day is None or not in_window(dated.day, self.as_of, months):
                break
            r = dated.entry.resource
            code = codings(r.get("code"))
            if self._coded(value_sets, r.get("valueCodeableConcept"), exclude):
                found.append(dated.entry)
            elif self._coded(value_sets, r.get("code"), exclude):
                key = code[0] if code else (None, None)
                if "valueBoolean" in r:
                    if key in latest_flag:
                        continue
                    latest_flag.add(key)  # the newest boolean of a kind decides
                    if r["valueBoolean"] is True:
                        found.append(dated.entry)
                elif "valueCodeableConcept" not in r:
                    found.append(dated.entry)
        return found

    def k_condition(self, node: Node) -> Answer:
        codes = self.facts.codes
        found = [
            e
            for e in self.facts.conditions
            if codes.coded(node["valueSets"], e.resource.get("code"))
        ]
        names = _names(node["valueSets"])
        if found:
            return Answer(MET, _refs(found), f"{_days(len(found), 'condition')} on file ({names})")
        return Answer(NOT_MET, (), f"no {names} condition on file")

    def _value_sets(self, node: Node) -> list[str]:
        """The node's ValueSets, the complex social factors replaced by the plan's list."""
        return [
            self.plan.complex_social_factor if url == COMPLEX_SOCIAL_FACTOR else url
            for url in node["valueSets"]
        ]

    def k_finding(self, node: Node) -> Answer:
        """A social finding: a Condition coded in the ValueSets that holds -- one recorded
        without a clinicalStatus only when dated within the lookback -- or an Observation of
        the lookback."""
        exclude = {split(t) for t in node.get("excludeCodes", ())}
        months = node["lookbackMonths"]
        value_sets = self._value_sets(node)
        conditions = [
            e
            for e in self.facts.conditions
            if self._coded(value_sets, e.resource.get("code"), exclude)
            and (
                e.resource.get("clinicalStatus")
                or (
                    (day := dated_on(e.resource)) is not None and in_window(day, self.as_of, months)
                )
            )
        ]
        observed = self._observed(value_sets, months, exclude)
        names = _names(value_sets)
        if self.plan.complex_social_factor != COMPLEX_SOCIAL_FACTOR and value_sets != list(
            node["valueSets"]
        ):
            names += " (plan setting CALAIM_FHIR_ELIGIBILITY_COMPLEX_SOCIAL_FACTOR_VALUESET)"
        found = conditions + observed
        if found:
            return Answer(
                MET,
                _refs(found),
                f"{names}: {_days(len(conditions), 'condition')} and "
                f"{_days(len(observed), 'observation')} since {window_start(self.as_of, months)}",
            )
        return Answer(
            NOT_MET,
            (),
            f"no {names} condition, nor observation since {window_start(self.as_of, months)}",
        )

    def k_flag(self, node: Node) -> Answer:
        dated = self.facts.latest_observation(split(node["code"]), node["lookbackMonths"])
        code = split(node["code"])[1]
        if dated is not None and dated.entry.resource.get("valueBoolean") is True:
            return Answer(MET, (dated.entry.ref,), f"{code} recorded on {dated.day}")
        if dated is not None:
            return Answer(NOT_MET, (dated.entry.ref,), f"{code} recorded as false on {dated.day}")
        return Answer(
            NOT_MET,
            (),
            f"no {code} recorded since {window_start(self.as_of, node['lookbackMonths'])} "
            "(assumed false)",
        )

    def k_housing_loss(self, node: Node) -> Answer:
        """ "Will imminently lose housing in the next 30 days": evidence of ``code`` (a Condition
        or an Observation, by code or coded value) dated within the plan's days before
        ``asOf``, or an Observation whose date value (the recorded loss date) falls within the
        days after it."""
        days = self.plan.housing_loss_days
        wanted = split(node["code"])
        earliest, latest = self.as_of - timedelta(days=days), self.as_of + timedelta(days=days)
        recent: list[Entry] = []
        upcoming: list[Entry] = []
        candidates = [
            *(e for e in self.facts.conditions if wanted in codings(e.resource.get("code"))),
            *(d.entry for d in self.facts.observations_of(wanted)),
            *(d.entry for d in self.facts.observations_valued(wanted)),
        ]
        seen: set[int] = set()
        for entry in candidates:
            if id(entry) in seen:
                continue
            seen.add(id(entry))
            r = entry.resource
            if r.get("valueBoolean") is False:
                continue
            loss = local_date(r.get("valueDateTime")) or local_date(
                (r.get("valuePeriod") or {}).get("start")
            )
            day = dated_on(r)
            if loss is not None and self.as_of <= loss <= latest:
                upcoming.append(entry)
            elif loss is None and day is not None and earliest <= day <= self.as_of:
                recent.append(entry)
        setting = "plan setting CALAIM_FHIR_ELIGIBILITY_HOUSING_LOSS_DAYS"
        if recent or upcoming:
            return Answer(
                MET,
                _refs(recent + upcoming),
                f"{wanted[1]}: {_days(len(recent), 'record')} dated since {earliest} and "
                f"{_days(len(upcoming), 'loss date')} by {latest} ({setting})",
            )
        return Answer(
            NOT_MET,
            (),
            f"no {wanted[1]} dated since {earliest} nor with a loss date by {latest} ({setting})",
        )

    def k_observation_value(self, node: Node) -> Answer:
        dated = self.facts.latest_observation(split(node["code"]), node["lookbackMonths"])
        code = split(node["code"])[1]
        if dated is None:
            return Answer(
                NOT_MET, (), f"no {code} since {window_start(self.as_of, node['lookbackMonths'])}"
            )
        r = dated.entry.resource
        value = r.get("valueInteger", (r.get("valueQuantity") or {}).get("value"))
        if not isinstance(value, int | float):
            return Answer(INSUFFICIENT, (dated.entry.ref,), f"{code} of {dated.day} has no number")
        low, high = node.get("min"), node.get("max")
        ok = (low is None or value >= low) and (high is None or value <= high)
        wanted = " and ".join(
            ([f"at least {low}"] if low is not None else [])
            + ([f"at most {high}"] if high is not None else [])
        )
        return Answer(
            MET if ok else NOT_MET,
            (dated.entry.ref,),
            f"{code} {value} on {dated.day} ({wanted} needed)",
        )

    def k_encounters(self, node: Node) -> Answer:
        months, need, kind = node["months"], node["min"], node["encounter"]
        reasons = node.get("reasonValueSets")
        start = window_start(self.as_of, months)
        visits = [v for v in self.facts.visits if in_window(v.day, self.as_of, months)]
        if kind == "ed":
            visits = [v for v in visits if v.ed]
        elif kind == "typed":
            visits = [v for v in visits if self.facts.typed(v, node["typeValueSets"])]
        else:
            visits = [v for v in visits if v.stay]
        if reasons:
            visits = [v for v in visits if self.facts.visit_reasons(v, reasons)]
        what = {
            "ed": "ED visit",
            "stay": "hospital or SNF stay",
            "unplanned-stay": "unplanned stay",
            "typed": f"{node.get('typeText') or _names(node.get('typeValueSets', []))} visit",
        }[kind]
        span = (
            f"for {node.get('reasonText', 'SMH/SUD')} " if reasons else ""
        ) + f"from {start} to {self.as_of} (at least {need} needed)"
        if kind in ("stay", "unplanned-stay"):
            span += STAYS_COUNTED
        if kind != "unplanned-stay":
            return Answer(
                MET if len(visits) >= need else NOT_MET,
                _refs(v.entry for v in visits),
                f"{_days(len(visits), what)} {span}",
            )
        sure = [v for v in visits if v.planning == "unplanned"]
        unknown = [v for v in visits if v.planning == "unknown"]
        if len(sure) >= need:
            return Answer(MET, _refs(v.entry for v in sure), f"{_days(len(sure), what)} {span}")
        if len(sure) + len(unknown) >= need:
            self.problem(
                "Hospital or SNF stays without Encounter.priority or hospitalization.admitSource: "
                "whether they were planned cannot be told",
                "Encounter.priority",
            )
            return Answer(
                INSUFFICIENT,
                _refs(v.entry for v in sure + unknown),
                f"{_days(len(sure), what)} and {_days(len(unknown), 'stay')} with no priority "
                f"or admit source to tell whether it was planned, {span}",
            )
        return Answer(NOT_MET, _refs(v.entry for v in sure), f"{_days(len(sure), what)} {span}")

    def k_pregnant_or_postpartum(self, node: Node) -> Answer:
        found = self.facts.pregnancy
        if found.state == "stale":
            self.problem(
                "Pregnancy evidence is older than "
                f"{self.plan.pregnancy_stale_days} days and no delivery is recorded after it: "
                "record the delivery or the pregnancy's end (abatement), or a current pregnancy "
                "status",
                "Condition.onset",
            )
            return Answer(INSUFFICIENT, _refs(found.evidence), found.explanation)
        holds = found.state in ("pregnant", "postpartum")
        return Answer(MET if holds else NOT_MET, _refs(found.evidence), found.explanation)

    def k_attestation(self, node: Node) -> Answer:
        """The newest attestation of ``code`` within the rule set's months, or within ``days``
        (a present state such as intoxication: the attestation's day and the days after it).
        ``reason`` says why a person must judge (e.g. criteria not defined in the rule set)."""
        code = node["code"]
        months = self.rules.attestation_months
        days = node.get("days")
        dated = self.facts.attestation(code, months, days)
        if dated is None:
            since = (
                window_start(self.as_of, months)
                if days is None
                else self.as_of - timedelta(days=days)
            )
            none = f"(none since {since})"
            if node.get("reason"):
                none = f"{none}: {node['reason']}"
            if "askWhen" in node:
                # asked only of members whose data gives a reason to: otherwise no
                reason = self.node(node["askWhen"])
                if reason.result != MET:
                    return Answer(
                        NOT_MET, (), f"no attestation of {code} {none} and {reason.explanation}"
                    )
                return Answer(
                    NEEDS_ATTESTATION,
                    reason.evidence,
                    f"needs an attestation of {code} {none}: {reason.explanation}",
                )
            return Answer(NEEDS_ATTESTATION, (), f"needs an attestation of {code} {none}")
        value = dated.entry.resource["valueBoolean"]
        return Answer(
            MET if value else NOT_MET,
            (dated.entry.ref,),
            f"{code} attested {'true' if value else 'false'} on {dated.day}",
        )

    def k_exiting(self, node: Node) -> Answer:
        """Leaving a setting: an inpatient stay (``stays``), or an episode of a program
        (``codes``, e.g. recuperative care), under way on ``asOf`` (the referral is made before
        discharge) or ended within the plan's discharge days before it."""
        days = self.plan.discharge_days
        since = self.as_of - timedelta(days=days)
        hits: list[tuple[Entry, str]] = []
        if node.get("stays"):
            for visit in self.facts.visits:
                if not visit.stay:
                    continue
                r = visit.entry.resource
                end = local_date((r.get("period") or {}).get("end"))
                if end is not None and since <= end <= self.as_of:
                    hits.append((visit.entry, f"inpatient stay from {visit.day} ended on {end}"))
                elif (end is None or end > self.as_of) and r.get("status") != "finished":
                    hits.append((visit.entry, f"inpatient stay since {visit.day} under way"))
        wanted = set(node.get("codes", ()))
        for ep in self.facts.episodes:
            codes = ", ".join(sorted(ep.codes & wanted))
            if not codes:
                continue
            if ep.active:
                hits.append((ep.entry, f"{codes} under way on {self.as_of}"))
            elif ep.end is not None and since <= ep.end <= self.as_of:
                hits.append((ep.entry, f"{codes} ended on {ep.end}"))
        what = " or ".join((["an inpatient stay"] if node.get("stays") else []) + sorted(wanted))
        setting = f"since {since} (plan setting {DISCHARGE_SETTING}: {days} days)"
        if hits:
            text = "; ".join(why for _, why in hits)
            return Answer(MET, _refs(e for e, _ in hits), f"{text}; exiting means {setting}")
        return Answer(NOT_MET, (), f"no {what} under way or ended {setting}")

    def k_readings(self, node: Node) -> Answer:
        """A criterion whose source joins its terms with "and"/"or" without saying which binds
        first: each term is judged once, then every reading of the chain. When all readings
        agree, that is the answer; when they disagree the criterion is a person's call
        (``attestation``, else ``needs-attestation`` naming the ambiguity), or
        ``insufficient-data`` when missing data could still make them agree."""
        terms = {t["id"]: self.node(t) for t in node["terms"] if in_force(t, self.as_of)}

        def value(expression: Any) -> Result:
            if isinstance(expression, str):
                return terms[expression].result if expression in terms else NOT_MET
            ((op, items),) = expression.items()
            results = [value(item) for item in items]
            return all_of(results) if op == "all" else any_of(results)

        readings = [(r["text"], value(r["expression"])) for r in node["readings"]]
        results = {result for _, result in readings}
        findings = tuple(dict.fromkeys(f for a in terms.values() for f in a.findings))
        told = "; ".join(f"reading {text}: {result}" for text, result in readings)
        if len(results) == 1:
            (result,) = results
            evidence = tuple(
                dict.fromkeys(r for a in terms.values() if a.result == result for r in a.evidence)
            )
            return Answer(result, evidence, f"every reading gives {result} ({told})", findings)
        evidence = tuple(dict.fromkeys(r for a in terms.values() for r in a.evidence))
        disagree = f"the readings disagree ({told}): {node['ambiguity']}"
        code = node.get("attestation")
        months = self.rules.attestation_months
        dated = self.facts.attestation(code, months) if code else None
        if dated is not None:
            attested = dated.entry.resource["valueBoolean"]
            return Answer(
                MET if attested else NOT_MET,
                (*evidence, dated.entry.ref),
                f"{disagree}; {code} attested {'true' if attested else 'false'} on {dated.day}",
                findings,
            )
        if INSUFFICIENT in results:
            return Answer(
                INSUFFICIENT, evidence, f"{disagree}; missing data may settle it", findings
            )
        ask = (
            f"; needs an attestation of {code} (none since {window_start(self.as_of, months)})"
            if code
            else ""
        )
        return Answer(NEEDS_ATTESTATION, evidence, disagree + ask, findings)

    # -- populations ---------------------------------------------------------------------------

    def population(self, pop: Population) -> Answer:
        answers: list[Answer] = []
        for n in pop.criteria:
            if in_force(n, self.as_of):
                answers.append(self.node(n))
                if self._nested and answers[-1].result == NOT_MET:
                    break  # read only for its result, which one not-met settles
        return self._combine(answers, all_of(a.result for a in answers), "; ")

    def pof(self, code: str) -> Answer:
        key = (code, self._nested)
        cached = self._pof_cache.get(key)
        if cached is None:
            pop = self.rules.population(code, self.as_of)
            if pop is None:
                first = self.rules.first(code)
                finding = Finding(
                    "in-force", NOT_MET, pop_clause(first), f"not in force on {self.as_of}", ()
                )
                cached = Answer(NOT_MET, (), finding.explanation, (finding,))
            else:
                self._within.append(code)
                try:
                    cached = self.population(pop)
                finally:
                    self._within.pop()
            self._pof_cache[key] = cached
        return cached

    def k_other_pof(self, node: Node) -> Answer:
        """Any other POF in force. One that is itself defined through another POF (birth
        equity, I/DD) is judged without that clause -- on its own criteria, e.g. birth equity
        by race -- so that neither recurses."""
        if self._nested:
            return Answer(NOT_MET, (), "not read within another POF's other-POF criterion")
        current = self._within[-1] if self._within else None
        others = [
            p.code for p in self.rules.populations if p.in_force(self.as_of) and p.code != current
        ]
        answers: dict[str, Answer] = {}
        for code in dict.fromkeys(others):
            pop = self.rules.population(code, self.as_of)
            self._nested = pop is not None and pop.refers_to_other_pof
            try:
                answers[code] = self.pof(code)
            finally:
                self._nested = False
        result = any_of(a.result for a in answers.values())
        named = [c for c, a in answers.items() if a.result == result]
        if result == NOT_MET:
            return Answer(NOT_MET, (), "no other Population of Focus met")
        evidence = tuple(dict.fromkeys(r for c in named for r in answers[c].evidence))
        return Answer(result, evidence, f"other Population of Focus {result}: {', '.join(named)}")


def pop_clause(pop: Population) -> str:
    since = f" (in force from {pop.start})" if pop.start else ""
    return pop.clause + since


def determination(baseline: Result, pofs: list[Result], exclusions: list[Result]) -> Determination:
    """The first that applies: not-eligible (an exclusion met, or the baseline not met),
    eligible, needs-attestation, insufficient-data, otherwise not-eligible."""
    if MET in exclusions or baseline == NOT_MET:
        return "not-eligible"
    if baseline == MET and MET in pofs:
        return "eligible"
    if baseline == MET and NEEDS_ATTESTATION in pofs and MET not in pofs:
        return "needs-attestation"
    if baseline == INSUFFICIENT or (
        MET not in pofs and NEEDS_ATTESTATION not in pofs and INSUFFICIENT in pofs
    ):
        return "insufficient-data"
    return "not-eligible"


class Evaluator:
    def __init__(self, rules: RuleSet, codes: Codes, plan: PlanConfig = DEFAULT) -> None:
        self.rules = rules
        self.codes = codes
        self.plan = plan

    def _run(self, record: MemberRecord, as_of: date, payor: Payor | None) -> _Run:
        facts = Facts(record, as_of, self.codes, self.plan.pregnancy_stale_days)
        return _Run(self.rules, facts, self.plan, payor or Payor(self.plan.identifier))

    def judge(
        self, record: MemberRecord, as_of: date, codes: list[str], payor: Payor | None = None
    ) -> Judgement:
        """The baseline and the groups ``codes`` (POFs, services) of the rule set, each judged
        on its own criteria."""
        run = self._run(record, as_of, payor)
        base, groups = self._judge(run, codes)
        return Judgement(base, groups, tuple(run.issues))

    @staticmethod
    def _judge(run: _Run, codes: list[str]) -> tuple[Finding, tuple[Judged, ...]]:
        base = run.node(run.rules.baseline).findings[0]
        groups = []
        for code in codes:
            answer = run.pof(code)
            groups.append(Judged(code, answer.result, answer.findings))
        return base, tuple(groups)

    def evaluate(
        self,
        record: MemberRecord,
        as_of: date,
        pof: str | None = None,
        payor: Payor | None = None,
    ) -> Eligibility:
        """``payor``: how Coverages name this plan (default: by the configured identifier)."""
        run = self._run(record, as_of, payor)
        facts = run.facts
        base, pofs = self._judge(run, self.rules.codes_for(pof))
        exclusions = []
        for group in self.rules.exclusions:
            if not group.in_force(as_of):
                continue
            answers = [run.node(n) for n in group.criteria if in_force(n, as_of)]
            result = any_of(a.result for a in answers)
            exclusions.append(
                Judged(group.code, result, tuple(f for a in answers for f in a.findings))
            )
        decided = determination(
            base.result, [p.result for p in pofs], [e.result for e in exclusions]
        )
        utilization = sum(
            1 for v in facts.visits if in_window(v.day, as_of, 12) and (v.ed or v.stay)
        )
        return Eligibility(
            as_of,
            self.rules.version,
            base,
            pofs,
            tuple(exclusions),
            decided == "eligible",
            decided,
            utilization,
            tuple(run.issues),
        )


__all__ = [
    "PROGRAM",
    "Answer",
    "Eligibility",
    "Evaluator",
    "Finding",
    "Judged",
    "Judgement",
    "determination",
]
