"""Write a 100-entry FHIR transaction Bundle (ECM referral intake) to stdout or a file.

    .venv/bin/python bench/bundle_gen.py [--entries 100] [--out bundle.json]

The Bundle: one Patient per five entries (POST, fullUrl urn:uuid:...) and, for each, four
ServiceRequests (POST, the fixture bench/data/servicerequest.json) whose subject references
that Patient's urn:uuid, so the server resolves references inside the transaction.
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
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = orjson.dumps(bundle(args.entries, args.seed))
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
