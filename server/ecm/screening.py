"""The initial screening of a direct ECM referral (seed 003 VI.D.6, VI.D.8).

"Upon receipt of a direct ECM referral, Partnership's designated staff shall conduct an initial
screening for ECM services" (VI.D.6): the screening is ``$ecm-eligibility`` as of the referral
date, stored as an ``ecm-screening-result`` Observation. Its outcome decides the referral:

- **met** — the rules say ``eligible``, or a person decided so: the referral goes on to
  authorization (VI.D.6.a, VI.D.8 "For Members who qualify for the ECM benefit, Partnership
  requires that a Treatment Authorization Request (TAR) be submitted"); the Task stays
  ``requested``, ``businessStatus`` = ``pending``.
- **not met** — the rules say ``not-eligible``, or a person decided so: "Partnership's Care
  Coordination Department shall offer other available case management and/or care coordination
  services (e.g. Complex Case Management, etc.)" (VI.D.8): the Task is ``rejected`` with the
  reason (DHCS loop closure ``not-eligible``), ``businessStatus`` = ``not-authorized``, and the
  alternative offered is recorded as an output.
- **to decide** — the rules say ``needs-attestation`` or ``insufficient-data``: a person
  decides (the seeds leave clinical judgement to the plan's staff); the Task stays
  ``requested``, ``pending``, until a screening with a decision.

A person's decision (an override) always states its reason; the Observation keeps the rules'
determination as its value and the decision as a ``screening-override`` component.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from server.ecm.evaluate import Eligibility, Finding
from server.ecm.intake import REFERRAL_STATUS

WORKFLOW = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-workflow"
DETERMINATION = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-determination"
RESULT = "http://calaim-fhir.org/fhir/CodeSystem/ecm-eligibility-result"
POF = "http://calaim-fhir.org/fhir/CodeSystem/ecm-population-of-focus"
CLOSURE = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-loop-closure-reason"
PROFILE = "http://calaim-fhir.org/fhir/StructureDefinition/ecm-screening-result"
#: Reference types Observation.derivedFrom allows (R4); other evidence goes to supportingInfo.
DERIVED_FROM = frozenset(
    {"DocumentReference", "ImagingStudy", "Media", "QuestionnaireResponse", "Observation",
     "MolecularSequence"}
)
SUPPORTING_INFO = "http://hl7.org/fhir/StructureDefinition/workflow-supportingInfo"

Screen = Literal["met", "not-met", "to-decide"]
SCREEN_CLAUSE = {
    "met": "seed 003 VI.D.6.a, VI.D.8 (qualifies: on to authorization)",
    "not-met": "seed 003 VI.D.8 (does not meet the initial screening: care coordination "
    "offered instead)",
    "to-decide": "seed 003 VI.D.6 (the plan's designated staff screen: a person decides)",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's decision on the screening: ``met`` (True) or not, and why."""

    met: bool
    reason: str


def screen_of(answer: Eligibility, decision: Decision | None) -> Screen:
    if decision is not None:
        return "met" if decision.met else "not-met"
    if answer.determination == "eligible":
        return "met"
    if answer.determination == "not-eligible":
        return "not-met"
    return "to-decide"


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _findings(answer: Eligibility) -> Iterable[Finding]:
    yield answer.baseline
    for group in (*answer.pofs, *answer.exclusions):
        yield from group.findings


def evidence(answer: Eligibility) -> list[str]:
    """The local references the findings rest on, in order, once each."""
    found: dict[str, None] = {}
    for finding in _findings(answer):
        for ref in finding.evidence:
            if "/" in ref and "://" not in ref and not ref.startswith("urn:"):
                found[ref] = None
    return list(found)


def observation(
    answer: Eligibility,
    *,
    member: str,
    referral: str,
    performer: str,
    issued: str,
    decision: Decision | None,
) -> dict[str, Any]:
    """The ``ecm-screening-result`` Observation of ``answer``."""
    refs = evidence(answer)
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"profile": [PROFILE]},
        "status": "final",
        "code": _coding(WORKFLOW, "ecm-screening"),
        "subject": {"reference": member},
        "basedOn": [{"reference": referral}],
        "effectiveDateTime": answer.as_of.isoformat(),
        "issued": issued,
        "performer": [{"reference": performer}],
        "valueCodeableConcept": _coding(DETERMINATION, answer.determination),
        "method": {"text": f"$ecm-eligibility rule set {answer.version} (seed 003 VI.D.6)"},
        "component": [
            {"code": _coding(POF, p.code), "valueCodeableConcept": _coding(RESULT, p.result)}
            for p in answer.pofs
        ],
    }
    derived = [r for r in refs if r.split("/")[0] in DERIVED_FROM]
    others = [r for r in refs if r.split("/")[0] not in DERIVED_FROM]
    if derived:
        body["derivedFrom"] = [{"reference": r} for r in derived]
    if others:
        body["extension"] = [
            {"url": SUPPORTING_INFO, "valueReference": {"reference": r}} for r in others
        ]
    if decision is not None:
        body["component"].append(
            {
                "code": _coding(WORKFLOW, "screening-override"),
                "valueCodeableConcept": _coding(
                    WORKFLOW, "screen-met" if decision.met else "screen-not-met"
                ),
            }
        )
        body["note"] = [{"text": decision.reason}]
    if not body["component"]:
        del body["component"]
    return body


def screened_task(
    task: dict[str, Any],
    screen: Screen,
    result: str,
    answer: Eligibility,
    alternative: str,
) -> dict[str, Any]:
    """``task`` after the screening ``result`` (``Observation/id``)."""
    updated = dict(task)
    outputs = list(task.get("output") or ())
    outputs.append(
        {"type": _coding(WORKFLOW, "screening-result"), "valueReference": {"reference": result}}
    )
    if screen == "not-met":
        outputs.append(
            {
                "type": _coding(WORKFLOW, "care-coordination-alternative"),
                "valueCodeableConcept": _coding(WORKFLOW, alternative),
            }
        )
        updated["status"] = "rejected"
        updated["statusReason"] = {
            "coding": [{"system": CLOSURE, "code": "not-eligible"}],
            "text": (
                f"Initial screening not met (determination {answer.determination} as of "
                f"{answer.as_of.isoformat()}); offered instead: "
                f"{alternative.replace('-', ' ')} (seed 003 VI.D.8)"
            ),
        }
        updated["businessStatus"] = _coding(REFERRAL_STATUS, "not-authorized")
    else:
        updated["businessStatus"] = _coding(REFERRAL_STATUS, "pending")
    updated["output"] = outputs
    return updated


__all__ = ["Decision", "Screen", "evidence", "observation", "screen_of", "screened_task"]
