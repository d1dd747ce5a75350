"""Write a 100-entry FHIR transaction Bundle (ECM referral intake) to stdout or a file.

    .venv/bin/python bench/bundle_gen.py [--entries 100] [--shape referrals|feed] [--out FILE]

``referrals`` (the default): one Patient per five entries (POST, fullUrl urn:uuid:...) and,
for each, four ServiceRequests (POST, the fixture bench/data/servicerequest.json) whose subject
references that Patient's urn:uuid, so the server resolves references inside the transaction.

``feed``: what a plan's ECM referral feed sends, four entries per member: the member's
Medi-Cal Coverage (payor: the plan ``Organization/bench-plan``; first, so that the plan
serves the member when the Patient is written), the Patient, the ECM referral
ServiceRequest (the fixture; subject, insurance by urn:uuid; performer the ECM provider
``Organization/ecm-provider-042``) and its referral Task (focus the ServiceRequest, for the
Patient, requester the plan, owner the provider), every reference inside the Bundle a
urn:uuid. ``feed_directory()`` gives the Organizations, Practitioner and member the fixture
references, so a store can be readied for both shapes.
"""

from __future__ import annotations

import argparse
import copy
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent


def patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "https://example.org/calaim/medi-cal-cin",
                        "value": f"9{n:07d}A"}],
        "active": True,
        "name": [{"use": "official", "family": f"Garcia{n}", "given": ["Maria", "Elena"]}],
        "telecom": [{"system": "phone", "value": f"559-555-{n % 10000:04d}", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1980-02-29",
        "address": [{"line": [f"{n} Main St"], "city": "Fresno", "state": "CA",
                     "postalCode": "93701"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]},
                           "preferred": True}],
    }


PLAN_ID = "bench-plan"
PROVIDER_ID = "ecm-provider-042"  # the fixture's performer
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


def coverage(beneficiary: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "identifier": [{"system": "https://example.org/calaim/medi-cal-cin",
                        "value": f"9{n:07d}A"}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                             "code": "SUBSIDIZ", "display": "subsidized health program"}],
                 "text": "Medi-Cal managed care"},
        "beneficiary": {"reference": beneficiary},
        "period": {"start": "2024-01-01"},
        "payor": [{"reference": f"Organization/{PLAN_ID}"}],
    }


def referral_task(focus: str, member: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "identifier": [{"system": "https://example.org/calaim/ecm-referral-task",
                        "value": f"TSK-{n:08d}"}],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill", "display": "Fulfill the focal request"}]},
        "focus": {"reference": focus},
        "for": {"reference": member},
        "authoredOn": "2024-04-28T09:30:00-07:00",
        "requester": {"reference": f"Organization/{PLAN_ID}"},
        "owner": {"reference": f"Organization/{PROVIDER_ID}"},
    }


def feed_directory() -> list[dict[str, Any]]:
    """The resources the fixture and the feed reference by id, for PUT before a run: the plan
    (a payer), the ECM provider (a provider), the requesting Practitioner, and the fixture's
    member with its Coverage."""
    member = patient(91234567)
    member["id"] = "medi-cal-91234567A"
    cover = coverage("Patient/medi-cal-91234567A", 91234567)
    cover["id"] = "medi-cal-91234567A"
    return [
        {"resourceType": "Organization", "id": PLAN_ID, "active": True, "name": "Bench Plan",
         "type": [{"coding": [{"system": ORG_TYPE, "code": "pay"}]}]},
        {"resourceType": "Organization", "id": PROVIDER_ID, "active": True,
         "name": "Central Valley Community Health ECM",
         "type": [{"coding": [{"system": ORG_TYPE, "code": "prov"}]}]},
        {"resourceType": "Practitioner", "id": "npi-1234567893", "active": True,
         "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
         "name": [{"family": "Chen", "given": ["Wei"]}]},
        member,
        cover,
    ]


def feed(entries: int = 100, seed: int = 0) -> dict[str, Any]:
    """A referral feed transaction: ``entries // 4`` members, four resources each."""
    template = orjson.loads((HERE / "data" / "servicerequest.json").read_bytes())
    out: list[dict[str, Any]] = []
    for m in range(entries // 4):
        n = seed * entries + m
        urn = {k: f"urn:uuid:{uuid.uuid4()}" for k in ("patient", "coverage", "sr", "task")}
        sr = copy.deepcopy(template)
        sr["identifier"][0]["value"] = f"ECM-REF-{seed:04d}-{m:06d}"
        sr["subject"] = {"reference": urn["patient"]}
        sr["insurance"] = [{"reference": urn["coverage"]}]
        sr["performer"] = [{"reference": f"Organization/{PROVIDER_ID}"}]
        for key, resource in (("coverage", coverage(urn["patient"], n)), ("patient", patient(n)),
                              ("sr", sr), ("task", referral_task(urn["sr"], urn["patient"], n))):
            out.append({"fullUrl": urn[key], "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def bundle(entries: int = 100, seed: int = 0) -> dict[str, Any]:
    template = orjson.loads((HERE / "data" / "servicerequest.json").read_bytes())
    out: list[dict[str, Any]] = []
    subject = ""
    for i in range(entries):
        if i % 5 == 0:
            full = f"urn:uuid:{uuid.uuid4()}"
            subject = full
            out.append({"fullUrl": full, "resource": patient(seed * entries + i),
                        "request": {"method": "POST", "url": "Patient"}})
            continue
        sr = copy.deepcopy(template)
        sr["identifier"][0]["value"] = f"ECM-REF-{seed:04d}-{i:06d}"
        sr["subject"] = {"reference": subject}
        out.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": sr,
                    "request": {"method": "POST", "url": "ServiceRequest"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=("referrals", "feed"), default="referrals")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    make = feed if args.shape == "feed" else bundle
    data = orjson.dumps(make(args.entries, args.seed))
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
