"""The prioritized list of potentially eligible members (seed 003 VI.D.3).

Members whose determination is ``eligible`` or ``needs-attestation`` are listed, those
"believed to have the immediate needs" first: eligible before needs-attestation, then more
Populations of Focus met, then more ED visits and hospital/SNF stays in the last 12 months, then
the Patient id (so a run is reproducible). After them come the members who meet a Population of
Focus but are excluded only because they are in the plan's Basic or Complex Case Management
(seed 003 VI.C.1.i): they stay ``not-eligible``, flagged for Care Coordination review, in the
same order.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.ecm.evaluate import Eligibility
from server.ecm.results import MET, NEEDS_ATTESTATION

LISTED = ("eligible", "needs-attestation")
CASE_MANAGEMENT = "plan-case-management"  # the exclusion whose members are flagged for review
REVIEW = "care-coordination-review"


@dataclass(frozen=True, slots=True)
class Candidate:
    patient_id: str
    determination: str
    pofs: tuple[str, ...]  # met (eligible) or needing attestation
    met: int
    utilization: int
    review: bool = False  # excluded by plan case management only: Care Coordination review

    def key(self) -> tuple[int, int, int, str]:
        group = len(LISTED) if self.review else LISTED.index(self.determination)
        return (group, -self.met, -self.utilization, self.patient_id)


def candidate(patient_id: str, answer: Eligibility) -> Candidate | None:
    """What the list keeps of a member (None when the member is not listed)."""
    if answer.determination not in LISTED:
        return _for_review(patient_id, answer)
    wanted = MET if answer.determination == "eligible" else NEEDS_ATTESTATION
    pofs = tuple(p.code for p in answer.pofs if p.result == wanted)
    return Candidate(
        patient_id, answer.determination, pofs, len(answer.met_pofs), answer.utilization
    )


def _for_review(patient_id: str, answer: Eligibility) -> Candidate | None:
    """A member who meets a POF and the baseline but whom only the plan's case management
    excludes (VI.C.1.i): listed for Care Coordination review, not dropped silently."""
    excluded = {e.code for e in answer.exclusions if e.result == MET}
    met = answer.met_pofs
    if excluded != {CASE_MANAGEMENT} or not met or answer.baseline.result != MET:
        return None
    return Candidate(
        patient_id, answer.determination, tuple(met), len(met), answer.utilization, review=True
    )


def prioritized(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=Candidate.key)
