"""The ECM network as HealthcareServices record it (docs/ecm-workflow.md, "Assignment"): a
contract is an active ECM service; a letter of agreement (seed 003 VI.G.3.c) is one carrying
the ``letter-of-agreement`` extension, in force over its period. Dates counted by hand."""

from __future__ import annotations

from datetime import date
from typing import Any

from server.ecm.network import Agreement, agreement, standing

ECM = {"coding": [{"system": "http://calaim-fhir.org/fhir/CodeSystem/calaim-program",
                   "code": "ecm"}]}
CS = {"coding": [{"system": "http://calaim-fhir.org/fhir/CodeSystem/calaim-program",
                  "code": "cs"}]}
LOA = "http://calaim-fhir.org/fhir/StructureDefinition/letter-of-agreement"
START = date(2026, 3, 1)


def _service(provider: str, *, loa: dict[str, str] | None = None, active: bool = True,
             category: dict[str, Any] = ECM) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "HealthcareService", "active": active,
                            "providedBy": {"reference": provider}, "category": [category]}
    if loa is not None:
        body["extension"] = [{"url": LOA, "valuePeriod": loa}]
    return body


def test_what_a_service_says_of_its_provider() -> None:
    assert agreement(_service("Organization/p")) == Agreement("Organization/p", None)
    assert agreement(_service("Organization/p", loa={"start": "2026-03-01"})) == Agreement(
        "Organization/p", (date(2026, 3, 1), None))
    # not an ECM service in force: no agreement
    assert agreement(_service("Organization/p", active=False)) is None
    assert agreement(_service("Organization/p", category=CS)) is None
    assert agreement({"resourceType": "HealthcareService", "category": [ECM]}) is None


def test_a_contract_is_in_network() -> None:
    services = [_service("Organization/other"), _service("Organization/p")]
    assert standing(services, "Organization/p", START) == "in-network"
    # a contract and a letter of agreement: in network
    both = [_service("Organization/p", loa={"start": "2025-01-01", "end": "2025-12-31"}),
            _service("Organization/p")]
    assert standing(both, "Organization/p", START) == "in-network"
    assert standing(services, "Organization/none", START) is None
    assert standing([_service("Organization/p", active=False)], "Organization/p", START) is None


def test_a_letter_of_agreement_counts_on_the_days_of_its_period() -> None:
    def on(loa: dict[str, str], day: date = START) -> str | None:
        return standing([_service("Organization/p", loa=loa)], "Organization/p", day)

    # from the plan start, or ending on it: in force
    assert on({"start": "2026-03-01", "end": "2026-08-31"}) == "letter-of-agreement"
    assert on({"start": "2025-09-01", "end": "2026-03-01"}) == "letter-of-agreement"
    assert on({"start": "2025-09-01"}) == "letter-of-agreement"
    assert on({"end": "2026-03-01"}) == "letter-of-agreement"
    # ended the day before, or agreed from the day after: not in force on 1 March
    assert on({"start": "2025-09-01", "end": "2026-02-28"}) is None
    assert on({"start": "2026-03-02", "end": "2026-08-31"}) is None
    assert on({"start": "2026-03-02", "end": "2026-08-31"}, date(2026, 3, 2)) == (
        "letter-of-agreement")
