"""What a member's resources say on a given day: the facts the rule kinds read.

Each fact keeps the record entry it came from, so every answer can name its evidence. The
conventions (which statuses count, which date keys a resource, which codes mark an ED visit or
an unplanned stay) are documented in ``docs/eligibility.md``; this module is their one home.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

from server.ecm.calendar import add_months, age_on, date_span, in_window, local_date
from server.ecm.codes import Codes, codings
from server.ecm.record import Entry, MemberRecord

VS = "http://calaim-fhir.org/fhir/ValueSet/"
PROGRAM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-program"
PROGRAM_SYSTEMS = frozenset(
    {
        PROGRAM,
        "http://calaim-fhir.org/fhir/CodeSystem/calaim-program",
        "http://calaim-fhir.org/fhir/CodeSystem/community-supports",
    }
)
CRITERION = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-criterion"
ATTESTATION_PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-eligibility-attestation"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
PREGNANCY_STATUS = (LOINC, "82810-3")
PREGNANT = (SNOMED, "77386006")

_FINAL = frozenset({"final", "amended", "corrected"})
_NOT_HAPPENED = frozenset({"planned", "cancelled", "entered-in-error"})
_EPISODE_NOT_ENROLLED = frozenset({"planned", "waitlist", "cancelled", "entered-in-error"})
_CLINICAL_ACTIVE = frozenset({"active", "recurrence", "relapse"})
_UNVERIFIED = frozenset({"refuted", "entered-in-error"})


@dataclass(frozen=True, slots=True)
class Visit:
    entry: Entry
    day: date
    ed: bool
    stay: bool
    planning: str  # "unplanned" | "planned" | "unknown" (stays only)


@dataclass(frozen=True, slots=True)
class Episode:
    entry: Entry
    codes: frozenset[str]  # ecm-program codes
    start: date | None
    end: date | None
    active: bool  # enrolled on as_of


@dataclass(frozen=True, slots=True)
class Dated:
    entry: Entry
    day: date | None


@dataclass(frozen=True, slots=True)
class Pregnancy:
    state: str  # "pregnant" | "postpartum" | "stale" | "no"
    evidence: list[Entry]
    explanation: str


class Facts:
    """The facts of one record on ``as_of``; each is computed once, when first read."""

    def __init__(
        self, record: MemberRecord, as_of: date, codes: Codes, stale_days: int = 300
    ) -> None:
        self.record = record
        self.as_of = as_of
        self.codes = codes
        self.stale_days = stale_days  # pregnancy evidence older than this is stale

    # -- the member -------------------------------------------------------------------------

    @cached_property
    def births(self) -> tuple[date, date] | None:
        """The earliest and the latest day ``birthDate`` can mean (the same for a full date; a
        year or a year-month spans its year or month)."""
        return date_span(self.record.patient.resource.get("birthDate"))

    @property
    def birth(self) -> date | None:
        """The latest possible birth day: ages and birthdays that are surely reached."""
        return None if self.births is None else self.births[1]

    @property
    def ages(self) -> tuple[int, int] | None:
        """The lowest and the highest possible age on as_of."""
        if self.births is None:
            return None
        return age_on(self.births[1], self.as_of), age_on(self.births[0], self.as_of)

    def races(self) -> list[tuple[str, str]]:
        """(system, code) of the US Core race extension's ombCategory and detailed codings."""
        found: list[tuple[str, str]] = []
        for ext in self.record.patient.resource.get("extension") or []:
            if ext.get("url") != "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race":
                continue
            for part in ext.get("extension") or []:
                coding = part.get("valueCoding") or {}
                if part.get("url") in ("ombCategory", "detailed") and coding.get("code"):
                    found.append((coding.get("system", ""), coding["code"]))
        return found

    # -- coverage and programs ----------------------------------------------------------------

    def _covers(self, period: Any) -> bool:
        return covers(period, self.as_of)

    @cached_property
    def coverages(self) -> list[tuple[Entry, bool]]:
        """Every Coverage, with whether it is active on as_of."""
        return [(e, coverage_active(e.resource, self.as_of)) for e in self.record.of("Coverage")]

    @cached_property
    def episodes(self) -> list[Episode]:
        """Program enrolments: EpisodeOfCare.type and Coverage.type codings of ecm-program."""
        found: list[Episode] = []
        for entry in self.record.of("EpisodeOfCare"):
            r = entry.resource
            codes = _program_codes(r.get("type"))
            if codes:
                period = r.get("period") or {}
                start, end = local_date(period.get("start")), local_date(period.get("end"))
                if r.get("status") in _EPISODE_NOT_ENROLLED:
                    continue  # never enrolled: neither active nor ended
                enrolled = True
                if r.get("status") == "finished" and end is None:
                    enrolled = False
                found.append(Episode(entry, codes, start, end, enrolled and self._covers(period)))
        for entry, active in self.coverages:
            codes = _program_codes(entry.resource.get("type"))
            if codes and entry.resource.get("status") in ("active", "cancelled"):
                period = entry.resource.get("period") or {}
                start, end = local_date(period.get("start")), local_date(period.get("end"))
                found.append(Episode(entry, codes, start, end, active))
        return [e for e in found if e.start is None or e.start <= self.as_of]

    # -- clinical data ------------------------------------------------------------------------

    @cached_property
    def conditions(self) -> list[Entry]:
        """Conditions that hold on as_of."""
        held: list[Entry] = []
        for entry in self.record.of("Condition"):
            r = entry.resource
            if _voided(r):
                continue
            onset = _onset(r)
            if onset is not None and onset > self.as_of:
                continue
            status = _codes_of(r.get("clinicalStatus"))
            abated = _date_of(r, "abatement")
            if status and not status & _CLINICAL_ACTIVE:
                if abated is None or abated <= self.as_of:
                    continue
            elif abated is not None and abated <= self.as_of:
                continue
            held.append(entry)
        return held

    @cached_property
    def observations(self) -> list[Dated]:
        """Final observations dated on or before as_of, newest first."""
        found = []
        for entry in self.record.of("Observation"):
            r = entry.resource
            if r.get("status") not in _FINAL:
                continue
            day = _effective(r)
            if day is None or day > self.as_of:
                continue
            found.append(Dated(entry, day))
        found.sort(key=lambda d: (d.day or date.min, _moment(d.entry.resource)), reverse=True)
        return found

    @cached_property
    def _observations_by_code(self) -> dict[tuple[str | None, str | None], list[Dated]]:
        """The observations by each (system, code) of their ``code``, newest first."""
        return self._index("code")

    @cached_property
    def _observations_by_value(self) -> dict[tuple[str | None, str | None], list[Dated]]:
        """The observations by each (system, code) of their ``valueCodeableConcept``."""
        return self._index("valueCodeableConcept")

    def _index(self, element: str) -> dict[tuple[str | None, str | None], list[Dated]]:
        index: dict[tuple[str | None, str | None], list[Dated]] = {}
        for dated in self.observations:
            for key in dict.fromkeys(codings(dated.entry.resource.get(element))):
                index.setdefault(key, []).append(dated)
        return index

    def observations_valued(self, code: tuple[str, str]) -> list[Dated]:
        """The observations whose ``valueCodeableConcept`` has ``code``, newest first."""
        return self._observations_by_value.get(code, [])

    def observations_of(self, code: tuple[str, str]) -> list[Dated]:
        """The observations whose ``code`` has ``code``, newest first."""
        return self._observations_by_code.get(code, [])

    def latest_observation(self, code: tuple[str, str], months: int | None) -> Dated | None:
        """The newest observation of ``code`` within ``months`` (None: any age)."""
        for dated in self.observations_of(code):
            if (
                months is not None
                and dated.day is not None
                and not in_window(dated.day, self.as_of, months)
            ):
                return None
            return dated
        return None

    @cached_property
    def visits(self) -> list[Visit]:
        found = []
        for entry in self.record.of("Encounter"):
            r = entry.resource
            if r.get("status") in _NOT_HAPPENED:
                continue
            day = local_date((r.get("period") or {}).get("start"))
            if day is None or day > self.as_of:
                continue
            stay = self.codes.coded([VS + "ecm-elig-inpatient-stay"], r.get("class")) or (
                self.codes.coded([VS + "ecm-elig-inpatient-stay"], r.get("type"))
            )
            ed = not stay and (
                self.codes.coded([VS + "ecm-elig-ed-visit"], r.get("class"))
                or self.codes.coded([VS + "ecm-elig-ed-visit"], r.get("type"))
            )
            found.append(Visit(entry, day, ed, stay, self._planning(r) if stay else "unknown"))
        found.sort(key=lambda v: v.day)
        return found

    def typed(self, visit: Visit, value_sets: list[str]) -> bool:
        """Whether a visit that is neither an ED visit nor a stay has a ``class`` or ``type`` in
        ``value_sets`` (urgent care, sick visits)."""
        r = visit.entry.resource
        return not (visit.ed or visit.stay) and (
            self.codes.coded(value_sets, r.get("class"))
            or self.codes.coded(value_sets, r.get("type"))
        )

    def _planning(self, encounter: dict[str, Any]) -> str:
        hospitalization = encounter.get("hospitalization") or {}
        marks = [
            encounter.get("priority"),
            hospitalization.get("admitSource"),
            encounter.get("type"),
        ]
        if any(self.codes.coded([VS + "ecm-elig-unplanned-admission"], m) for m in marks):
            return "unplanned"
        if self.codes.coded([VS + "ecm-elig-planned-admission"], encounter.get("priority")):
            return "planned"
        return "unknown"

    def visit_reasons(self, visit: Visit, value_sets: list[str]) -> bool:
        """Whether an encounter is for a condition coded in one of ``value_sets``: its
        ``reasonCode``, a Condition its ``reasonReference`` or ``diagnosis.condition`` names, or a
        Condition whose ``encounter`` names the visit (as Synthea links them). Refuted and
        entered-in-error Conditions do not count."""
        r = visit.entry.resource
        if self.codes.coded(value_sets, r.get("reasonCode")):
            return True
        refs = [x.get("reference") for x in r.get("reasonReference") or []]
        refs += [(d.get("condition") or {}).get("reference") for d in r.get("diagnosis") or []]
        linked = [t for ref in refs if isinstance(ref, str) and (t := self.record.resolve(ref))]
        linked += self._conditions_by_encounter.get(visit.entry.ref, [])
        return any(
            not _voided(entry.resource) and self.codes.coded(value_sets, entry.resource.get("code"))
            for entry in linked
        )

    @cached_property
    def _conditions_by_encounter(self) -> dict[str, list[Entry]]:
        """The member's Conditions by the reference in their ``encounter`` element."""
        found: dict[str, list[Entry]] = {}
        for entry in self.record.of("Condition"):
            ref = (entry.resource.get("encounter") or {}).get("reference")
            if isinstance(ref, str):
                found.setdefault(ref, []).append(entry)
        return found

    @cached_property
    def deliveries(self) -> list[Dated]:
        """Deliveries on or before as_of (Procedure performed, or Condition onset/recorded)."""
        found = []
        for entry in self.record.of("Procedure"):
            r = entry.resource
            day = _date_of(r, "performed")
            if r.get("status") == "completed" and day is not None and day <= self.as_of:
                if self.codes.coded([VS + "ecm-elig-delivery"], r.get("code")):
                    found.append(Dated(entry, day))
        for entry in self.record.of("Condition"):
            if _voided(entry.resource):
                continue
            day = _onset(entry.resource)
            if day is not None and day <= self.as_of:
                if self.codes.coded([VS + "ecm-elig-delivery"], entry.resource.get("code")):
                    found.append(Dated(entry, day))
        return found

    @cached_property
    def pregnancy(self) -> Pregnancy:
        """Pregnant or postpartum on as_of (seed 000: "currently pregnant or currently
        postpartum"). Pregnancy evidence -- a pregnancy Condition that holds, or the newest
        pregnancy status Observation saying pregnant -- ends at a delivery on or after its date
        (or a later pregnancy status saying not pregnant); evidence older than
        ``stale_days`` that nothing ended is stale: whether the member is still pregnant cannot
        be told."""
        deliveries = [d.day for d in self.deliveries if d.day is not None]
        evidence: list[Dated] = [
            Dated(e, _onset(e.resource))
            for e in self.conditions
            if self.codes.coded([VS + "ecm-elig-pregnancy"], e.resource.get("code"))
        ]
        ended_by_status: date | None = None
        status = self.latest_observation(PREGNANCY_STATUS, None)
        if status is not None:
            if PREGNANT in codings(status.entry.resource.get("valueCodeableConcept")):
                evidence.append(status)
            else:
                ended_by_status = status.day

        def ended(day: date) -> bool:
            return any(d >= day for d in deliveries) or (
                ended_by_status is not None and ended_by_status > day
            )

        open_ = [d for d in evidence if d.day is None or not ended(d.day)]
        current = [
            d
            for d in open_
            if d.day is not None and _days_between(d.day, self.as_of) <= self.stale_days
        ]
        if current:
            since = max(d.day for d in current if d.day is not None)
            return Pregnancy(
                "pregnant", [d.entry for d in current], f"pregnant (evidence dated {since})"
            )
        postpartum = [d for d in self.deliveries if d.day and self.as_of <= add_months(d.day, 12)]
        if postpartum:
            last = max(d.day for d in postpartum if d.day)
            return Pregnancy(
                "postpartum",
                [d.entry for d in postpartum],
                f"postpartum: delivery on {last}, 12 months run to {add_months(last, 12)}",
            )
        if open_:
            dated = [d.day for d in open_ if d.day is not None]
            when = f"dated {max(dated)}" if dated else "undated"
            return Pregnancy(
                "stale",
                [d.entry for d in open_],
                f"pregnancy evidence {when}, more than {self.stale_days} days before "
                f"{self.as_of} with no delivery recorded after it (plan setting "
                "CALAIM_FHIR_ELIGIBILITY_PREGNANCY_STALE_DAYS): still pregnant cannot be told",
            )
        return Pregnancy(
            "no", [], "no current pregnancy on file and no delivery in the last 12 months"
        )

    def attestation(self, code: str, months: int, days: int | None = None) -> Dated | None:
        """The latest attestation of criterion ``code`` within ``months`` up to as_of (within
        ``days`` before as_of instead, when given)."""
        for dated in self.observations:
            if dated.day is not None and not in_window(dated.day, self.as_of, months):
                return None
            if days is not None and dated.day is not None and (self.as_of - dated.day).days > days:
                return None
            r = dated.entry.resource
            if (CRITERION, code) in codings(r.get("code")) and isinstance(
                r.get("valueBoolean"), bool
            ):
                return dated
        return None


def covers(period: Any, as_of: date) -> bool:
    """Whether a Period includes ``as_of`` (a missing start or end is open)."""
    period = period if isinstance(period, dict) else {}
    start, end = local_date(period.get("start")), local_date(period.get("end"))
    return (start is None or start <= as_of) and (end is None or end >= as_of)


def coverage_active(coverage: dict[str, Any], as_of: date) -> bool:
    return coverage.get("status") == "active" and covers(coverage.get("period"), as_of)


def baseline_coverage(coverage: dict[str, Any], as_of: date, codes: Codes, value_set: str) -> bool:
    """The baseline: an active Coverage on ``as_of`` with a payor and a Medi-Cal managed care
    ``type`` (``value_set``)."""
    return (
        coverage_active(coverage, as_of)
        and bool(coverage.get("payor"))
        and codes.coded([value_set], coverage.get("type"))
    )


def _program_codes(concept: Any) -> frozenset[str]:
    """The program codes of a type: ``ecm-program``, and the CalAIM programs (``ecm``) and
    Community Supports (``recuperative-care``) a member is enrolled in or receives (the three
    CodeSystems share no code)."""
    return frozenset(c for s, c in codings(concept) if s in PROGRAM_SYSTEMS and c)


def _codes_of(concept: Any) -> set[str]:
    return {c for _, c in codings(concept) if c}


def _moment(r: dict[str, Any]) -> str:
    """The effective time as written (orders observations made on the same day)."""
    value = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start")
    return str(value or r.get("effectiveInstant") or "")


def _voided(condition: dict[str, Any]) -> bool:
    """A Condition whose verificationStatus is refuted or entered-in-error: it never counts."""
    return bool(_codes_of(condition.get("verificationStatus")) & _UNVERIFIED)


def _date_of(r: dict[str, Any], stem: str) -> date | None:
    """The local date of ``<stem>DateTime``, else of ``<stem>Period.start``."""
    return local_date(r.get(f"{stem}DateTime")) or local_date(
        (r.get(f"{stem}Period") or {}).get("start")
    )


def _onset(r: dict[str, Any]) -> date | None:
    return _date_of(r, "onset") or local_date(r.get("recordedDate"))


def _days_between(earlier: date, later: date) -> int:
    return (later - earlier).days


def dated_on(r: dict[str, Any]) -> date | None:
    """The day a Condition (onset, else recordedDate) or an Observation (effective) is dated."""
    if r.get("resourceType") == "Observation":
        return _effective(r)
    return _onset(r)


def _effective(r: dict[str, Any]) -> date | None:
    return (
        _date_of(r, "effective")
        or local_date(r.get("effectiveInstant"))
        or local_date(r.get("issued"))
    )
