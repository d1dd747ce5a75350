"""``$cs-eligibility``: the Community Supports criteria of a member, explained.

``GET|POST Patient/[id]/$cs-eligibility`` (a stored member) and ``POST Patient/$cs-eligibility``
with ``patient`` (a stored member) or ``bundle`` (the member's data inline: nothing is read
from or written to the server), for one or more ``service`` codes of the ``community-supports``
CodeSystem on ``asOf``. OperationDefinition ``cs-eligibility`` in ``profiles/operations/``.

The member is gathered and the answer rendered as for ``$ecm-eligibility``; the rules are the
CS rule set (:mod:`server.ecm.community_supports`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from server.auth.interactions import Interaction
from server.auth.operation_rules import Needs
from server.ecm.community_supports import ServicesAnswer, cs_rule_set, evaluate_services
from server.ecm.evaluate import Evaluator
from server.ecm.plan import PlanConfig
from server.errors import BadRequest
from server.fhir.terminology import Terminology
from server.operations.call import Call, Implementation
from server.operations.ecm_eligibility import (
    as_of_input,
    criterion_parts,
    data_issues,
    explained,
    member_of,
    plan_codes,
    plan_config,
)
from server.operations.parameters import Typed, to_parameters

SERVICE_SYSTEM = "http://calaim-fhir.org/fhir/CodeSystem/community-supports"


@cache
def _evaluator_on(terminology: Terminology, plan: PlanConfig) -> Evaluator:
    """One CS evaluator per terminology and plan configuration (expansions shared with ECM)."""
    return Evaluator(cs_rule_set(), plan_codes(terminology, plan), plan)


def _services(call: Call) -> list[str]:
    """The ``service`` inputs, each once, in the order given; a code the rule set does not know
    is 400 (the OperationDefinition makes at least one required)."""
    known = set(cs_rule_set().pof_codes)
    wanted: list[str] = []
    for i, code in enumerate(call.params.get("service", [])):
        if code not in known:
            raise BadRequest(
                f"service '{str(code)[:60]}' is not a code of {SERVICE_SYSTEM}",
                expression=f"service[{i}]" if i else "service",
            )
        wanted.append(str(code))
    return list(dict.fromkeys(wanted))


def answer_parameters(answer: ServicesAnswer) -> dict[str, Any]:
    values: list[tuple[str, Any]] = [
        ("ruleSetVersion", answer.version),
        ("asOf", Typed("date", answer.as_of.isoformat())),
        ("baseline", explained(answer.baseline)),
    ]
    for service in answer.services:
        judged = service.judged
        parts: list[tuple[str, Any]] = [
            ("code", Typed("Coding", {"system": SERVICE_SYSTEM, "code": judged.code})),
            ("result", Typed("code", judged.result)),
            ("determination", Typed("code", service.determination)),
        ]
        parts += [("criterion", criterion_parts(f)) for f in judged.findings]
        values.append(("service", parts))
    values.append(("issues", data_issues(answer.issues)))
    return to_parameters(values)


def run(call: Call) -> dict[str, Any]:
    as_of, services = as_of_input(call), _services(call)
    plan = plan_config(call.settings)
    evaluator = _evaluator_on(call.terminology, plan)
    record, payor = member_of(call, "cs-eligibility", plan)
    return answer_parameters(evaluate_services(evaluator, record, as_of, services, payor))


IMPLEMENTATION = Implementation(
    "cs-eligibility",
    run,
    needs=(Needs.of("Patient", Interaction.READ),),
)
