"""Micro-benchmark of base validation: prints µs per resource (not a test; run by hand).

    .venv/bin/python bench/validation_micro.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.fhir.base_validation import base_validator  # noqa: E402

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00Z"},
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"}],
    "active": True,
    "name": [{"use": "official", "family": "Garcia", "given": ["Maria", "Elena"]}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1980-02-29",
    "address": [{"line": ["1 Main St"], "city": "Fresno", "state": "CA", "postalCode": "93701"}],
}

SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "meta": {"profile": ["http://example.org/StructureDefinition/ecm-referral"]},
    "identifier": [{"system": "http://example.org/referrals", "value": "REF-0001"}],
    "status": "active",
    "intent": "order",
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                              "display": "Patient referral"}]}],
    "priority": "routine",
    "code": {"coding": [{"system": "http://example.org/calaim-services", "code": "ECM",
                         "display": "Enhanced Care Management"}],
             "text": "Enhanced Care Management"},
    "subject": {"reference": "Patient/pat-1", "display": "Maria Garcia"},
    "occurrencePeriod": {"start": "2024-05-01", "end": "2024-11-01"},
    "authoredOn": "2024-04-28T09:30:00-07:00",
    "requester": {"reference": "Practitioner/prac-1", "display": "Dr. Chen"},
    "performer": [{"reference": "Organization/org-1", "display": "Community Health Partner"}],
    "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.0",
                                "display": "Homelessness"}]}],
    "supportingInfo": [{"reference": "Condition/cond-1"}],
    "note": [{"authorString": "Care coordinator", "time": "2024-04-28T09:30:00-07:00",
              "text": "Member experiencing homelessness; high utilizer of ED services."}],
    "extension": [{"url": "http://example.org/StructureDefinition/population-of-focus",
                   "valueCodeableConcept": {"coding": [{"system": "http://example.org/pof",
                                                        "code": "homeless"}]}}],
}


def bundle(n: int) -> dict[str, Any]:
    entries = []
    for i in range(n):
        res = dict(PATIENT if i % 2 else SERVICE_REQUEST, id=f"r{i}")
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}", "resource": res,
                        "request": {"method": "POST", "url": res["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def measure(name: str, resource: dict[str, Any], rounds: int) -> None:
    v = base_validator()
    assert v.validate(resource) == [], v.validate(resource)
    start = time.perf_counter()
    for _ in range(rounds):
        v.validate(resource)
    us = (time.perf_counter() - start) / rounds * 1e6
    size = len(orjson.dumps(resource))
    print(f"{name:<28} {size:>7} B  {us:9.1f} µs/resource")


def main() -> None:
    start = time.perf_counter()
    v = base_validator()
    print(f"load schema: {(time.perf_counter() - start) * 1e3:.0f} ms")
    for t in ("Patient", "ServiceRequest", "Bundle"):
        start = time.perf_counter()
        v.validate({"resourceType": t})
        print(f"first use of {t}: {(time.perf_counter() - start) * 1e3:.0f} ms")
    measure("Patient", PATIENT, 20000)
    measure("ServiceRequest", SERVICE_REQUEST, 20000)
    measure("Bundle (100 entries)", bundle(100), 300)
    bad = dict(PATIENT, birthDate="1980-02-30", foo=1, gender="bogus")
    start = time.perf_counter()
    for _ in range(2000):
        v.validate(bad)
    print(f"{'Patient (3 errors)':<28} {'':>9}  {(time.perf_counter() - start) / 2000 * 1e6:9.1f}"
          " µs/resource")


if __name__ == "__main__":
    main()
