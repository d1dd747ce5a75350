"""Seed a running server with ServiceRequests (the fixture, identifiers varied) and write
their ids, one a line. Also saves the bytes of one read, for the framework floor.

    .venv/bin/python bench/seed.py --url http://127.0.0.1:PORT/fhir --count 1000 \
        --ids ids.txt [--read-bytes sr.json]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import httpx
import orjson

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--read-bytes", type=Path)
    parser.add_argument("--tag", default="seed")
    args = parser.parse_args()

    template = orjson.loads((HERE / "data" / "servicerequest.json").read_bytes())
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    ids: list[str] = []
    with httpx.Client(base_url=args.url, headers=headers, timeout=120.0) as client:
        for start in range(0, args.count, 100):
            entries = []
            for i in range(start, min(start + 100, args.count)):
                sr = copy.deepcopy(template)
                sr["identifier"][0]["value"] = f"ECM-REF-{args.tag}-{i:06d}"
                entries.append({"resource": sr,
                                "request": {"method": "POST", "url": "ServiceRequest"}})
            r = client.post("/", content=orjson.dumps(
                {"resourceType": "Bundle", "type": "transaction", "entry": entries}))
            if r.status_code != 200:
                raise SystemExit(f"seeding failed: {r.status_code} {r.text[:500]}")
            for entry in r.json()["entry"]:
                location = entry["response"]["location"]  # ServiceRequest/<id>/_history/1
                ids.append(location.split("/")[-3])
        args.ids.write_text("".join(f"{i}\n" for i in ids))
        if args.read_bytes:
            r = client.get(f"/ServiceRequest/{ids[0]}")
            r.raise_for_status()
            args.read_bytes.write_bytes(r.content)
    print(f"seeded {len(ids)} ServiceRequests")


if __name__ == "__main__":
    main()
