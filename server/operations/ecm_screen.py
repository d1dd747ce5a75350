"""``Task/[id]/$ecm-screen``: the initial screening of a direct ECM referral (seed 003 VI.D.6).

On an ECM referral Task that is ``requested`` and received (``received`` or ``pending``): runs
``$ecm-eligibility`` for the member as of the referral date (``ServiceRequest.authoredOn`` in the
program's zone), stores the ``ecm-screening-result`` Observation, adds it to the referral's
``supportingInfo`` and the Task's ``output``, and moves the referral as the outcome says
(``server/ecm/screening.py``): on to authorization (``pending``), to the Care Coordination
alternative (``rejected``, ``not-authorized``, VI.D.8), or to a person (``pending``). A person
decides with ``decision`` (``screen-met`` / ``screen-not-met``) and ``reason``.

All writes are one unit, through the pipeline as the caller: the referral Task's lifecycle
applies (only the plan the referral was sent to — its owner — rejects it).
"""

from __future__ import annotations

from typing import Any

import orjson

from server.ecm.calendar import local_date
from server.ecm.intake import RECEIVED, business_status, is_ecm_referral, now
from server.ecm.referral_lifecycle import REFERRAL, machine_of
from server.ecm.screening import (
    SCREEN_CLAUSE,
    WORKFLOW,
    Decision,
    observation,
    screen_of,
    screened_task,
)
from server.errors import BadRequest, Conflict, Unprocessable
from server.fhir.instant import format_instant
from server.operations.call import Call, Implementation
from server.operations.ecm_eligibility import (
    _evaluator,
    _stored_member,
    _stored_payor,
)
from server.operations.parameters import Typed, first, to_parameters
from server.writes.write import Write

SCREENABLE = frozenset({RECEIVED, "pending"})
ALTERNATIVES = frozenset({"complex-case-management", "other-care-coordination"})


def _local(ref: Any) -> tuple[str, str] | None:
    value = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(value, str) or "://" in value or value.count("/") != 1:
        return None
    type, id = value.split("/")
    return type, id


def _decision(call: Call) -> Decision | None:
    code, reason = first(call.params, "decision"), first(call.params, "reason")
    if code is None:
        if reason is not None:
            raise BadRequest("reason goes with a decision", expression="reason")
        return None
    if code not in ("screen-met", "screen-not-met"):
        raise BadRequest(
            f"decision is screen-met or screen-not-met (ValueSet ecm-screen-decision), not "
            f"{str(code)[:40]!r}",
            expression="decision",
        )
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest(
            "a person's decision states its reason (ecmscr-1; seed 003 VI.D.6)",
            expression="reason",
        )
    return Decision(code == "screen-met", reason.strip())


def _alternative(call: Call) -> str:
    code = first(call.params, "alternative", "complex-case-management")
    if code not in ALTERNATIVES:
        raise BadRequest(
            "alternative is complex-case-management or other-care-coordination (ValueSet "
            f"ecm-care-coordination-alternative; seed 003 VI.D.8), not {str(code)[:40]!r}",
            expression="alternative",
        )
    return str(code)


def run(call: Call) -> dict[str, Any]:
    assert call.instance is not None and call.write is not None and call.id is not None
    task = call.instance
    decision, alternative = _decision(call), _alternative(call)
    focus = _local(task.get("focus"))
    request = None
    if machine_of(task) is REFERRAL and focus is not None and focus[0] == "ServiceRequest":
        found = call.reader.read(*focus)
        request = None if found is None or found.body is None else orjson.loads(found.body)
    if request is None or focus is None or not is_ecm_referral(request):
        raise Unprocessable(
            f"Task/{call.id} is not the referral Task of a stored ECM referral", expression="Task"
        )
    status = business_status(task)
    if task.get("status") != "requested" or status not in SCREENABLE:
        raise Conflict(
            f"Task/{call.id} is {task.get('status')} ({status}): a referral is screened while "
            "it is requested and received or pending (seed 003 VI.D.6)",
            expression="Task.businessStatus",
        )
    member = _local(task.get("for"))
    referred = local_date(request.get("authoredOn"))
    if member is None or member[0] != "Patient" or referred is None:
        raise Unprocessable(
            "the referral names no stored member or no referral date", expression="Task.for"
        )
    evaluator = _evaluator(call)
    record = _stored_member(call, member[1])
    answer = evaluator.evaluate(record, referred, None, _stored_payor(call, evaluator.plan))
    screen = screen_of(answer, decision)
    owner = (task.get("owner") or {}).get("reference") or (task.get("requester") or {}).get(
        "reference"
    )
    referral = f"ServiceRequest/{focus[1]}"
    result = observation(
        answer,
        member=f"Patient/{member[1]}",
        referral=referral,
        performer=str(owner),
        issued=format_instant(now()),
        decision=decision,
    )
    written = call.write(Write("create", "Observation", resource=result))
    assert written.result is not None and written.result.version is not None
    result_ref = f"Observation/{written.result.version.id}"
    supporting = [*(request.get("supportingInfo") or ()), {"reference": result_ref}]
    call.write(
        Write(
            "update",
            "ServiceRequest",
            id=focus[1],
            resource={**request, "supportingInfo": supporting},
        )
    )
    updated = screened_task(task, screen, result_ref, answer, alternative)
    stored = call.write(Write("update", "Task", id=call.id, resource=updated))
    assert stored.result is not None and stored.result.version is not None
    values: list[tuple[str, Any]] = [
        ("screen", Typed("code", screen)),
        ("determination", Typed("code", answer.determination)),
        ("asOf", Typed("date", referred.isoformat())),
        ("decidedBy", Typed("code", "person" if decision is not None else "rules")),
        ("clause", SCREEN_CLAUSE[screen]),
        ("result", Typed("Reference", {"reference": result_ref})),
        ("task", Typed("Reference", {"reference": f"Task/{call.id}"})),
    ]
    if screen == "not-met":
        values.append(
            ("alternative", Typed("Coding", {"system": WORKFLOW, "code": alternative}))
        )
    return to_parameters(values)


IMPLEMENTATION = Implementation(
    "Task-ecm-screen",
    run,
)
