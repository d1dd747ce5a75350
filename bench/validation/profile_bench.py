"""Micro-benchmark of profile validation (``ProfileSet.validate``) on a matching resource.

The profile is synthetic and realistic: an ECM-style referral on ServiceRequest with 5 slices
(category, identifier and 3 extension slices), 10 bindings, 5 invariants, a simple and a
complex extension definition, and a Reference target profile. Prints p50/p95 in µs of the
profile validation alone, then of base validation (``base_validator().validate``) plus profile
validation, without reference resolution.

    .venv/bin/python bench/validation/profile_bench.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from server.fhir.base_validation import base_validator
from server.fhir.profiles import ProfileSet
from server.fhir.terminology import Terminology

BASE = "http://calaim-fhir.org/fhir"
CS = {name: f"{BASE}/CodeSystem/{name}" for name in ("program", "pof", "source", "domain")}
VS = {name: f"{BASE}/ValueSet/{name}" for name in CS}
SOURCE_EXT = f"{BASE}/StructureDefinition/bench-source"
DOMAIN_EXT = f"{BASE}/StructureDefinition/bench-domain"
PROFILE = f"{BASE}/StructureDefinition/bench-referral"
HL7 = "http://hl7.org/fhir/StructureDefinition/"


def terminology() -> Terminology:
    codesystems = [
        {
            "resourceType": "CodeSystem",
            "url": url,
            "content": "complete",
            "concept": [{"code": f"{name}-{i}"} for i in range(30)],
        }
        for name, url in CS.items()
    ]
    valuesets = [
        {"resourceType": "ValueSet", "url": VS[name], "compose": {"include": [{"system": url}]}}
        for name, url in CS.items()
    ]
    return Terminology(codesystems, valuesets)


def el(id: str, **rules: Any) -> dict[str, Any]:
    return {"id": id, "path": ".".join(p.split(":")[0] for p in id.split(".")), **rules}


def bind(valueset: str, strength: str = "required") -> dict[str, Any]:
    return {"strength": strength, "valueSet": VS[valueset]}


def definitions() -> list[dict[str, Any]]:
    def sd(url: str, type: str, elements: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "resourceType": "StructureDefinition",
            "id": url.rsplit("/", 1)[-1],
            "url": url,
            "type": type,
            "derivation": "constraint",
            "baseDefinition": HL7 + type,
            "differential": {"element": elements},
            **more,
        }

    source = sd(
        SOURCE_EXT,
        "Extension",
        [
            el("Extension.url", fixedUri=SOURCE_EXT),
            el("Extension.value[x]", min=1, type=[{"code": "Coding"}], binding=bind("source")),
        ],
        context=[{"type": "element", "expression": "ServiceRequest"}],
    )
    domain = sd(
        DOMAIN_EXT,
        "Extension",
        [
            el("Extension.extension", min=2),
            el("Extension.extension:domain", sliceName="domain", min=1, max="1"),
            el("Extension.extension:domain.url", fixedUri="domain"),
            el("Extension.extension:domain.value[x]", min=1, type=[{"code": "Coding"}],
               binding=bind("domain")),
            el("Extension.extension:status", sliceName="status", min=1, max="1"),
            el("Extension.extension:status.url", fixedUri="status"),
            el("Extension.extension:status.value[x]", min=1, type=[{"code": "code"}],
               binding=bind("domain")),
            el("Extension.url", fixedUri=DOMAIN_EXT),
            el("Extension.value[x]", max="0"),
        ],
        context=[{"type": "element", "expression": "ServiceRequest"}],
    )  # fmt: skip
    invariants = [
        ("b-1", "authoredOn.exists() or status = 'draft'"),
        ("b-2", "status in ('revoked' | 'entered-in-error') implies note.exists()"),
        ("b-3", f"reasonCode.coding.where(system = '{CS['pof']}').exists()"),
        ("b-4", f"extension('{DOMAIN_EXT}').count() <= 10"),
        ("b-5", "occurrence.ofType(Period).start.exists() implies requester.exists()"),
    ]
    referral = sd(
        PROFILE,
        "ServiceRequest",
        [
            el("ServiceRequest", constraint=[
                {"key": k, "severity": "error", "human": k, "expression": e}
                for k, e in invariants]),
            el("ServiceRequest.extension:source", sliceName="source", min=1, max="1",
               type=[{"code": "Extension", "profile": [SOURCE_EXT]}]),
            el("ServiceRequest.extension:domain", sliceName="domain", min=1,
               type=[{"code": "Extension", "profile": [DOMAIN_EXT]}]),
            el("ServiceRequest.extension:race", sliceName="race", max="1",
               type=[{"code": "Extension", "profile": ["http://example.org/race"]}]),
            el("ServiceRequest.identifier", slicing={"discriminator": [
                {"type": "value", "path": "system"}], "rules": "open"}),
            el("ServiceRequest.identifier:local", sliceName="local", min=1, max="1"),
            el("ServiceRequest.identifier:local.system", fixedUri="urn:local"),
            el("ServiceRequest.identifier:local.value", min=1),
            el("ServiceRequest.category", min=1, slicing={"discriminator": [
                {"type": "pattern", "path": "$this"}], "rules": "open"}),
            el("ServiceRequest.category:ecm", sliceName="ecm", min=1, max="1",
               patternCodeableConcept={"coding": [{"system": CS["program"],
                                                   "code": "program-0"}]}),
            el("ServiceRequest.category.coding", binding=bind("program", "extensible")),
            el("ServiceRequest.status", fixedCode="active"),
            el("ServiceRequest.intent", fixedCode="order"),
            el("ServiceRequest.code", min=1, binding=bind("program")),
            el("ServiceRequest.reasonCode", min=1, binding=bind("pof")),
            el("ServiceRequest.reasonCode.coding", min=1, binding=bind("pof", "extensible")),
            el("ServiceRequest.performerType", binding=bind("source")),
            el("ServiceRequest.orderDetail", binding=bind("source", "extensible")),
            el("ServiceRequest.locationCode", binding=bind("domain", "extensible")),
            el("ServiceRequest.subject", min=1, type=[{"code": "Reference",
               "targetProfile": [HL7 + "Patient"]}]),
            el("ServiceRequest.requester", min=1, type=[{"code": "Reference",
               "targetProfile": [HL7 + "Organization", HL7 + "Practitioner"]}]),
            el("ServiceRequest.occurrence[x]", type=[{"code": "Period"}]),
            el("ServiceRequest.authoredOn", min=1),
            el("ServiceRequest.doNotPerform", max="0"),
            el("ServiceRequest.note.text", min=1),
        ],
    )  # fmt: skip
    return [source, domain, referral]


RESOURCE: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "r1",
    "meta": {"profile": [PROFILE]},
    "extension": [
        {"url": SOURCE_EXT, "valueCoding": {"system": CS["source"], "code": "source-3"}},
        *[
            {
                "url": DOMAIN_EXT,
                "extension": [
                    {"url": "domain", "valueCoding": {"system": CS["domain"],
                                                      "code": f"domain-{i}"}},
                    {"url": "status", "valueCode": "domain-1"},
                ],
            }
            for i in range(3)
        ],
    ],
    "identifier": [
        {"system": "urn:local", "value": "ref-1"},
        {"system": "urn:other", "value": "x-9"},
    ],
    "status": "active",
    "intent": "order",
    "category": [
        {"coding": [{"system": CS["program"], "code": "program-0", "display": "ECM"}]},
        {"coding": [{"system": CS["program"], "code": "program-2"}]},
    ],
    "code": {"coding": [{"system": CS["program"], "code": "program-0"}], "text": "ECM"},
    "reasonCode": [
        {"coding": [{"system": CS["pof"], "code": "pof-1"}]},
        {"coding": [{"system": CS["pof"], "code": "pof-4"}]},
    ],
    "subject": {"reference": "Patient/p1", "display": "Maria Garcia"},
    "requester": {"reference": "Organization/mcp-1"},
    "performerType": {"coding": [{"system": CS["source"], "code": "source-2"}]},
    "occurrencePeriod": {"start": "2026-01-01", "end": "2026-06-30"},
    "authoredOn": "2026-01-01T09:30:00-08:00",
    "note": [{"text": "Member prefers Spanish."}],
}  # fmt: skip


def measure(fn: Any, rounds: int) -> tuple[float, float]:
    for _ in range(min(rounds, 1000)):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.95)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    start = time.perf_counter()
    profiles = ProfileSet(definitions(), terminology())
    compiled = time.perf_counter() - start
    issues = profiles.validate(RESOURCE, PROFILE)
    assert issues == [], issues
    base = base_validator()
    assert base.validate(RESOURCE) == []
    p50, p95 = measure(lambda: profiles.validate(RESOURCE, PROFILE), args.rounds)
    print(f"compile: {compiled * 1000:.1f} ms (incl. R4 element model)")
    print(f"profile validation:         p50 {p50:7.1f} µs  p95 {p95:7.1f} µs")

    def full() -> None:
        base.validate(RESOURCE)
        profiles.validate(RESOURCE, PROFILE)

    p50, p95 = measure(full, args.rounds)
    print(f"base + profile validation:  p50 {p50:7.1f} µs  p95 {p95:7.1f} µs")


if __name__ == "__main__":
    main()
