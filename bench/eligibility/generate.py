"""A deterministic synthetic Medi-Cal population for the ``$ecm-eligibility`` benchmark.

    .venv/bin/python bench/eligibility/generate.py --members 20000 --out DIR [--seed 5]

Writes ``DIR/resources-NNNNN.ndjson`` (one resource a line, load order: the shared
Organizations and Practitioners, then member by member), ``DIR/patients.txt`` (the Patient ids)
and ``DIR/meta.json`` (counts per type, ``asOf``, the files). The same seed and member count
always give byte-identical files.

Each member has about 50 resources, dated over the two years up to ``asOf`` (2024-09-30):

* a Patient (birthDate, gender, US Core race and ethnicity extensions, Medi-Cal CIN);
* a Medi-Cal managed care Coverage (type ``urn:oid:2.16.840.1.113883.3.221.5|21``, payor the
  shared plan Organization) active on ``asOf``; one member in ten also has an ended one;
* Encounters: mostly ambulatory (v3-ActCode ``AMB``), some ED visits (``EMER``) and a few
  inpatient stays (``IMP``, priority ``EM`` or ``EL``); a few "high utilisers" with clusters of
  ED visits or unplanned stays in the last months;
* Conditions: common chronic and acute ICD-10-CM codes, and for some members serious mental
  illness or substance use (F20.9, F31.9, F10.20, ...), social factors (Z56.0, Z59.41, ...),
  homelessness (Z59.0x), pregnancy (Z33.1) or a delivery (O80);
* Observations: vital signs (heart rate, blood pressure, weight, BMI, temperature) at the
  encounters, a few homelessness findings, and eligibility attestations (profile
  ``ecm-eligibility-attestation``, performer a care manager, ``valueBoolean``);
* EpisodeOfCare program enrolments for some (``smhs``, ``dmc-ods``, ``foster-care``,
  ``adoption-assistance``, ``hospice``, ``plan-case-management``, ``chw-services``, ``mssp``,
  ``county-tcm``, ``correctional-facility``).

The mix is meant to look like a plan's membership: on ``asOf`` roughly one member in ten is
eligible for some Population of Focus, a larger share needs an attestation, and a few are
excluded (hospice, duplicative programs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import write_ndjson  # noqa: E402

AS_OF = dt.date(2024, 9, 30)
ID_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: base of the time-ordered ids

BASE = "http://calaim-fhir.org/fhir"
PROGRAM = f"{BASE}/CodeSystem/ecm-program"
CRITERION = f"{BASE}/CodeSystem/ecm-eligibility-criterion"
FINDING = f"{BASE}/CodeSystem/ecm-eligibility-finding"
ATTESTATION = f"{BASE}/StructureDefinition/ecm-eligibility-attestation"
SID = "https://calaim-fhir.org/fhir/sid"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
OMB = "urn:oid:2.16.840.1.113883.6.238"
SOP = "urn:oid:2.16.840.1.113883.3.221.5"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TZ = ("-07:00", "-08:00")  # PDT / PST, picked by month below

RACES = (  # (OMB code, display, weight %)
    ("2106-3", "White", 38),
    ("2054-5", "Black or African American", 10),
    ("2028-9", "Asian", 13),
    ("1002-5", "American Indian or Alaska Native", 2),
    ("2076-8", "Native Hawaiian or Other Pacific Islander", 1),
    ("2131-1", "Other Race", 26),
    ("UNK", "Unknown", 10),
)
CHRONIC = (
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("N18.3", "Chronic kidney disease, stage 3"),
)
ACUTE = (
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("M54.50", "Low back pain, unspecified"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("R51.9", "Headache, unspecified"),
    ("L30.9", "Dermatitis, unspecified"),
    ("H66.90", "Otitis media, unspecified"),
    ("Z00.00", "Encounter for general adult medical examination"),
)
SMI_SUD = (
    ("F20.9", "Schizophrenia, unspecified"),
    ("F31.9", "Bipolar disorder, unspecified"),
    ("F33.2", "Major depressive disorder, recurrent severe without psychotic features"),
    ("F43.10", "Post-traumatic stress disorder, unspecified"),
    ("F10.20", "Alcohol dependence, uncomplicated"),
    ("F11.20", "Opioid dependence, uncomplicated"),
    ("F15.20", "Other stimulant dependence, uncomplicated"),
)
MILD_MH = (
    ("F41.1", "Generalized anxiety disorder"),
    ("F32.9", "Major depressive disorder, single episode, unspecified"),
    ("F90.9", "Attention-deficit hyperactivity disorder, unspecified type"),
)
SOCIAL = (
    ("Z56.0", "Unemployment, unspecified"),
    ("Z59.41", "Food insecurity"),
    ("Z60.2", "Problems related to living alone"),
    ("Z63.8", "Other specified problems related to primary support group"),
    ("Z59.1", "Inadequate housing"),
)
HOMELESS = (
    ("Z59.00", "Homelessness, unspecified"),
    ("Z59.01", "Sheltered homelessness"),
    ("Z59.02", "Unsheltered homelessness"),
)
HOMELESS_FINDINGS = ("place-not-for-habitation", "living-in-shelter", "imminent-housing-loss")
AMB_TYPES = (
    ("185349003", "Encounter for check up"),
    ("390906007", "Follow-up encounter"),
    ("185345009", "Encounter for symptom"),
    ("410620009", "Well child visit"),
)
VITALS = (  # (LOINC, display, unit, low, high, decimals)
    ("8867-4", "Heart rate", "/min", 55, 110, 0),
    ("29463-7", "Body weight", "kg", 20, 130, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 16, 42, 1),
    ("8310-5", "Body temperature", "Cel", 36.1, 38.4, 1),
    ("9279-1", "Respiratory rate", "/min", 12, 24, 0),
)
PROGRAMS = {  # code -> display
    "smhs": "Specialty mental health services",
    "dmc-ods": "Drug Medi-Cal Organized Delivery System",
    "foster-care": "Foster care",
    "adoption-assistance": "Adoption assistance",
    "hospice": "Hospice",
    "plan-case-management": "Plan case management",
    "chw-services": "Community Health Worker services",
    "mssp": "Multipurpose Senior Services Program",
    "county-tcm": "County targeted case management",
    "correctional-facility": "Correctional facility",
    "ccs": "California Children's Services",
}


class Ids:
    """Time-ordered UUIDs (48 bits of milliseconds, then random; like the server's own), one
    millisecond apart in generation order, so ids sort in load order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seq = 0

    def next(self) -> str:
        self.seq += 1
        value = (ID_EPOCH_MS + self.seq) << 80 | self.rng.getrandbits(80)
        value = (value & ~((0xF << 76) | (0x3 << 62))) | (0x7 << 76) | (0x2 << 62)
        return str(uuid.UUID(int=value))


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if display:
        concept["text"] = display
    return concept


def ref(type: str, id: str) -> dict[str, str]:
    return {"reference": f"{type}/{id}"}


def months_before(day: dt.date, months: int) -> dt.date:
    y, m = divmod(day.year * 12 + day.month - 1 - months, 12)
    m += 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(y, m, min(d, day.day))
        except ValueError:
            continue
    raise AssertionError


def moment(day: dt.date, rng: random.Random) -> str:
    """A local dateTime on ``day`` with California's offset of that season."""
    offset = TZ[0] if 3 < day.month < 11 else TZ[1]
    return (
        f"{day.isoformat()}T{rng.randint(7, 18):02d}:{rng.choice((0, 15, 30, 45)):02d}:00{offset}"
    )


def later(moment_text: str, hours: int) -> str:
    day, rest = moment_text.split("T")
    hour = int(rest[:2]) + hours
    if hour < 24:
        return f"{day}T{hour:02d}{rest[2:]}"
    return moment_text


class Member:
    """What one member is about: drawn once, then turned into resources."""

    def __init__(self, rng: random.Random) -> None:
        r = rng.random
        self.youth = r() < 0.38
        age = rng.randint(0, 20) if self.youth else min(int(rng.triangular(21, 90, 35)), 89)
        self.birth = AS_OF - dt.timedelta(days=age * 365 + rng.randint(1, 364) + age // 4)
        self.age = age
        self.female = r() < 0.53
        self.homeless = r() < 0.05
        self.utiliser = r() < 0.035
        self.smi = r() < 0.07 and age >= 12
        self.social = r() < 0.14 or (self.smi and r() < 0.5)
        self.pregnant = self.female and 15 <= age <= 44 and r() < 0.07
        self.delivered = self.female and 16 <= age <= 44 and not self.pregnant and r() < 0.04
        self.foster = self.youth and r() < 0.025
        self.adoption = self.youth and age < 18 and r() < 0.006
        self.hospice = age >= 65 and r() < 0.03
        self.pcm = r() < 0.015
        self.chw = r() < 0.01
        self.mssp = age >= 65 and r() < 0.02
        self.tcm = r() < 0.004
        self.jail = not self.youth and r() < 0.01
        self.ccs = self.youth and r() < 0.01
        self.smhs = self.smi and r() < 0.4
        self.old_coverage = r() < 0.1
        self.attest = r() < 0.45  # has judgement criteria attested when it matters
        self.attest_false = r() < 0.08
        race = rng.choices(RACES, weights=[w for *_, w in RACES])[0]
        self.race = race


class Generator:
    def __init__(self, members: int, seed: int) -> None:
        self.members = members
        self.rng = random.Random(seed)
        self.ids = Ids(self.rng)
        self.counts: Counter[str] = Counter()
        self.plan = self.ids.next()
        self.clinics = [self.ids.next() for _ in range(20)]
        self.managers = [self.ids.next() for _ in range(50)]
        self.patient_ids: list[str] = []

    def shared(self) -> Iterator[dict[str, Any]]:
        yield {
            "resourceType": "Organization",
            "id": self.plan,
            "identifier": [{"system": f"{SID}/plan", "value": "golden-poppy"}],
            "active": True,
            "type": [cc("http://terminology.hl7.org/CodeSystem/organization-type", "pay", "Payer")],
            "name": "Golden Poppy Health Plan",
        }
        for n, id in enumerate(self.clinics, 1):
            yield {
                "resourceType": "Organization",
                "id": id,
                "identifier": [{"system": f"{SID}/clinic", "value": f"clinic-{n}"}],
                "active": True,
                "type": [
                    cc(
                        "http://terminology.hl7.org/CodeSystem/organization-type",
                        "prov",
                        "Provider",
                    )
                ],
                "name": f"Valley Community Clinic {n}",
            }
        for n, id in enumerate(self.managers, 1):
            yield {
                "resourceType": "Practitioner",
                "id": id,
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"19{n:08d}"}],
                "active": True,
                "name": [{"family": f"Manager{n}", "given": ["Lead"]}],
            }

    def resources(self) -> Iterator[dict[str, Any]]:
        for resource in self.shared():
            self.counts[resource["resourceType"]] += 1
            yield resource
        for number in range(1, self.members + 1):
            for resource in self.member(number, Member(self.rng)):
                self.counts[resource["resourceType"]] += 1
                yield resource

    # -- one member ------------------------------------------------------------------------

    def member(self, number: int, m: Member) -> Iterator[dict[str, Any]]:
        rng = self.rng
        pid = self.ids.next()
        self.patient_ids.append(pid)
        out: list[dict[str, Any]] = [self.patient(pid, number, m)]
        out.extend(self.coverages(pid, m))
        conditions = self.conditions(pid, m)
        out.extend(conditions)
        dx = [c for c in conditions if c["code"]["coding"][0]["code"][:1] == "F"]
        encounters = self.encounters(pid, m, dx)
        out.extend(encounters)
        out.extend(self.episodes(pid, m))
        out.extend(self.findings(pid, m))
        out.extend(self.attestations(pid, m))
        room = max(6, 50 + rng.randint(-6, 6) - len(out))
        out.extend(self.vitals(pid, m, encounters, room))
        yield from out

    def patient(self, pid: str, number: int, m: Member) -> dict[str, Any]:
        code, display, _ = m.race
        race: dict[str, Any] = {"url": f"{US_CORE}/us-core-race", "extension": []}
        if code != "UNK":
            race["extension"].append(
                {"url": "ombCategory", "valueCoding": coding(OMB, code, display)}
            )
        race["extension"].append({"url": "text", "valueString": display})
        hispanic = self.rng.random() < 0.48
        eth = ("2135-2", "Hispanic or Latino") if hispanic else ("2186-5", "Not Hispanic or Latino")
        return {
            "resourceType": "Patient",
            "id": pid,
            "extension": [
                race,
                {
                    "url": f"{US_CORE}/us-core-ethnicity",
                    "extension": [
                        {"url": "ombCategory", "valueCoding": coding(OMB, *eth)},
                        {"url": "text", "valueString": eth[1]},
                    ],
                },
            ],
            "identifier": [
                {
                    "use": "official",
                    "type": cc(V2_0203, "MA", "Patient Medicaid number"),
                    "system": f"{SID}/medi-cal-cin",
                    "value": f"9{number:07d}{'ABCDEFGH'[number % 8]}",
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": f"Member{number}", "given": ["Bench"]}],
            "gender": "female" if m.female else "male",
            "birthDate": m.birth.isoformat(),
            "address": [{"use": "home", "city": "Fresno", "state": "CA", "postalCode": "93721"}],
        }

    def coverages(self, pid: str, m: Member) -> list[dict[str, Any]]:
        rng = self.rng
        start = max(m.birth, AS_OF - dt.timedelta(days=rng.randint(60, 3000)))
        current = {
            "resourceType": "Coverage",
            "id": self.ids.next(),
            "status": "active",
            "type": cc(SOP, "21", "Medicaid Managed Care"),
            "subscriberId": f"CIN{len(self.patient_ids):08d}",
            "beneficiary": ref("Patient", pid),
            "relationship": cc(
                "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self"
            ),
            "period": {"start": start.isoformat()},
            "payor": [ref("Organization", self.plan)],
        }
        out = [current]
        if m.old_coverage and start - dt.timedelta(days=400) > m.birth:
            end = start - dt.timedelta(days=rng.randint(30, 200))
            out.append(
                {
                    "resourceType": "Coverage",
                    "id": self.ids.next(),
                    "status": "active",
                    "type": cc(SOP, "21", "Medicaid Managed Care"),
                    "beneficiary": ref("Patient", pid),
                    "period": {
                        "start": (end - dt.timedelta(days=365)).isoformat(),
                        "end": end.isoformat(),
                    },
                    "payor": [ref("Organization", self.plan)],
                }
            )
        return out

    def day_within(self, months: int, m: Member) -> dt.date:
        first = max(months_before(AS_OF, months), m.birth)
        return first + dt.timedelta(days=self.rng.randint(0, (AS_OF - first).days))

    def condition(
        self,
        pid: str,
        code: tuple[str, str],
        onset: dt.date,
        *,
        active: bool = True,
        category: str = "problem-list-item",
    ) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self.ids.next(),
            "clinicalStatus": cc(CLINICAL, "active" if active else "resolved"),
            "verificationStatus": cc(VERIFICATION, "confirmed"),
            "category": [cc(CONDITION_CATEGORY, category)],
            "code": cc(ICD, *code),
            "subject": ref("Patient", pid),
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
        }
        if not active:
            resource["abatementDateTime"] = min(onset + dt.timedelta(days=20), AS_OF).isoformat()
        return resource

    def conditions(self, pid: str, m: Member) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        for _ in range(rng.randint(1, 4)):
            out.append(
                self.condition(
                    pid,
                    rng.choice(ACUTE),
                    self.day_within(24, m),
                    active=False,
                    category="encounter-diagnosis",
                )
            )
        if not m.youth or rng.random() < 0.1:
            for code in rng.sample(CHRONIC, rng.choice((0, 0, 1, 1, 2))):
                out.append(self.condition(pid, code, self.day_within(24, m)))
        if rng.random() < 0.12:
            out.append(self.condition(pid, rng.choice(MILD_MH), self.day_within(24, m)))
        if m.smi:
            out.append(self.condition(pid, rng.choice(SMI_SUD), self.day_within(24, m)))
        if m.social:
            out.append(self.condition(pid, rng.choice(SOCIAL), self.day_within(18, m)))
        if m.homeless:
            out.append(self.condition(pid, rng.choice(HOMELESS), self.day_within(10, m)))
        if m.pregnant:
            out.append(
                self.condition(pid, ("Z33.1", "Pregnant state, incidental"), self.day_within(7, m))
            )
        if m.delivered:
            day = self.day_within(11, m)
            out.append(
                self.condition(
                    pid,
                    ("O80", "Encounter for full-term uncomplicated delivery"),
                    day,
                    active=False,
                )
            )
        return out

    def encounter(
        self,
        pid: str,
        day: dt.date,
        klass: str,
        *,
        priority: str | None = None,
        reason: dict[str, Any] | None = None,
        diagnosis: str | None = None,
    ) -> dict[str, Any]:
        rng = self.rng
        start = moment(day, rng)
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": self.ids.next(),
            "status": "finished",
            "class": coding(ACT, klass),
        }
        if klass == "AMB":
            resource["type"] = [cc(SCT, *rng.choice(AMB_TYPES))]
            end = later(start, 1)
        elif klass == "EMER":
            resource["type"] = [cc(SCT, "50849002", "Emergency room admission")]
            end = later(start, 4)
        else:
            resource["type"] = [cc(SCT, "32485007", "Hospital admission")]
            end = (day + dt.timedelta(days=rng.randint(1, 6))).isoformat()
        if priority:
            resource["priority"] = cc(PRIORITY, priority)
        resource["subject"] = ref("Patient", pid)
        resource["period"] = {"start": start, "end": end}
        if reason:
            resource["reasonCode"] = [reason]
        if diagnosis:
            resource["diagnosis"] = [{"condition": ref("Condition", diagnosis)}]
        resource["serviceProvider"] = ref("Organization", rng.choice(self.clinics))
        return resource

    def encounters(self, pid: str, m: Member, dx: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        for _ in range(rng.randint(7, 16)):
            out.append(self.encounter(pid, self.day_within(24, m), "AMB"))
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            out.append(self.encounter(pid, self.day_within(24, m), "EMER"))
        if rng.random() < 0.05:
            out.append(
                self.encounter(
                    pid, self.day_within(24, m), "IMP", priority=rng.choice(("EM", "EL"))
                )
            )
        if m.utiliser:
            if m.youth:
                for _ in range(rng.randint(3, 4)):
                    out.append(self.encounter(pid, self.day_within(12, m), "EMER"))
            elif rng.random() < 0.75:
                for _ in range(rng.randint(5, 7)):
                    out.append(self.encounter(pid, self.day_within(6, m), "EMER"))
            else:
                for _ in range(3):
                    out.append(self.encounter(pid, self.day_within(6, m), "IMP", priority="EM"))
        if dx and rng.random() < 0.3:  # SMH/SUD crisis visits
            condition = dx[0]
            for _ in range(2):
                out.append(
                    self.encounter(
                        pid,
                        self.day_within(12, m),
                        "EMER",
                        reason=condition["code"],
                        diagnosis=condition["id"],
                    )
                )
        out.sort(key=lambda e: e["period"]["start"])
        return out

    def episode(self, pid: str, code: str, start: dt.date, end: dt.date | None) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "EpisodeOfCare",
            "id": self.ids.next(),
            "status": "active" if end is None else "finished",
            "type": [cc(PROGRAM, code, PROGRAMS[code])],
            "patient": ref("Patient", pid),
            "managingOrganization": ref("Organization", self.plan),
            "period": {"start": start.isoformat()},
        }
        if end is not None:
            resource["period"]["end"] = end.isoformat()
        return resource

    def episodes(self, pid: str, m: Member) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        wanted = [
            ("smhs" if rng.random() < 0.6 else "dmc-ods", m.smhs),
            ("foster-care", m.foster),
            ("adoption-assistance", m.adoption),
            ("hospice", m.hospice),
            ("plan-case-management", m.pcm),
            ("chw-services", m.chw),
            ("mssp", m.mssp),
            ("county-tcm", m.tcm),
            ("ccs", m.ccs),
        ]
        for code, wanted_it in wanted:
            if wanted_it:
                out.append(self.episode(pid, code, self.day_within(20, m), None))
        if m.jail:
            start = self.day_within(24, m)
            end = start + dt.timedelta(days=rng.randint(30, 300))
            out.append(
                self.episode(pid, "correctional-facility", start, end if end < AS_OF else None)
            )
        return out

    def findings(self, pid: str, m: Member) -> list[dict[str, Any]]:
        if not m.homeless or self.rng.random() < 0.5:
            return []
        return [
            {
                "resourceType": "Observation",
                "id": self.ids.next(),
                "status": "final",
                "category": [cc(OBS_CATEGORY, "social-history")],
                "code": cc(FINDING, self.rng.choice(HOMELESS_FINDINGS)),
                "subject": ref("Patient", pid),
                "effectiveDateTime": moment(self.day_within(10, m), self.rng),
                "valueBoolean": True,
            }
        ]

    def attestation(self, pid: str, code: str, m: Member, value: bool) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": self.ids.next(),
            "meta": {"profile": [ATTESTATION]},
            "status": "final",
            "code": cc(CRITERION, code),
            "subject": ref("Patient", pid),
            "effectiveDateTime": moment(self.day_within(11, m), self.rng),
            "performer": [ref("Practitioner", self.rng.choice(self.managers))],
            "valueBoolean": value,
            "note": [{"text": "Assessed by the lead care manager."}],
        }

    def attestations(self, pid: str, m: Member) -> list[dict[str, Any]]:
        if not (m.attest or m.attest_false):
            return []
        value = not m.attest_false
        codes = []
        if m.homeless and not m.youth:
            codes.append("complex-need-self-management")
        if m.utiliser:
            codes.append("avoidable-utilization")
        if m.smi:
            codes += ["smhs-dmc-criteria", "high-risk-institutionalization-overdose-suicide"]
        if m.social and not m.youth and m.age >= 60 and self.rng.random() < 0.3:
            codes += ["snf-level-of-care", "community-residence-with-supports"]
        return [self.attestation(pid, code, m, value) for code in codes]

    def vitals(
        self, pid: str, m: Member, encounters: list[dict[str, Any]], count: int
    ) -> list[dict[str, Any]]:
        rng = self.rng
        visits = [e for e in encounters if e["class"]["code"] == "AMB"] or encounters
        out = []
        for n in range(count):
            encounter = visits[n % len(visits)]
            loinc, display, unit, low, high, decimals = VITALS[n % len(VITALS)]
            value = round(rng.uniform(low, high), decimals)
            out.append(
                {
                    "resourceType": "Observation",
                    "id": self.ids.next(),
                    "status": "final",
                    "category": [cc(OBS_CATEGORY, "vital-signs", "Vital Signs")],
                    "code": cc(LOINC, loinc, display),
                    "subject": ref("Patient", pid),
                    "encounter": ref("Encounter", encounter["id"]),
                    "effectiveDateTime": encounter["period"]["start"],
                    "valueQuantity": {
                        "value": int(value) if decimals == 0 else value,
                        "unit": unit,
                        "system": UCUM,
                        "code": unit,
                    },
                }
            )
        return out


def write(members: int, seed: int, out: Path) -> dict[str, Any]:
    gen = Generator(members, seed)
    started = time.monotonic()
    files, written = write_ndjson(gen.resources(), out, report_every=200_000)
    (out / "patients.txt").write_text("\n".join(gen.patient_ids) + "\n")
    meta = {
        "generator": "bench/eligibility/generate.py",
        "seed": seed,
        "members": members,
        "total": written,
        "per_member": round((written - 71) / members, 1),
        "asOf": AS_OF.isoformat(),
        "counts": dict(sorted(gen.counts.items())),
        "files": files,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    meta = write(args.members, args.seed, args.out)
    print(
        orjson.dumps(
            {k: v for k, v in meta.items() if k != "files"}, option=orjson.OPT_INDENT_2
        ).decode()
    )


if __name__ == "__main__":
    main()
