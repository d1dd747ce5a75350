"""Synthetic ECM data for the search benchmarks: a seeded, deterministic FHIR R4 data set.

    .venv/bin/python bench/search/generate.py --total 1000000 --out /data/ecm-1m [--seed 7]
    .venv/bin/python bench/search/generate.py --verify /data/ecm-1m

The data set is a Medi-Cal Enhanced Care Management population: managed care plans, ECM
providers and community-based organisations (Organization), care managers (Practitioner) and,
per member, one Patient (Medi-Cal CIN, name, birth date, gender, address with county, US Core
race extension), 1-3 referrals (ServiceRequest, ECM or Community Supports) each with its
referral Task (owner, requester, focus, for, status, businessStatus, authoredOn), a Consent, a
CarePlan, 3-7 Encounters, 1-5 Conditions and 4-12 Observations (about 23 resources per member;
all referencing each other as a real record would).

On top of that realistic background, *designed match sets*: for each search kind a parameter
whose value is planted on exactly 1, 20, 10,000 and 100,000 resources (as many of those sizes
as the resource type can hold at the chosen total), spread at random over the insertion order.
The planted values never occur in the background, so each designed query has an exact,
known answer. ``queries.json`` next to the data lists every designed query, its expected
total and page size, plus the ``_include`` and ``_total=accurate`` variants.

Output (``--out DIR``): ``resources-NNNNN.ndjson`` (100,000 lines each, in load order:
Organizations and Practitioners first, then member by member) and ``queries.json``.
The same ``--seed`` and ``--total`` always produce byte-identical files.
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import resources, write_ndjson  # noqa: E402

SID = "https://calaim-fhir.org/fhir/sid"
CS = "https://calaim-fhir.org/fhir/CodeSystem"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OMB = "urn:oid:2.16.840.1.113883.6.238"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
BENCH_CODES = f"{CS}/bench-designed-observation"

DEFAULT_SIZES = (1, 20, 10_000, 100_000)
# a designed series may take at most this share of its resource type (the rest is background)
MAX_SHARE = 0.9
ID_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: base of the time-ordered ids


# -- vocabularies ------------------------------------------------------------------------------

FAMILIES = (
    "Garcia Hernandez Lopez Martinez Gonzalez Rodriguez Perez Sanchez Ramirez Torres Flores "
    "Rivera Gomez Diaz Reyes Morales Cruz Ortiz Gutierrez Chavez Ramos Ruiz Alvarez Mendoza "
    "Castillo Jimenez Moreno Romero Herrera Medina Aguilar Vargas Guzman Mendez Salazar Soto "
    "Delgado Pena Rios Castro Nguyen Tran Le Pham Huynh Vu Vo Dang Bui Do Kim Lee Park Choi "
    "Wong Chen Liu Wang Yang Huang Zhang Lin Santos Reyes Dela-Cruz Bautista Villanueva "
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Thomas Taylor Moore "
    "Jackson Martin Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright "
    "Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Evans "
    "Turner Parker Collins Edwards Stewart Morris Murphy Cook Rogers Morgan Cooper Peterson "
    "Khan Singh Patel Ali Hassan Ahmadi Karimi Petrosyan Hakobyan Grigoryan Sarkisian"
).split()
GIVEN_F = (
    "Maria Guadalupe Ana Rosa Elena Lucia Sofia Isabella Camila Valentina Ximena Yesenia "
    "Jennifer Jessica Ashley Michelle Linh Mai Thuy Hoa Mei Ling Grace Emily Olivia Emma "
    "Aaliyah Destiny Brianna Fatima Aisha Anahit Lilit Patricia Linda Barbara Susan Karen"
).split()
GIVEN_M = (
    "Jose Juan Luis Carlos Jesus Miguel Francisco Antonio Alejandro Diego Mateo Santiago "
    "Minh Tuan Duc Anh Wei Jun Hyun Daniel David Michael James Robert John William Anthony "
    "Christopher Joshua Andrew Kevin Brian Jamal Darnell Omar Ahmed Aram Tigran Gabriel"
).split()
# (county, [(city, zip)]) with rough Medi-Cal enrolment weights
COUNTIES: tuple[tuple[str, int, tuple[tuple[str, str], ...]], ...] = (
    (
        "Los Angeles",
        34,
        (
            ("Los Angeles", "90011"),
            ("Long Beach", "90813"),
            ("Pomona", "91766"),
            ("Lancaster", "93534"),
            ("El Monte", "91731"),
        ),
    ),
    ("Riverside", 8, (("Riverside", "92503"), ("Moreno Valley", "92553"), ("Indio", "92201"))),
    (
        "San Bernardino",
        8,
        (("San Bernardino", "92410"), ("Fontana", "92335"), ("Victorville", "92392")),
    ),
    ("Orange", 7, (("Santa Ana", "92701"), ("Anaheim", "92805"), ("Garden Grove", "92840"))),
    ("San Diego", 7, (("San Diego", "92113"), ("Chula Vista", "91911"), ("Escondido", "92025"))),
    ("Fresno", 5, (("Fresno", "93701"), ("Clovis", "93612"), ("Reedley", "93654"))),
    ("Sacramento", 5, (("Sacramento", "95823"), ("Elk Grove", "95758"))),
    ("Kern", 4, (("Bakersfield", "93307"), ("Delano", "93215"))),
    ("Alameda", 4, (("Oakland", "94601"), ("Hayward", "94544"), ("Fremont", "94536"))),
    ("Santa Clara", 4, (("San Jose", "95122"), ("Gilroy", "95020"))),
    ("San Joaquin", 3, (("Stockton", "95205"), ("Lodi", "95240"))),
    ("Tulare", 3, (("Visalia", "93291"), ("Porterville", "93257"))),
    ("Stanislaus", 2, (("Modesto", "95351"), ("Turlock", "95380"))),
    ("Contra Costa", 2, (("Richmond", "94801"), ("Antioch", "94509"))),
    ("San Francisco", 2, (("San Francisco", "94110"),)),
    ("Humboldt", 1, (("Eureka", "95501"),)),
    ("Imperial", 1, (("El Centro", "92243"), ("Calexico", "92231"))),
)
STREETS = (
    "Main St",
    "Belmont Ave",
    "Olive Ave",
    "Broadway",
    "Mission St",
    "Cesar Chavez Ave",
    "Whittier Blvd",
    "University Ave",
    "Palm Ave",
    "Central Ave",
    "Union Ave",
    "Ventura Ave",
    "Kings Canyon Rd",
    "Florin Rd",
)
RACES = (  # (OMB code, display, weight)
    ("2106-3", "White", 45),
    ("2054-5", "Black or African American", 10),
    ("2028-9", "Asian", 15),
    ("1002-5", "American Indian or Alaska Native", 2),
    ("2076-8", "Native Hawaiian or Other Pacific Islander", 1),
    ("UNK", "Unknown", 27),
)
PLANS = (
    ("L.A. Care Health Plan", "LACARE"),
    ("Health Net Community Solutions", "HNCS"),
    ("Inland Empire Health Plan", "IEHP"),
    ("CalOptima Health", "CALOPT"),
    ("Molina Healthcare of California", "MOLINA"),
    ("Anthem Blue Cross Partnership Plan", "ANTH"),
    ("Kern Family Health Care", "KFHC"),
    ("Partnership HealthPlan of California", "PHC"),
)
ECM_POPULATIONS = (
    ("POF-1", "Individuals experiencing homelessness", "Z59.01", "Sheltered homelessness"),
    (
        "POF-2",
        "Individuals at risk for avoidable hospital or ED utilization",
        "Z91.19",
        "Patient's noncompliance with other medical treatment and regimen",
    ),
    (
        "POF-3",
        "Individuals with serious mental health and/or SUD needs",
        "F33.1",
        "Major depressive disorder, recurrent, moderate",
    ),
    (
        "POF-4",
        "Individuals transitioning from incarceration",
        "Z65.1",
        "Imprisonment and other incarceration",
    ),
    (
        "POF-5",
        "Adults living in the community at risk for LTC institutionalization",
        "Z74.09",
        "Other reduced mobility",
    ),
)
CS_SERVICES = (
    ("housing-navigation", "Housing Transition Navigation Services"),
    ("housing-deposits", "Housing Deposits"),
    ("tenancy-sustaining", "Housing Tenancy and Sustaining Services"),
    ("recuperative-care", "Recuperative Care (Medical Respite)"),
    ("medically-tailored-meals", "Medically Tailored Meals/Medically-Supportive Food"),
    ("asthma-remediation", "Asthma Remediation"),
    ("personal-care", "Personal Care and Homemaker Services"),
)
CONDITIONS = (
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("F32.9", "Major depressive disorder, single episode, unspecified"),
    ("F20.9", "Schizophrenia, unspecified"),
    ("F10.20", "Alcohol dependence, uncomplicated"),
    ("F11.20", "Opioid dependence, uncomplicated"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("N18.3", "Chronic kidney disease, stage 3"),
    ("I50.9", "Heart failure, unspecified"),
    ("Z59.01", "Sheltered homelessness"),
    ("Z59.02", "Unsheltered homelessness"),
    ("Z59.41", "Food insecurity"),
    ("Z60.2", "Problems related to living alone"),
    ("E66.9", "Obesity, unspecified"),
)
# (LOINC code, display, category, value kind, unit)
OBSERVATIONS = (
    ("8867-4", "Heart rate", "vital-signs", "qty", "/min"),
    ("8480-6", "Systolic blood pressure", "vital-signs", "qty", "mm[Hg]"),
    ("29463-7", "Body weight", "vital-signs", "qty", "kg"),
    ("39156-5", "Body mass index (BMI) [Ratio]", "vital-signs", "qty", "kg/m2"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "laboratory", "qty", "%"),
    ("2339-0", "Glucose [Mass/volume] in Blood", "laboratory", "qty", "mg/dL"),
    (
        "44261-6",
        "Patient Health Questionnaire 9 item (PHQ-9) total score",
        "survey",
        "qty",
        "{score}",
    ),
    ("71802-3", "Housing status", "social-history", "str", ""),
    (
        "88122-7",
        "Within the past 12 months we worried whether our food would run out",
        "social-history",
        "cc",
        "",
    ),
    (
        "93030-5",
        "Has lack of transportation kept you from medical appointments",
        "social-history",
        "cc",
        "",
    ),
    ("96778-6", "Problems with place where you live", "social-history", "str", ""),
    (
        "76513-1",
        "How hard is it for you to pay for the very basics like food, housing",
        "social-history",
        "cc",
        "",
    ),
)
OBS_WEIGHTS = (12, 12, 10, 8, 6, 6, 8, 12, 8, 6, 6, 6)
ANSWERS = (
    ("LA33-6", "Yes"),
    ("LA32-8", "No"),
    ("LA28397-0", "Often true"),
    ("LA6729-3", "Sometimes true"),
    ("LA28398-8", "Never true"),
)
# background free-text answers (Observation.valueString)
FREE_TEXT = (
    "Living in an emergency shelter",
    "Staying with relatives temporarily",
    "Sleeping in a vehicle",
    "Renting a room, rent overdue two months",
    "Permanent supportive housing since last year",
    "Eviction notice received",
    "Lives alone in a subsidized apartment",
    "Recently discharged from recuperative care",
    "Couch surfing with friends",
    "Utilities shut off last month",
    "Pest and mold problems in the unit",
    "No working heater in the apartment",
)
TASK_STATUS = (  # (status, businessStatus code, display, weight)
    ("requested", "referral-received", "Referral received", 15),
    ("accepted", "outreach-in-progress", "Outreach in progress", 20),
    ("in-progress", "enrolled", "Member enrolled", 35),
    ("completed", "services-completed", "Services completed", 15),
    ("rejected", "declined-by-provider", "Declined by provider (capacity)", 5),
    ("cancelled", "member-unreachable", "Member could not be reached", 10),
)

# designed values: planted on exactly N resources; none occurs in the background
DESIGNED_FAMILIES = ("Achterberg", "Quillfeather", "Vandermolen", "Oyelaran-Brisk")
DESIGNED_TEXTS = (  # (stored text, query text: a folded prefix of it)
    ("Lodging voucher pending review", "lodging voucher"),
    ("Meal delivery paused by member", "meal delivery"),
    ("Needs rides to dialysis", "needs rides"),
    ("Stable housing confirmed", "stable housing"),
)
# Encounter.period windows: (query value, first day, number of days); background encounters
# fall in 2019-2024 only
DESIGNED_WINDOWS = (
    ("2025-01-15", (2025, 1, 15), 1),
    ("2025-01-16", (2025, 1, 16), 1),
    ("2025-02", (2025, 2, 1), 28),
    ("2026", (2026, 1, 1), 365),
)


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A search parameter of one resource type with designed values planted on it."""

    name: str
    kind: str  # token | reference | date | string
    type: str
    param: str
    primary: bool  # the kind's main series (every size the type can hold)
    note: str


SERIES = (
    Series(
        "observation-code",
        "token",
        "Observation",
        "code",
        True,
        "Observation.code planted with a designed code",
    ),
    Series(
        "encounter-service-provider",
        "reference",
        "Encounter",
        "service-provider",
        True,
        "Encounter.serviceProvider = a designed ECM provider",
    ),
    Series(
        "encounter-date",
        "date",
        "Encounter",
        "date",
        True,
        "Encounter.period inside a designed day / month / year",
    ),
    Series(
        "observation-value-string",
        "string",
        "Observation",
        "value-string",
        True,
        "Observation.valueString = a designed free-text answer (prefix search)",
    ),
    Series(
        "task-owner",
        "reference",
        "Task",
        "owner",
        False,
        "Task.owner = a designed ECM provider (a provider's worklist)",
    ),
    Series(
        "patient-family",
        "string",
        "Patient",
        "family",
        False,
        "Patient.name.family = a designed surname (prefix search)",
    ),
)


@dataclass
class Member:
    referrals: int
    encounters: int
    conditions: int
    observations: int

    def size(self) -> int:
        # Patient + ServiceRequest and Task per referral + Consent + CarePlan + the rest
        return 1 + 2 * self.referrals + 2 + self.encounters + self.conditions + self.observations


@dataclass
class Plan:
    total: int
    seed: int
    sizes: tuple[int, ...]
    plans: int
    providers: int
    cbos: int
    practitioners: int
    members: list[Member] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # series name -> {index of the resource among its type: size bucket}
    designed: dict[str, dict[int, int]] = field(default_factory=dict)
    series_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dropped: dict[str, tuple[int, ...]] = field(default_factory=dict)


def fixed_counts(total: int) -> tuple[int, int, int, int]:
    """Plans, ECM providers, CBOs and practitioners for a store of ``total`` resources."""
    plans = min(len(PLANS), max(2, total // 20_000))
    providers = max(4, total // 4_600)  # ~217 ECM providers at 1M: ~200 members each
    cbos = max(2, total // 10_000)
    practitioners = max(10, total // 1_000)
    return plans, providers, cbos, practitioners


def make_plan(total: int, seed: int, sizes: tuple[int, ...]) -> Plan:
    rng = random.Random(f"plan-{seed}")
    plans, providers, cbos, practitioners = fixed_counts(total)
    designed_orgs = sum(len(sizes) for s in SERIES if s.kind == "reference")
    fixed = plans + providers + cbos + designed_orgs + practitioners
    if total < fixed + 30:
        raise SystemExit(f"--total {total} is too small (at least {fixed + 30})")
    plan = Plan(total, seed, sizes, plans, providers, cbos, practitioners)
    left = total - fixed
    while left > 0:
        m = Member(rng.randint(1, 3), rng.randint(3, 7), rng.randint(1, 5), rng.randint(4, 12))
        if m.size() > left:  # the last member takes exactly what is left
            m = Member(1, 0, 0, 0)
            extra = left - m.size()
            if extra < 0:  # fewer than 5 left: give them to the previous member
                prev = plan.members[-1]
                prev.observations += left
                break
            m.observations = extra
        plan.members.append(m)
        left -= m.size()
    members = plan.members
    plan.counts = {
        "Organization": plans + providers + cbos + designed_orgs,
        "Practitioner": practitioners,
        "Patient": len(members),
        "ServiceRequest": sum(m.referrals for m in members),
        "Task": sum(m.referrals for m in members),
        "Consent": len(members),
        "CarePlan": len(members),
        "Encounter": sum(m.encounters for m in members),
        "Condition": sum(m.conditions for m in members),
        "Observation": sum(m.observations for m in members),
    }
    assert sum(plan.counts.values()) == total, (plan.counts, total)
    for series in SERIES:
        capacity = int(plan.counts[series.type] * MAX_SHARE)
        kept: list[int] = []
        for size in sizes:
            if sum(kept) + size <= capacity:
                kept.append(size)
        plan.series_sizes[series.name] = tuple(kept)
        plan.dropped[series.name] = tuple(s for s in sizes if s not in kept)
        chosen = rng.sample(range(plan.counts[series.type]), sum(kept))
        mapping: dict[int, int] = {}
        start = 0
        for size in kept:
            for index in chosen[start : start + size]:
                mapping[index] = size
            start += size
        plan.designed[series.name] = mapping
    return plan


# -- resources ---------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Case- and accent-insensitive form (the server's string matching folds the same way)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _check_vocabularies() -> None:
    """Designed values must never be matched by a background value (prefix search)."""
    for designed in DESIGNED_FAMILIES:
        for family in FAMILIES:
            a, b = fold(designed), fold(family)
            assert not a.startswith(b) and not b.startswith(a), (designed, family)
    for designed, query in DESIGNED_TEXTS:
        assert fold(designed).startswith(fold(query)), designed
        for text in FREE_TEXT:
            assert not fold(text).startswith(fold(query)), (text, query)
        for other, _ in DESIGNED_TEXTS:
            assert other == designed or not fold(other).startswith(fold(query)), other


def _day(rng: random.Random, first: tuple[int, int, int], days: int) -> str:
    return _day_n(first, rng.randrange(days))


def _day_n(first: tuple[int, int, int], n: int) -> str:
    return (datetime.date(*first) + datetime.timedelta(days=n)).isoformat()


class Ids:
    """Time-ordered UUIDs (like the server's own: 48 bits of milliseconds, then random),
    one millisecond apart in generation order, so ids sort in insertion order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seq = 0

    def next(self) -> str:
        self.seq += 1
        value = (ID_EPOCH_MS + self.seq) << 80 | self.rng.getrandbits(80)
        value = (value & ~((0xF << 76) | (0x3 << 62))) | (0x7 << 76) | (0x2 << 62)
        return str(uuid.UUID(int=value))


def ref(type: str, id: str, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": f"{type}/{id}"}
    if display:
        out["display"] = display
    return out


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def cc(
    system: str, code: str, display: str | None = None, text: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if text:
        out["text"] = text
    return out


def weighted(rng: random.Random, items: tuple[Any, ...], weights: tuple[int, ...]) -> Any:
    return rng.choices(items, weights)[0]


class Generator:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rng = random.Random(f"data-{plan.seed}")
        self.ids = Ids(random.Random(f"ids-{plan.seed}"))
        self.index = {t: 0 for t in plan.counts}  # next index of each type
        self.org_ids: dict[str, list[str]] = {"plan": [], "ecm": [], "cbo": []}
        self.practitioners: list[str] = []
        self.designed_orgs: dict[tuple[str, int], str] = {}
        self.county_weights = tuple(w for _, w, _ in COUNTIES)
        self.first_task: dict[str, Any] | None = None

    def designed(self, series: str, type: str) -> int | None:
        """The designed size bucket of the current resource of ``type`` for ``series``."""
        return self.plan.designed[series].get(self.index[type])

    def _bump(self, type: str) -> None:
        self.index[type] += 1

    # fixed resources

    def organisations(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        for i, (name, code) in enumerate(PLANS[: self.plan.plans]):
            oid = f"mcp-{code.lower()}"
            self.org_ids["plan"].append(oid)
            yield self._org(
                oid,
                name,
                "pay",
                "Payer",
                f"{SID}/dhcs-managed-care-plan",
                f"MCP-{code}-{400 + i:04d}",
                "Medi-Cal managed care plan",
                rng,
            )
        for i in range(self.plan.providers):
            oid = f"ecm-provider-{i + 1:04d}"
            self.org_ids["ecm"].append(oid)
            county = weighted(rng, COUNTIES, self.county_weights)[0]
            yield self._org(
                oid,
                f"{county} Community Care Partners {i + 1}",
                "prov",
                "Healthcare Provider",
                f"{SID}/ecm-provider",
                f"ECM-{i + 1:05d}",
                "Enhanced Care Management provider",
                rng,
            )
        for i in range(self.plan.cbos):
            oid = f"cbo-{i + 1:04d}"
            self.org_ids["cbo"].append(oid)
            yield self._org(
                oid,
                f"Neighborhood Services Collaborative {i + 1}",
                "cg",
                "Community Group",
                f"{SID}/cs-provider",
                f"CS-{i + 1:05d}",
                "Community Supports provider",
                rng,
            )
        for series in SERIES:
            if series.kind != "reference":
                continue
            for size in self.plan.sizes:
                oid = f"bench-{series.type.lower()}-{series.param}-{size}"
                self.designed_orgs[(series.name, size)] = oid
                yield self._org(
                    oid,
                    f"Designed ECM Provider {series.type} {size}",
                    "prov",
                    "Healthcare Provider",
                    f"{SID}/ecm-provider",
                    f"ECM-D-{series.type[:4].upper()}-{size}",
                    "Enhanced Care Management provider",
                    rng,
                )

    def _org(
        self,
        oid: str,
        name: str,
        kind: str,
        kind_display: str,
        system: str,
        value: str,
        text: str,
        rng: random.Random,
    ) -> dict[str, Any]:
        county, _, cities = weighted(rng, COUNTIES, self.county_weights)
        city, zip_code = rng.choice(cities)
        return {
            "resourceType": "Organization",
            "id": oid,
            "identifier": [{"use": "official", "system": system, "value": value}],
            "active": True,
            "type": [
                cc(
                    "http://terminology.hl7.org/CodeSystem/organization-type",
                    kind,
                    kind_display,
                    text,
                )
            ],
            "name": name,
            "telecom": [
                {
                    "system": "phone",
                    "value": f"+1-559-555-{rng.randrange(10000):04d}",
                    "use": "work",
                }
            ],
            "address": [
                {
                    "use": "work",
                    "line": [f"{rng.randrange(100, 9999)} {rng.choice(STREETS)}"],
                    "city": city,
                    "district": f"{county} County",
                    "state": "CA",
                    "postalCode": zip_code,
                    "country": "US",
                }
            ],
        }

    def practitioner_resources(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        for i in range(self.plan.practitioners):
            pid = f"care-manager-{i + 1:05d}"
            self.practitioners.append(pid)
            female = rng.random() < 0.7
            yield {
                "resourceType": "Practitioner",
                "id": pid,
                "identifier": [{"system": f"{SID}/ecm-care-manager", "value": f"CM-{i + 1:06d}"}],
                "active": True,
                "name": [
                    {
                        "use": "official",
                        "family": rng.choice(FAMILIES),
                        "given": [rng.choice(GIVEN_F if female else GIVEN_M)],
                        "suffix": [rng.choice(("LCSW", "RN", "CHW", "MSW"))],
                    }
                ],
                "gender": "female" if female else "male",
                "telecom": [
                    {
                        "system": "phone",
                        "value": f"+1-213-555-{rng.randrange(10000):04d}",
                        "use": "work",
                    }
                ],
            }

    # one member

    def member(self, number: int, m: Member) -> Iterator[dict[str, Any]]:
        rng = self.rng
        plan_org = rng.choice(self.org_ids["plan"])
        provider = rng.choice(self.org_ids["ecm"])
        manager = rng.choice(self.practitioners)
        patient = self.patient(number)
        pid = patient["id"]
        yield patient
        enrolled = f"{rng.randint(2021, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        srs = []
        population = rng.choice(ECM_POPULATIONS)
        for r in range(m.referrals):
            sr = self.service_request(pid, plan_org, provider, population, r, enrolled)
            srs.append(sr)
            yield sr
        for sr in srs:
            yield self.task(pid, sr, plan_org, provider)
        yield self.consent(pid, provider, enrolled)
        yield self.care_plan(pid, provider, manager, population, enrolled)
        encounters = []
        for _ in range(m.encounters):
            enc = self.encounter(pid, provider, manager, population)
            encounters.append(enc["id"])
            yield enc
        for _ in range(m.conditions):
            yield self.condition(pid, manager, enrolled)
        for _ in range(m.observations):
            yield self.observation(pid, manager, provider, encounters)

    def patient(self, number: int) -> dict[str, Any]:
        rng = self.rng
        female = rng.random() < 0.55
        size = self.designed("patient-family", "Patient")
        family = (
            DESIGNED_FAMILIES[self.plan.sizes.index(size)]
            if size is not None
            else rng.choice(FAMILIES)
        )
        self._bump("Patient")
        county, _, cities = weighted(rng, COUNTIES, self.county_weights)
        city, zip_code = rng.choice(cities)
        race_code, race, _ = weighted(rng, RACES, tuple(w for *_, w in RACES))
        race_ext: dict[str, Any] = {"url": f"{US_CORE}/us-core-race", "extension": []}
        if race_code != "UNK":
            race_ext["extension"].append(
                {"url": "ombCategory", "valueCoding": coding(OMB, race_code, race)}
            )
        race_ext["extension"].append({"url": "text", "valueString": race})
        hispanic = rng.random() < 0.5
        eth_code, eth = (
            ("2135-2", "Hispanic or Latino") if hispanic else ("2186-5", "Not Hispanic or Latino")
        )
        given = rng.choice(GIVEN_F if female else GIVEN_M)
        names: list[dict[str, Any]] = [{"use": "official", "family": family, "given": [given]}]
        if rng.random() < 0.3:
            names[0]["given"].append(rng.choice(GIVEN_F if female else GIVEN_M))
        year = rng.randint(1940, 2008)
        return {
            "resourceType": "Patient",
            "id": self.ids.next(),
            "extension": [
                race_ext,
                {
                    "url": f"{US_CORE}/us-core-ethnicity",
                    "extension": [
                        {"url": "ombCategory", "valueCoding": coding(OMB, eth_code, eth)},
                        {"url": "text", "valueString": eth},
                    ],
                },
            ],
            "identifier": [
                {
                    "use": "official",
                    "type": cc(V2_0203, "MA", "Patient Medicaid number", "Medi-Cal CIN"),
                    "system": f"{SID}/medi-cal-cin",
                    "value": f"9{number:07d}{'ABCDEFGH'[number % 8]}",
                }
            ],
            "active": True,
            "name": names,
            "telecom": [
                {
                    "system": "phone",
                    "value": f"+1-559-555-{rng.randrange(10000):04d}",
                    "use": "mobile",
                }
            ],
            "gender": "female" if female else "male",
            "birthDate": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "address": [
                {
                    "use": "home",
                    "line": [f"{rng.randrange(100, 9999)} {rng.choice(STREETS)}"],
                    "city": city,
                    "district": f"{county} County",
                    "state": "CA",
                    "postalCode": zip_code,
                    "country": "US",
                }
            ],
            "communication": [
                {
                    "language": cc(
                        "urn:ietf:bcp:47", "es" if hispanic and rng.random() < 0.7 else "en"
                    ),
                    "preferred": True,
                }
            ],
        }

    def service_request(
        self,
        pid: str,
        plan_org: str,
        provider: str,
        population: tuple[str, str, str, str],
        r: int,
        enrolled: str,
    ) -> dict[str, Any]:
        rng = self.rng
        self._bump("ServiceRequest")
        is_ecm = r == 0
        if is_ecm:
            code = cc(
                f"{CS}/calaim-program",
                "ecm",
                "Enhanced Care Management",
                "Enhanced Care Management (Medi-Cal CalAIM)",
            )
            performer = provider
        else:
            service, display = rng.choice(CS_SERVICES)
            code = cc(f"{CS}/community-supports", service, display)
            performer = rng.choice(self.org_ids["cbo"])
        authored = f"{enrolled}T{rng.randint(8, 17):02d}:{rng.randint(0, 59):02d}:00-08:00"
        return {
            "resourceType": "ServiceRequest",
            "id": self.ids.next(),
            "identifier": [
                {
                    "use": "official",
                    "system": f"{SID}/ecm-referral",
                    "value": f"REF-{self.index['ServiceRequest']:08d}",
                }
            ],
            "status": rng.choice(("active", "active", "completed", "revoked")),
            "intent": "order",
            "category": [cc(SNOMED, "3457005", "Patient referral")],
            "priority": rng.choice(("routine", "routine", "urgent")),
            "code": code,
            "subject": ref("Patient", pid),
            "occurrencePeriod": {"start": enrolled},
            "authoredOn": authored,
            "requester": ref("Organization", plan_org),
            "performer": [ref("Organization", performer)],
            "reasonCode": [
                cc(ICD10, population[2], population[3]),
                cc(f"{CS}/ecm-population", population[0], population[1]),
            ],
        }

    def task(self, pid: str, sr: dict[str, Any], plan_org: str, provider: str) -> dict[str, Any]:
        rng = self.rng
        size = self.designed("task-owner", "Task")
        owner = (
            self.designed_orgs[("task-owner", size)]
            if size is not None
            else sr["performer"][0]["reference"].split("/")[1]
        )
        self._bump("Task")
        status, business, business_display, _ = weighted(
            rng, TASK_STATUS, tuple(w for *_, w in TASK_STATUS)
        )
        authored = sr["authoredOn"]
        task: dict[str, Any] = {
            "resourceType": "Task",
            "id": self.ids.next(),
            "identifier": [
                {"system": f"{SID}/referral-task", "value": f"TASK-{self.index['Task']:08d}"}
            ],
            "basedOn": [ref("ServiceRequest", sr["id"])],
            "status": status,
            "businessStatus": cc(
                f"{CS}/referral-business-status", business, business_display, business_display
            ),
            "intent": "order",
            "priority": sr["priority"],
            "code": cc(
                "http://hl7.org/fhir/CodeSystem/task-code", "fulfill", "Fulfill the focal request"
            ),
            "focus": ref("ServiceRequest", sr["id"]),
            "for": ref("Patient", pid),
            "authoredOn": authored,
            "lastModified": authored,
            "requester": ref("Organization", plan_org),
            "owner": ref("Organization", owner),
        }
        task["groupIdentifier"] = sr["identifier"][0]
        if status in ("in-progress", "completed"):
            task["executionPeriod"] = {"start": authored[:10]}
            if status == "completed":
                year, month, day = (int(x) for x in authored[:10].split("-"))
                task["executionPeriod"]["end"] = _day_n((year, month, day), rng.randint(30, 300))
        if status in ("rejected", "cancelled"):
            task["statusReason"] = {"text": business_display}
        if self.first_task is None and status == "in-progress":
            self.first_task = task
        return task

    def consent(self, pid: str, provider: str, enrolled: str) -> dict[str, Any]:
        self._bump("Consent")
        return {
            "resourceType": "Consent",
            "id": self.ids.next(),
            "status": "active",
            "scope": cc(
                "http://terminology.hl7.org/CodeSystem/consentscope",
                "patient-privacy",
                "Privacy Consent",
            ),
            "category": [cc(LOINC, "59284-0", "Patient Consent")],
            "patient": ref("Patient", pid),
            "dateTime": f"{enrolled}T10:00:00-08:00",
            "organization": [ref("Organization", provider)],
            "policyRule": cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", "opt-in"),
            "provision": {"type": "permit", "period": {"start": enrolled}},
        }

    def care_plan(
        self,
        pid: str,
        provider: str,
        manager: str,
        population: tuple[str, str, str, str],
        enrolled: str,
    ) -> dict[str, Any]:
        self._bump("CarePlan")
        return {
            "resourceType": "CarePlan",
            "id": self.ids.next(),
            "status": self.rng.choice(("active", "active", "completed")),
            "intent": "plan",
            "category": [cc(f"{CS}/calaim-program", "ecm", "Enhanced Care Management")],
            "title": "ECM care plan",
            "description": f"Care plan for {population[1].lower()}",
            "subject": ref("Patient", pid),
            "period": {"start": enrolled},
            "author": ref("Organization", provider),
            "contributor": [ref("Practitioner", manager)],
        }

    def encounter(
        self, pid: str, provider: str, manager: str, population: tuple[str, str, str, str]
    ) -> dict[str, Any]:
        rng = self.rng
        size = self.designed("encounter-service-provider", "Encounter")
        service_provider = (
            self.designed_orgs[("encounter-service-provider", size)]
            if size is not None
            else provider
        )
        window = self.designed("encounter-date", "Encounter")
        self._bump("Encounter")
        if window is not None:
            _, first, days = DESIGNED_WINDOWS[self.plan.sizes.index(window)]
            day = _day(rng, first, days)
        else:
            day = _day(rng, (2019, 1, 1), 6 * 365)
        hour = rng.randint(16, 22)  # UTC: 08:00-15:00 in California, the same calendar day
        minutes = rng.choice((30, 45, 60))
        end_h, end_m = hour + minutes // 60, minutes % 60
        in_person = rng.random() < 0.6
        return {
            "resourceType": "Encounter",
            "id": self.ids.next(),
            "status": "finished",
            "class": coding(
                "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "FLD" if in_person else "VR",
                "field" if in_person else "virtual",
            ),
            "type": [
                cc(
                    f"{CS}/ecm-encounter-type",
                    rng.choice(("outreach", "care-coordination", "assessment")),
                    None,
                )
            ],
            "subject": ref("Patient", pid),
            "participant": [{"individual": ref("Practitioner", manager)}],
            "period": {
                "start": f"{day}T{hour:02d}:00:00Z",
                "end": f"{day}T{end_h:02d}:{end_m:02d}:00Z",
            },
            "reasonCode": [cc(ICD10, population[2], population[3])],
            "serviceProvider": ref("Organization", service_provider),
        }

    def condition(self, pid: str, manager: str, enrolled: str) -> dict[str, Any]:
        rng = self.rng
        self._bump("Condition")
        code, display = rng.choice(CONDITIONS)
        return {
            "resourceType": "Condition",
            "id": self.ids.next(),
            "clinicalStatus": cc(
                "http://terminology.hl7.org/CodeSystem/condition-clinical",
                rng.choice(("active", "active", "resolved")),
            ),
            "verificationStatus": cc(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
            ),
            "category": [
                cc(
                    "http://terminology.hl7.org/CodeSystem/condition-category",
                    "problem-list-item",
                    "Problem List Item",
                )
            ],
            "code": cc(ICD10, code, display),
            "subject": ref("Patient", pid),
            "onsetDateTime": f"{rng.randint(2005, 2023)}-{rng.randint(1, 12):02d}",
            "recordedDate": enrolled,
            "recorder": ref("Practitioner", manager),
        }

    def observation(
        self, pid: str, manager: str, provider: str, encounters: list[str]
    ) -> dict[str, Any]:
        rng = self.rng
        code_size = self.designed("observation-code", "Observation")
        text_size = self.designed("observation-value-string", "Observation")
        self._bump("Observation")
        code, display, category, kind, unit = weighted(rng, OBSERVATIONS, OBS_WEIGHTS)
        if code_size is not None:
            code_cc = cc(BENCH_CODES, f"designed-{code_size}", f"Designed code ({code_size})")
        else:
            code_cc = cc(LOINC, code, display)
        day = _day(rng, (2021, 1, 1), 4 * 365)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.ids.next(),
            "status": "final",
            "category": [
                cc("http://terminology.hl7.org/CodeSystem/observation-category", category)
            ],
            "code": code_cc,
            "subject": ref("Patient", pid),
            "effectiveDateTime": f"{day}T{rng.randint(16, 23):02d}:{rng.randint(0, 59):02d}:00Z",
            "performer": [
                ref("Practitioner", manager)
                if rng.random() < 0.8
                else ref("Organization", provider)
            ],
        }
        if encounters:
            obs["encounter"] = ref("Encounter", rng.choice(encounters))
        if text_size is not None:
            obs["valueString"] = DESIGNED_TEXTS[self.plan.sizes.index(text_size)][0]
        elif kind == "qty":
            value = round(rng.uniform(*_RANGES.get(code, (1.0, 100.0))), 1)
            obs["valueQuantity"] = {
                "value": value,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            }
        elif kind == "cc":
            answer, answer_display = rng.choice(ANSWERS)
            obs["valueCodeableConcept"] = cc(LOINC, answer, answer_display)
        else:
            obs["valueString"] = rng.choice(FREE_TEXT)
        return obs

    def resources(self) -> Iterator[dict[str, Any]]:
        yield from self.organisations()
        yield from self.practitioner_resources()
        for number, m in enumerate(self.plan.members, start=1):
            yield from self.member(number, m)


_RANGES = {
    "8867-4": (50.0, 120.0),
    "8480-6": (95.0, 180.0),
    "29463-7": (40.0, 160.0),
    "39156-5": (16.0, 48.0),
    "4548-4": (4.5, 12.5),
    "2339-0": (60.0, 350.0),
    "44261-6": (0.0, 27.0),
}


# -- queries -----------------------------------------------------------------------------------


def designed_query(plan: Plan, series: Series, size: int, orgs: dict[tuple[str, int], str]) -> str:
    i = plan.sizes.index(size)
    if series.name == "observation-code":
        value = f"designed-{size}"
    elif series.kind == "reference":
        value = f"Organization/{orgs[(series.name, size)]}"
    elif series.name == "encounter-date":
        value = DESIGNED_WINDOWS[i][0]
    elif series.name == "observation-value-string":
        value = DESIGNED_TEXTS[i][1]
    else:  # patient-family
        value = DESIGNED_FAMILIES[i].lower()
    return f"{series.type}?{series.param}={value.replace(' ', '%20')}"


def queries(plan: Plan, gen: Generator) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for series in SERIES:
        for size in plan.series_sizes[series.name]:
            base = designed_query(plan, series, size, gen.designed_orgs)
            out.append(
                {
                    "name": f"{series.name}-{size}",
                    "kind": series.kind,
                    "series": series.name,
                    "primary": series.primary,
                    "size": size,
                    "path": f"{base}&_count=20",
                    "expected_total": size,
                    "expected_page": min(size, 20),
                }
            )
    extras: list[dict[str, Any]] = []
    if 20 in plan.series_sizes["task-owner"]:
        base = designed_query(plan, SERIES[4], 20, gen.designed_orgs)
        extras.append(
            {
                "name": "include-task-focus-20",
                "kind": "include",
                "series": "task-owner",
                "primary": True,
                "size": 20,
                "baseline": "task-owner-20",
                "path": f"{base}&_count=20&_include=Task:focus",
                "expected_total": 20,
                "expected_page": 20,
                "expected_included": 20,
            }
        )
    for series in SERIES:
        if not series.primary:
            continue
        largest = max(plan.series_sizes[series.name], default=0)
        if largest >= 10_000:
            base = designed_query(plan, series, largest, gen.designed_orgs)
            extras.append(
                {
                    "name": f"total-{series.name}-{largest}",
                    "kind": "total",
                    "series": series.name,
                    "primary": True,
                    "size": largest,
                    "baseline": f"{series.name}-{largest}",
                    "path": f"{base}&_count=20&_total=accurate",
                    "expected_total": largest,
                    "expected_page": 20,
                }
            )
    return {
        "seed": plan.seed,
        "total": plan.total,
        "members": len(plan.members),
        "counts": plan.counts,
        "sizes": list(plan.sizes),
        "series": [
            {
                "name": s.name,
                "kind": s.kind,
                "type": s.type,
                "param": s.param,
                "primary": s.primary,
                "note": s.note,
                "type_count": plan.counts[s.type],
                "sizes": list(plan.series_sizes[s.name]),
                "dropped_sizes": list(plan.dropped[s.name]),
            }
            for s in SERIES
        ],
        "queries": out + extras,
        # a small Task ready for POST (create benchmark) and the quick "does search work" probe
        "probe": out[0]["path"] if out else None,
    }


# -- writing and verifying ---------------------------------------------------------------------


def write(plan: Plan, out: Path) -> dict[str, Any]:
    gen = Generator(plan)
    files, written = write_ndjson(gen.resources(), out, report_every=100_000)
    assert written == plan.total, (written, plan.total)
    for type, count in plan.counts.items():
        if type not in ("Organization", "Practitioner"):
            assert gen.index[type] == count, (type, gen.index[type], count)
    meta = queries(plan, gen)
    meta["files"] = files
    # a Task as a client would POST it (no id): the body of the create benchmark
    meta["create_body"] = {k: v for k, v in (gen.first_task or {}).items() if k != "id"}
    (out / "queries.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return meta


def _refs(resource: dict[str, Any], *path: str) -> list[str]:
    value: Any = resource
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    items = value if isinstance(value, list) else [value] if value else []
    return [i.get("reference", "") for i in items if isinstance(i, dict)]


def verify(directory: Path) -> int:
    """Count every designed query's matches by reading the data (independently of the
    server) and compare with ``queries.json``. Returns the number of mismatches."""
    meta = orjson.loads((directory / "queries.json").read_bytes())
    sizes = meta["sizes"]
    counters: dict[str, int] = {}
    types: dict[str, int] = {}

    def bump(name: str) -> None:
        counters[name] = counters.get(name, 0) + 1

    windows = {
        size: (DESIGNED_WINDOWS[i][1], DESIGNED_WINDOWS[i][2]) for i, size in enumerate(sizes)
    }
    day_sets = {}
    for size, (first, days) in windows.items():
        day_sets[size] = {_day_n(first, n) for n in range(days)}
    ids: set[str] = set()
    for r in resources(directory):
        t = r["resourceType"]
        types[t] = types.get(t, 0) + 1
        key = f"{t}/{r['id']}"
        if key in ids:
            print(f"verify: duplicate id {key}", file=sys.stderr)
            return 1
        ids.add(key)
        if t == "Observation":
            code = r["code"]["coding"][0]["code"]
            if code.startswith("designed-"):
                bump(f"observation-code-{code[9:]}")
            text = fold(r.get("valueString", ""))
            for i, (_, query) in enumerate(DESIGNED_TEXTS[: len(sizes)]):
                if text.startswith(fold(query)):
                    bump(f"observation-value-string-{sizes[i]}")
        elif t == "Encounter":
            for reference in _refs(r, "serviceProvider"):
                if reference.startswith("Organization/bench-encounter-"):
                    bump(f"encounter-service-provider-{reference.rsplit('-', 1)[1]}")
            day = r["period"]["start"][:10]
            for size, window in day_sets.items():
                if day in window and r["period"]["end"][:10] == day:
                    bump(f"encounter-date-{size}")
        elif t == "Task":
            for reference in _refs(r, "owner"):
                if reference.startswith("Organization/bench-task-"):
                    bump(f"task-owner-{reference.rsplit('-', 1)[1]}")
        elif t == "Patient":
            for name in r["name"]:
                for i, family in enumerate(DESIGNED_FAMILIES[: len(sizes)]):
                    if fold(name.get("family", "")).startswith(fold(family)):
                        bump(f"patient-family-{sizes[i]}")
    bad = 0
    for q in meta["queries"]:
        if q["kind"] in ("include", "total"):
            continue
        got = counters.get(q["name"], 0)
        if got != q["expected_total"]:
            print(
                f"verify: {q['name']}: {got} in the data, {q['expected_total']} designed",
                file=sys.stderr,
            )
            bad += 1
    if types != meta["counts"]:
        print(f"verify: type counts {types} != {meta['counts']}", file=sys.stderr)
        bad += 1
    print(
        f"verify: {sum(types.values()):,} resources, {len(meta['queries'])} queries, "
        f"{bad} mismatch(es)",
        file=sys.stderr,
    )
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, help="resources to generate, e.g. 1000000")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="designed match-set sizes, comma-separated (at most 4)",
    )
    parser.add_argument(
        "--verify",
        type=Path,
        metavar="DIR",
        help="recount the designed matches of a generated folder",
    )
    args = parser.parse_args()
    if args.verify:
        raise SystemExit(1 if verify(args.verify) else 0)
    if not args.total or not args.out:
        parser.error("--total and --out are required (or --verify DIR)")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if len(sizes) > len(DESIGNED_WINDOWS) or sorted(set(sizes)) != list(sizes):
        parser.error(f"--sizes: at most {len(DESIGNED_WINDOWS)} distinct increasing sizes")
    _check_vocabularies()
    started = time.monotonic()
    plan = make_plan(args.total, args.seed, sizes)
    meta = write(plan, args.out)
    print(
        f"generate: {args.total:,} resources, {meta['members']:,} members in "
        f"{time.monotonic() - started:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    for q in meta["queries"]:
        print(f"  {q['expected_total']:>7}  {q['path']}")


if __name__ == "__main__":
    main()
