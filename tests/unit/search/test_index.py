"""Index rows of whole resources, as a search will read them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from server.fhir.definitions import r4_search_parameters
from server.search.index import Indexer
from server.search.registry import Registry, load_registry
from server.search.rows import IndexRows

LA = ZoneInfo("America/Los_Angeles")
BASE = "https://fhir.example.org/fhir"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"

RACE_PARAM = {
    "resourceType": "SearchParameter",
    "url": "http://hl7.org/fhir/us/core/SearchParameter/us-core-race",
    "code": "race",
    "base": ["Patient"],
    "type": "token",
    "expression": f"Patient.extension.where(url = '{RACE}').extension.value.code",
}


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, tz: Any = UTC) -> int:
    """Microseconds since the epoch of a wall-clock time in ``tz``."""
    moment = datetime(year, month, day, hour, minute, tzinfo=tz)
    return round(moment.timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def indexer() -> Indexer:
    registry = Registry(r4_search_parameters(), [RACE_PARAM])
    return Indexer(registry, BASE, LA)


def of(rows: list[Any], key: str) -> list[Any]:
    return [row for row in rows if row[0] == key]


def keys(out: IndexRows) -> set[str]:
    return {str(row[0]) for rows in out.tables().values() for row in rows}


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "lastUpdated": "2024-05-01T10:00:00Z",
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|3.1.1"],
        "tag": [{"system": "http://example.org/tags", "code": "calaim"}],
        "source": "urn:uuid:8d1f3a52-2a8e-4b1e-9f0a-5c6f7e8d9a0b",
    },
    "extension": [
        {
            "url": RACE,
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238",
                        "code": "2106-3",
                        "display": "White",
                    },
                },
                {"url": "text", "valueString": "White"},
            ],
        }
    ],
    "identifier": [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:2.16.840.1.113883.3.0",
            "value": "MRN-1",
        },
        {"system": "https://medi-cal.ca.gov/cin", "value": "91234567A"},
    ],
    "active": True,
    "name": [{"use": "official", "family": "Nuñez", "given": ["Zoë", "Ann"]}],
    "telecom": [
        {"system": "phone", "value": "916-555-0100", "use": "home"},
        {"system": "email", "value": "zoe@example.org"},
    ],
    "gender": "female",
    "birthDate": "1980-02-29",
    "address": [
        {
            "use": "home",
            "line": ["1 Main St"],
            "city": "Sacramento",
            "state": "CA",
            "postalCode": "95814",
            "country": "US",
        }
    ],
    "generalPractitioner": [{"reference": "Practitioner/dr1"}],
    "managingOrganization": {"reference": f"{BASE}/Organization/org1"},
}


def test_patient_rows(indexer: Indexer) -> None:
    out = indexer.rows("Patient", PATIENT)
    assert of(out.token, "identifier") == [
        ("identifier", 0, "urn:oid:2.16.840.1.113883.3.0", "MRN-1"),
        ("identifier", 0, "https://medi-cal.ca.gov/cin", "91234567A"),
    ]
    assert of(out.token, "identifier:of-type") == [
        (
            "identifier:of-type",
            0,
            "",
            "http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN-1",
        )
    ]
    assert of(out.string, "name") == [
        ("name", 0, "nunez", "Nuñez"),
        ("name", 0, "zoe", "Zoë"),
        ("name", 0, "ann", "Ann"),
    ]
    assert of(out.string, "family") == [("family", 0, "nunez", "Nuñez")]
    assert of(out.string, "given") == [("given", 0, "zoe", "Zoë"), ("given", 0, "ann", "Ann")]
    assert of(out.string, "address-city") == [("address-city", 0, "sacramento", "Sacramento")]
    assert [row[3] for row in of(out.string, "address")] == [
        "1 Main St",
        "Sacramento",
        "CA",
        "95814",
        "US",
    ]
    assert of(out.token, "address-use") == [
        ("address-use", 0, "http://hl7.org/fhir/address-use", "home")
    ]
    assert of(out.date, "birthdate") == [
        ("birthdate", 0, us(1980, 2, 29, tz=LA), us(1980, 3, 1, tz=LA))
    ]
    assert of(out.token, "gender") == [
        ("gender", 0, "http://hl7.org/fhir/administrative-gender", "female")
    ]
    assert of(out.token, "active") == [("active", 0, "", "true")]
    assert of(out.token, "phone") == [("phone", 0, "", "916-555-0100")]
    assert of(out.token, "email") == [("email", 0, "", "zoe@example.org")]
    assert of(out.token, "telecom") == [
        ("telecom", 0, "", "916-555-0100"),
        ("telecom", 0, "", "zoe@example.org"),
    ]
    assert of(out.reference, "general-practitioner") == [
        ("general-practitioner", 0, "Practitioner", "dr1", "")
    ]
    assert of(out.reference, "organization") == [("organization", 0, "Organization", "org1", "")]


def test_custom_parameter_indexes_an_extension(indexer: Indexer) -> None:
    out = indexer.rows("Patient", PATIENT)
    # the US Core expression ends in ``.code``: the code primitive, without its system
    assert of(out.token, "race") == [("race", 0, "", "2106-3")]


def test_meta_parameters_come_from_meta(indexer: Indexer) -> None:
    out = indexer.rows("Patient", PATIENT)
    assert of(out.token, "_tag") == [("_tag", 0, "http://example.org/tags", "calaim")]
    assert of(out.uri, "_profile") == [
        ("_profile", 0, "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient")
    ]
    assert of(out.uri, "_source") == [
        ("_source", 0, "urn:uuid:8d1f3a52-2a8e-4b1e-9f0a-5c6f7e8d9a0b")
    ]


def test_column_parameters_have_no_rows(indexer: Indexer) -> None:
    out = indexer.rows("Patient", PATIENT)
    assert not {"_id", "_lastUpdated"} & keys(out)


def test_rows_are_deduplicated(indexer: Indexer) -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Lee", "given": ["Ana"]}, {"family": "Lee", "given": ["Ana"]}],
    }
    out = indexer.rows("Patient", patient)
    assert of(out.string, "family") == [("family", 0, "lee", "Lee")]
    assert of(out.string, "name") == [("name", 0, "lee", "Lee"), ("name", 0, "ana", "Ana")]


TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "t1",
    "status": "in-progress",
    "intent": "order",
    "businessStatus": {"text": "Waiting for client"},
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "focus": {"reference": "ServiceRequest/sr1"},
    "for": {"reference": "Patient/p1"},
    "authoredOn": "2024-05-01T09:30:00-07:00",
    "lastModified": "2024-05-02T10:00:00.250Z",
    "requester": {"reference": "Organization/cbo1"},
    "owner": {
        "reference": "https://other.example.org/fhir/Organization/x",
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
    },
    "executionPeriod": {"start": "2024-05-01", "end": "2024-05-03"},
    "output": [
        {"type": {"text": "result"}, "valueReference": {"reference": "Procedure/proc1"}},
        {"type": {"text": "note"}, "valueString": "done"},
        {"type": {"text": "inline"}, "valueReference": {"reference": "#c1"}},
    ],
}


def test_task_rows(indexer: Indexer) -> None:
    out = indexer.rows("Task", TASK)
    assert of(out.token, "status") == [
        ("status", 0, "http://hl7.org/fhir/task-status", "in-progress")
    ]
    # Task.intent's ValueSet (task-intent) draws its codes from request-intent too: no system
    assert of(out.token, "intent") == [("intent", 0, "", "order")]
    assert of(out.token, "code") == [
        ("code", 0, "http://hl7.org/fhir/CodeSystem/task-code", "fulfill")
    ]
    assert of(out.string, "business-status:text") == [
        ("business-status:text", 0, "waiting for client", "Waiting for client")
    ]
    assert of(out.reference, "focus") == [("focus", 0, "ServiceRequest", "sr1", "")]
    assert of(out.reference, "subject") == [("subject", 0, "Patient", "p1", "")]
    assert of(out.reference, "patient") == [("patient", 0, "Patient", "p1", "")]
    assert of(out.reference, "requester") == [("requester", 0, "Organization", "cbo1", "")]
    assert of(out.reference, "owner") == [
        ("owner", 0, "", "", "https://other.example.org/fhir/Organization/x")
    ]
    assert of(out.token, "owner:identifier") == [
        ("owner:identifier", 0, "http://hl7.org/fhir/sid/us-npi", "1234567893")
    ]
    assert of(out.reference, "output") == []  # an R4 registry has no Task output parameter
    start = us(2024, 5, 1, 16, 30)
    assert of(out.date, "authored-on") == [("authored-on", 0, start, start + 1_000_000)]
    modified = us(2024, 5, 2, 10) + 250_000
    assert of(out.date, "modified") == [("modified", 0, modified, modified + 1_000)]
    assert of(out.date, "period") == [("period", 0, us(2024, 5, 1, tz=LA), us(2024, 5, 4, tz=LA))]


def test_task_for_a_group_is_no_patient(indexer: Indexer) -> None:
    out = indexer.rows("Task", {**TASK, "for": {"reference": "Group/g1"}})
    assert of(out.reference, "subject") == [("subject", 0, "Group", "g1", "")]
    assert of(out.reference, "patient") == []


OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01T09:30:00Z",
    "valueQuantity": {"value": 100, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8478-0"}]},
            "dataAbsentReason": {"text": "not measured"},
        },
    ],
}


def quantity(key: str, grp: int, value: float) -> tuple[str, int, str, str, str, float, float]:
    return (key, grp, UCUM, "mm[Hg]", "mmHg", value, value)


def test_observation_rows(indexer: Indexer) -> None:
    out = indexer.rows("Observation", OBSERVATION)
    assert of(out.quantity, "value-quantity") == [quantity("value-quantity", 0, 100.0)]
    assert of(out.quantity, "component-value-quantity") == [
        quantity("component-value-quantity", 0, 120.0),
        quantity("component-value-quantity", 0, 80.0),
    ]
    assert of(out.token, "component-code") == [
        ("component-code", 0, LOINC, "8480-6"),
        ("component-code", 0, LOINC, "8462-4"),
        ("component-code", 0, LOINC, "8478-0"),
    ]
    assert of(out.token, "category") == [
        (
            "category",
            0,
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "vital-signs",
        )
    ]
    assert of(out.string, "code:text") == [("code:text", 0, "blood pressure", "Blood pressure")]
    start = us(2024, 5, 1, 9, 30)
    assert of(out.date, "date") == [("date", 0, start, start + 1_000_000)]


def test_composite_rows_group_the_components_of_one_root(indexer: Indexer) -> None:
    out = indexer.rows("Observation", OBSERVATION)
    key = "component-code-value-quantity"
    assert of(out.token, key + "#0") == [
        (key + "#0", 1, LOINC, "8480-6"),
        (key + "#0", 2, LOINC, "8462-4"),
    ]
    assert of(out.quantity, key + "#1") == [
        quantity(key + "#1", 1, 120.0),
        quantity(key + "#1", 2, 80.0),
    ]
    assert of(out.token, "code-value-quantity#0") == [
        ("code-value-quantity#0", 1, LOINC, "85354-9")
    ]
    assert of(out.quantity, "code-value-quantity#1") == [
        quantity("code-value-quantity#1", 1, 100.0)
    ]


def test_composite_roots_of_several_types(indexer: Indexer) -> None:
    out = indexer.rows("Observation", OBSERVATION)
    key = "combo-code-value-quantity"
    assert of(out.token, key + "#0") == [
        (key + "#0", 1, LOINC, "85354-9"),
        (key + "#0", 2, LOINC, "8480-6"),
        (key + "#0", 3, LOINC, "8462-4"),
    ]
    assert [row[1:] for row in of(out.quantity, key + "#1")] == [
        (1, UCUM, "mm[Hg]", "mmHg", 100.0, 100.0),
        (2, UCUM, "mm[Hg]", "mmHg", 120.0, 120.0),
        (3, UCUM, "mm[Hg]", "mmHg", 80.0, 80.0),
    ]


def test_composite_components_keep_only_their_own_rows(indexer: Indexer) -> None:
    out = indexer.rows("Observation", OBSERVATION)
    assert not [key for key in keys(out) if "#" in key and ":" in key]


def test_composite_without_every_component_has_no_rows(indexer: Indexer) -> None:
    observation = {**OBSERVATION}
    del observation["valueQuantity"]
    out = indexer.rows("Observation", observation)
    assert not [key for key in keys(out) if key.startswith("code-value-quantity#")]


ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "e1",
    "status": "finished",
    "class": {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "AMB",
    },
    "subject": {"reference": "Patient/p1"},
    "participant": [{"individual": {"reference": "Practitioner/dr1"}}],
    "period": {"start": "2024-05-01T09:00:00-07:00", "end": "2024-05-01T09:45:00-07:00"},
    "length": {"value": 45, "unit": "min", "system": UCUM, "code": "min"},
}


def test_encounter_rows(indexer: Indexer) -> None:
    out = indexer.rows("Encounter", ENCOUNTER)
    assert of(out.date, "date") == [
        ("date", 0, us(2024, 5, 1, 16), us(2024, 5, 1, 16, 45) + 1_000_000)
    ]
    assert of(out.token, "class") == [
        ("class", 0, "http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB")
    ]
    assert of(out.reference, "patient") == [("patient", 0, "Patient", "p1", "")]
    assert of(out.reference, "practitioner") == [("practitioner", 0, "Practitioner", "dr1", "")]
    assert of(out.reference, "participant") == [("participant", 0, "Practitioner", "dr1", "")]
    assert of(out.quantity, "length") == [("length", 0, UCUM, "min", "min", 45.0, 45.0)]


def test_open_period_reaches_the_far_future(indexer: Indexer) -> None:
    encounter = {**ENCOUNTER, "period": {"start": "2024-05-01"}}
    out = indexer.rows("Encounter", encounter)
    assert of(out.date, "date") == [("date", 0, us(2024, 5, 1, tz=LA), 2**62)]


COVERAGE: dict[str, Any] = {
    "resourceType": "Coverage",
    "id": "c1",
    "status": "active",
    "identifier": [{"system": "https://medi-cal.ca.gov/cin", "value": "91234567A"}],
    "type": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PUBLICPOL"}
        ]
    },
    "subscriber": {"reference": "Patient/p1"},
    "beneficiary": {"reference": "Patient/p1"},
    "dependent": "01",
    "payor": [{"reference": "Organization/dhcs"}, {"display": "unnamed payer"}],
    "class": [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                        "code": "plan",
                    }
                ]
            },
            "value": "Medi-Cal Managed Care",
        }
    ],
}


def test_coverage_rows(indexer: Indexer) -> None:
    out = indexer.rows("Coverage", COVERAGE)
    assert of(out.token, "status") == [("status", 0, "http://hl7.org/fhir/fm-status", "active")]
    assert of(out.reference, "beneficiary") == [("beneficiary", 0, "Patient", "p1", "")]
    assert of(out.reference, "patient") == [("patient", 0, "Patient", "p1", "")]
    assert of(out.reference, "payor") == [("payor", 0, "Organization", "dhcs", "")]
    assert of(out.string, "class-value") == [
        ("class-value", 0, "medi-cal managed care", "Medi-Cal Managed Care")
    ]
    assert of(out.string, "dependent") == [("dependent", 0, "01", "01")]
    assert of(out.token, "class-type") == [
        ("class-type", 0, "http://terminology.hl7.org/CodeSystem/coverage-class", "plan")
    ]
    assert of(out.token, "type") == [
        ("type", 0, "http://terminology.hl7.org/CodeSystem/v3-ActCode", "PUBLICPOL")
    ]


def test_odd_data_produces_no_rows_and_no_error(indexer: Indexer) -> None:
    odd = {
        "resourceType": "Patient",
        "name": "not a list",
        "birthDate": "1980-02-30",
        "identifier": [{"value": 5}],
        "generalPractitioner": [{"reference": "not a reference at all"}],
        "address": [None, 3],
    }
    out = indexer.rows("Patient", odd)
    assert not {"birthdate", "identifier", "general-practitioner", "address"} & keys(out)


def test_unknown_type_has_no_rows(indexer: Indexer) -> None:
    assert indexer.rows("NotAType", {"resourceType": "NotAType"}).count() == 0


def test_parameter_that_cannot_compile_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/broken",
        "code": "broken",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.name.(((",
    }
    registry = Registry(r4_search_parameters(), [broken])
    indexer = Indexer(registry, BASE, LA)
    with caplog.at_level(logging.WARNING, logger="server.search.index"):
        first = indexer.rows("Patient", PATIENT)
        second = indexer.rows("Patient", PATIENT)
    assert "broken" not in keys(first) | keys(second)
    assert of(first.string, "family") == [("family", 0, "nunez", "Nuñez")]
    warnings = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(warnings) == 1


def test_shipped_registry_indexes_task_output_references() -> None:
    shipped = Indexer(load_registry(), BASE, LA)
    out = shipped.rows("Task", TASK)
    assert of(out.reference, "output") == [("output", 0, "Procedure", "proc1", "")]
