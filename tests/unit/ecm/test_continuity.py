"""Continuity of care (seed 003 VI.G.3): the window, the authorization's length and the
evidence, dates counted by hand on the calendar."""

from __future__ import annotations

from datetime import date

from server.ecm.continuity import (
    authorization,
    authorized_until,
    claim_evidence,
    enrollment_evidence,
    window,
)
from server.ecm.workflow_config import WorkflowConfig

HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ECM = {"coding": [{"system": "http://calaim-fhir.org/fhir/CodeSystem/calaim-program",
                   "code": "ecm"}]}


def test_the_six_months_before_the_plan_start() -> None:
    # VI.G.3.a "within the previous 6 months": 1 Sep 2025 .. 28 Feb 2026 for a 1 March start
    assert window(date(2026, 3, 1)) == (date(2025, 9, 1), date(2026, 2, 28))
    # 31 August: 6 months before is 28 February (no 31st), the day before 30 August
    assert window(date(2026, 8, 31)) == (date(2026, 2, 28), date(2026, 8, 30))


def test_up_to_six_months_from_the_plan_start() -> None:
    assert authorized_until(date(2026, 3, 1), 6) == date(2026, 8, 31)
    assert authorized_until(date(2026, 3, 1), 3) == date(2026, 5, 31)
    assert authorized_until(date(2026, 1, 15), 6) == date(2026, 7, 14)


def test_a_shorter_plan_length_and_a_provider_outside_the_network() -> None:
    evidence = claim_evidence(
        "Claim/c",
        {"status": "active", "provider": {"reference": "Organization/p"},
         "item": [{"productOrService": {"coding": [{"system": HCPCS, "code": "G9008"}]},
                   "servicedDate": "2026-02-28"}]},
        date(2026, 3, 1),
    )
    assert evidence is not None and evidence.last == date(2026, 2, 28)
    body = authorization(member="Patient/m", plan="Organization/plan",
                         plan_start=date(2026, 3, 1), evidence=[evidence],
                         config=WorkflowConfig(continuity_authorization_months=3),
                         created="2026-03-02T17:00:00Z", basis=None)
    assert body["preAuthPeriod"] == {"start": "2026-03-01", "end": "2026-05-31"}
    assert "requestor" not in body
    kept = authorization(member="Patient/m", plan="Organization/plan",
                         plan_start=date(2026, 3, 1), evidence=[evidence],
                         config=WorkflowConfig(), created="2026-03-02T17:00:00Z",
                         basis="letter-of-agreement")
    assert kept["requestor"] == {"reference": "Organization/p"}
    assert {"url": "providerBasis", "valueCode": "letter-of-agreement"} in (
        kept["extension"][0]["extension"])
    assert kept["preAuthPeriod"]["end"] == "2026-08-31"


def test_what_counts_as_evidence() -> None:
    start = date(2026, 3, 1)
    line = {"productOrService": {"coding": [{"system": HCPCS, "code": "G9012"}]}}
    # another HCPCS code, a cancelled claim, a line served on the plan start: none
    other = {"productOrService": {"coding": [{"system": HCPCS, "code": "T2041"}]},
             "servicedDate": "2026-01-10"}
    assert claim_evidence("Claim/a", {"item": [other]}, start) is None
    cancelled = {"status": "cancelled", "item": [{**line, "servicedDate": "2026-01-10"}]}
    assert claim_evidence("Claim/b", cancelled, start) is None
    assert claim_evidence("Claim/c", {"item": [{**line, "servicedDate": "2026-03-01"}]},
                          start) is None
    # a line without its own date takes the claim's billable period
    billed = {"billablePeriod": {"start": "2025-09-01"}, "item": [line]}
    found = claim_evidence("Claim/d", billed, start)
    assert found is not None and found.last == date(2025, 9, 1)
    # an enrollment that ended before the window, or began on the plan start: none
    ended = {"status": "finished", "type": [ECM],
             "period": {"start": "2025-01-01", "end": "2025-08-31"}}
    assert enrollment_evidence("EpisodeOfCare/e", ended, start) is None
    later = {"status": "active", "type": [ECM], "period": {"start": "2026-03-01"}}
    assert enrollment_evidence("EpisodeOfCare/f", later, start) is None
    # ended on the window's first day: the member had ECM within the 6 months
    edge = {**ended, "period": {"start": "2025-01-01", "end": "2025-09-01"}}
    found = enrollment_evidence("EpisodeOfCare/g", edge, start)
    assert found is not None and found.last == date(2025, 9, 1)
    # planned (never received) does not count
    planned = {"status": "planned", "type": [ECM], "period": {"start": "2025-12-01"}}
    assert enrollment_evidence("EpisodeOfCare/h", planned, start) is None
