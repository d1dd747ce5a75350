"""The prioritized list of potentially eligible members (seed 003 VI.D.3).

Members whose determination is ``eligible`` or ``needs-attestation`` are listed, those
"believed to have the immediate needs" first: eligible before needs-attestation, then more
Populations of Focus met, then more ED visits and hospital/SNF stays in the last 12 months, then
the Patient id (so a run is reproducible).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.ecm.evaluate import Eligibility
from server.ecm.results import MET, NEEDS_ATTESTATION

LISTED = ("eligible", "needs-attestation")


@dataclass(frozen=True, slots=True)
class Candidate:
    patient_id: str
    determination: str
    pofs: tuple[str, ...]  # met (eligible) or needing attestation
    met: int
    utilization: int

    def key(self) -> tuple[int, int, int, str]:
        return (LISTED.index(self.determination), -self.met, -self.utilization, self.patient_id)


def candidate(patient_id: str, answer: Eligibility) -> Candidate | None:
    """What the list keeps of a member (None when the member is not listed)."""
    if answer.determination not in LISTED:
        return None
    wanted = MET if answer.determination == "eligible" else NEEDS_ATTESTATION
    pofs = tuple(p.code for p in answer.pofs if p.result == wanted)
    return Candidate(
        patient_id, answer.determination, pofs, len(answer.met_pofs), answer.utilization
    )


def prioritized(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=Candidate.key)
