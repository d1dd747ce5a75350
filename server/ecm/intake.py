"""ECM referral intake: acknowledged, deadlined, deduplicated, returned for correction.

A program rule of the write pipeline (``server/writes/rules.py``) for ECM referrals: an
``ecm-referral`` ServiceRequest (category ``calaim-program#ecm``) and its referral Task, which
follows the referral Task lifecycle (``referral_lifecycle.py``, docs/closed-loop.md). Every
clause is seed 003 (MCCP2032) section VI.D; docs/ecm-workflow.md tells the whole workflow.

- **Source kind and channel** (VI.D.5: "via phone, mail, or fax", "via phone, mail, or
  Partnership Member portal"): the ServiceRequest carries the source kind
  (``referral-source-type``, required by the profile) and the channel (``referral-channel``);
  a referral sent without a channel came to the server itself: ``electronic``.
- **Acknowledgement** (VI.D.7.a "Partnership will acknowledge receipt of the ECM referral"):
  when a referral Task becomes ``requested`` (created so, or sent from ``draft``) the server
  sets ``businessStatus`` = DHCS ``received`` (``status`` stays ``requested``), the received
  time as ``restriction.period.start`` (and ``authoredOn`` when absent), and the plan's decision
  date as ``restriction.period.end`` (searchable with ``due``): the receipt's date in the
  program's zone plus the plan's business days (plan configuration, ``workflow_config.py``: the
  seeds give no number).
- **Duplicates** (decided in the unit under locked criteria): a ServiceRequest with the
  identifier of a stored ECM referral is that referral (an implicit ``If-None-Exist``: 200 with
  the stored one), and so is a referral Task for a referral that already has an open one. A
  referral with another identifier, for a member with an open ECM referral, is stored and
  linked to the open one (``referral-duplicate-of``), ``businessStatus`` = ``duplicate``, with
  the open one's decision date (the clock is not restarted). The open referrals of a member are
  found with ``Unit.match``: the (member, program) criteria are locked until the unit ends.
- **Returned for correction** (VI.D.7.b "notify the individual or entity if there are errors
  that must be corrected before submission"): ``businessStatus`` = ``returned-for-correction``
  on a ``requested`` Task, set by the plan (the Task's owner), with every problem listed in a
  contained OperationOutcome referenced from ``Task.output`` (type
  ``ecm-referral-workflow#correction-needed``). The referrer corrects the ServiceRequest and the
  Task and resubmits the same referral by setting ``businessStatus`` back to ``received``: the
  problems leave the Task (history keeps them) and the decision date is counted again from the
  resubmission unless the plan configures otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from server.ecm.calendar import add_business_days, local_date
from server.ecm.referral_lifecycle import (
    REFERRAL,
    _acts_as,
    _body,
    _local,
    _parties,
    _ref,
    machine_of,
)
from server.ecm.workflow_config import WorkflowConfig, WorkflowPlans
from server.errors import Forbidden, Unprocessable
from server.fhir.instant import format_instant, now_us
from server.ports import Reader, Version
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import SearchQuery
from server.writes.rules import ALLOW, Change, Rule, Verdict, amend, refuse
from server.writes.write import Write

PROGRAM = "http://calaim-fhir.org/fhir/CodeSystem/calaim-program"
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
TASK_CODE = f"{TASK_CODE_SYSTEM}|fulfill"
REFERRAL_STATUS = "http://calaim-fhir.org/fhir/CodeSystem/dhcs-referral-status"
WORKFLOW = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-workflow"
CHANNEL_SYSTEM = "http://calaim-fhir.org/fhir/CodeSystem/ecm-referral-channel"
CHANNEL = "http://calaim-fhir.org/fhir/StructureDefinition/referral-channel"
DUPLICATE_OF = "http://calaim-fhir.org/fhir/StructureDefinition/referral-duplicate-of"

RECEIVED = "received"
DUPLICATE = "duplicate"
RETURNED = "returned-for-correction"
PENDING = "pending"
CORRECTION_NEEDED = "correction-needed"
#: The statuses of a referral still open (not yet ended): Gravity's lifecycle, standards.md §1.5.
OPEN = ("requested", "accepted", "in-progress", "on-hold")

ACK = "seed 003 VI.D.7.a (acknowledge receipt)"
CORRECTION = "seed 003 VI.D.7.b (errors to be corrected before submission)"
SCREENING = "seed 003 VI.D.6 (the plan's designated staff screen)"
DUPLICATES = "seed 003 VI.D.6 (one screening per referral), docs/ecm-workflow.md"


def now() -> int:
    """The server's clock (microseconds since the epoch; tests replace it)."""
    return now_us()


def _value(text: str) -> str:
    """A search value: the search escapes, then percent-encoded for a query string."""
    for char in ("\\", ",", "$", "|"):
        text = text.replace(char, "\\" + char)
    return quote(text, safe="\\,$|:/")


def _coded(concept: Any) -> set[tuple[Any, Any]]:
    if not isinstance(concept, dict):
        return set()
    return {
        (c.get("system"), c.get("code")) for c in concept.get("coding") or () if isinstance(c, dict)
    }


def is_ecm_referral(request: dict[str, Any] | None) -> bool:
    """An ``ecm-referral`` ServiceRequest: category ``calaim-program#ecm``."""
    if not request or request.get("resourceType") != "ServiceRequest":
        return False
    return any((PROGRAM, "ecm") in _coded(c) for c in request.get("category") or ())


def business_status(task: dict[str, Any] | None) -> str | None:
    """The DHCS Referral Status code of a Task (None: none)."""
    for system, code in _coded((task or {}).get("businessStatus")):
        if system == REFERRAL_STATUS:
            return str(code)
    return None


def _status_concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": REFERRAL_STATUS, "code": code}]}


def _channel(request: dict[str, Any]) -> bool:
    return any(
        isinstance(e, dict) and e.get("url") == CHANNEL for e in request.get("extension") or ()
    )


def _with_channel(request: dict[str, Any]) -> dict[str, Any] | None:
    """An ECM referral sent without a channel came to this server: ``electronic`` (None: an
    ECM referral with a channel, or not an ECM referral)."""
    if not is_ecm_referral(request) or _channel(request):
        return None
    channel = {
        "url": CHANNEL,
        "valueCodeableConcept": {"coding": [{"system": CHANNEL_SYSTEM, "code": "electronic"}]},
    }
    return {**request, "extension": [*(request.get("extension") or ()), channel]}


def _fulfils(task: dict[str, Any]) -> bool:
    """A referral Task by its code (``fulfill``), whatever its focus looks like yet (a
    transaction's ``urn:uuid:`` reference is rewritten only later)."""
    return (TASK_CODE_SYSTEM, "fulfill") in _coded(task.get("code"))


def _screenings(task: dict[str, Any]) -> int:
    """How many screening results a Task's outputs name."""
    return sum(
        1
        for o in task.get("output") or ()
        if isinstance(o, dict) and (WORKFLOW, "screening-result") in _coded(o.get("type"))
    )


def _links(task: dict[str, Any]) -> list[Any]:
    return [
        e
        for e in task.get("extension") or ()
        if isinstance(e, dict) and e.get("url") == DUPLICATE_OF
    ]


def _unconcerned(previous: dict[str, Any], next: dict[str, Any]) -> bool:
    """Whether an update of a referral Task leaves everything the intake decides alone: the
    status (intake happens on entering ``requested``), the DHCS status, the decision date, the
    duplicate link and the screenings."""
    return (
        previous.get("status") == next.get("status")
        or previous.get("status") not in (None, "draft")
    ) and (
        previous.get("businessStatus") == next.get("businessStatus")
        and previous.get("restriction") == next.get("restriction")
        and _links(previous) == _links(next)
        and _screenings(previous) == _screenings(next)
    )


def _is_correction(output: Any) -> bool:
    return isinstance(output, dict) and (WORKFLOW, CORRECTION_NEEDED) in _coded(output.get("type"))


class ReferralIntake(Rule):
    """The intake of ECM referrals (module docstring). ``plans``: the plan configuration of
    the workflow; ``search``: to parse the criteria it locks."""

    name = "ecm-referral-intake"
    types = frozenset({"Task", "ServiceRequest"})

    def __init__(self, search: SearchContext, plans: WorkflowPlans) -> None:
        self.search = search
        self.plans = plans

    # -- the implicit If-None-Exist: the same referral is the stored one -------------------

    def condition(self, write: Write, resource: dict[str, Any]) -> str | None:
        if write.type == "ServiceRequest":
            if not is_ecm_referral(resource):
                return None
            tokens = [
                f"{_value(i['system'])}|{_value(i['value'])}"
                for i in resource.get("identifier") or ()
                if isinstance(i, dict)
                and isinstance(i.get("system"), str)
                and isinstance(i.get("value"), str)
            ]
            if not tokens:
                return None
            return f"identifier={','.join(tokens)}&category={_value(PROGRAM)}|ecm"
        if not _fulfils(resource) or resource.get("status") not in OPEN:
            return None
        focus = _ref(resource.get("focus"))
        if focus is None or "://" in focus:
            return None
        return (
            f"focus={_value(focus)}&code={TASK_CODE}&status={','.join(OPEN)}"
            f"&focus:ServiceRequest.category={_value(PROGRAM)}|ecm"
        )

    # -- the channel and the received time, decided before validation ------------------------

    def prepare(
        self, write: Write, resource: dict[str, Any], stored: Version | None
    ) -> dict[str, Any] | None:
        if stored is not None and stored.body is not None:
            return None
        if write.type == "ServiceRequest":
            return _with_channel(resource)
        if "authoredOn" in resource or not _fulfils(resource):
            return None
        if resource.get("status") != "requested":  # an intake; other creates record the past
            return None
        return {**resource, "authoredOn": format_instant(now())}

    # -- in the unit --------------------------------------------------------------------------

    def check(self, change: Change) -> Verdict:
        next = change.next
        if change.type == "ServiceRequest" and next is not None and change.previous is None:
            channelled = _with_channel(next)  # a PUT that creates (prepared in the unit)
            return ALLOW if channelled is None else amend(channelled)
        if change.type != "Task" or next is None or machine_of(next) is not REFERRAL:
            return ALLOW
        if next.get("partOf"):
            return ALLOW  # a sub-referral (an ECM provider's assignment Task) is not an intake
        previous = change.previous
        if previous is not None and _unconcerned(previous, next):
            return ALLOW  # most updates: nothing of the intake's changed, nothing read
        request = self._request(change.reader, next)
        if not is_ecm_referral(request):
            return ALLOW
        before = None if previous is None else previous.get("status")
        if next.get("status") == "requested" and before in (None, "draft"):
            return self._intake(change, next)
        if previous is None:
            return ALLOW
        was, now_is = business_status(previous), business_status(next)
        carried = "restriction" in previous and "restriction" not in next
        if carried and not (was == RETURNED and now_is in (None, RECEIVED)):
            # the decision date is the server's: an update without it keeps it (as the
            # lifecycle keeps lastModified)
            next = {**next, "restriction": previous["restriction"]}
            verdict = self._update(change, previous, next, was, now_is)
            if verdict.refusal is None and verdict.next is None:
                return amend(next)
            return verdict
        return self._update(change, previous, next, was, now_is)

    def _update(
        self,
        change: Change,
        previous: dict[str, Any],
        next: dict[str, Any],
        was: str | None,
        now_is: str | None,
    ) -> Verdict:
        refused = self._server_owned(change, previous, next)
        if refused is not None:
            return refused
        if (now_is == PENDING and was != PENDING) or _screenings(next) > _screenings(previous):
            if not change.principal.operator and not self._owner(change, previous):
                why = "a referral is screened by the plan it was sent to (Task.owner)"
                return self._forbidden(change, why, SCREENING)
        if now_is == RETURNED and was != RETURNED:
            return self._returned(change, next)
        if was == RETURNED and now_is in (None, RECEIVED) and next.get("status") == "requested":
            return self._resubmitted(change, previous, next)
        if now_is == DUPLICATE and was != DUPLICATE:
            return self._unprocessable(
                change,
                "duplicate is decided by the server at intake, not set by a client",
                "businessStatus",
                DUPLICATES,
            )
        return ALLOW

    def _request(self, reader: Reader, task: dict[str, Any]) -> dict[str, Any] | None:
        local = _local(_ref(task.get("focus")))
        if local is None or local[0] != "ServiceRequest":
            return None
        return _body(reader.read(*local))

    # -- acknowledgement and duplicates ------------------------------------------------------

    def _intake(self, change: Change, next: dict[str, Any]) -> Verdict:
        received = now()
        amended = dict(next)
        amended["lastModified"] = format_instant(received)  # the acknowledgement's time
        if "authoredOn" not in amended:
            amended["authoredOn"] = format_instant(received)
        open_one = self._open_referral(change, next)
        if open_one is not None:
            other, body = open_one
            amended["extension"] = [
                *(
                    e
                    for e in amended.get("extension") or ()
                    if not (isinstance(e, dict) and e.get("url") == DUPLICATE_OF)
                ),
                {"url": DUPLICATE_OF, "valueReference": {"reference": f"Task/{other}"}},
            ]
            if business_status(amended) in (None, RECEIVED):
                amended["businessStatus"] = _status_concept(DUPLICATE)
            period = (body.get("restriction") or {}).get("period")
            if isinstance(period, dict):
                amended["restriction"] = {**(amended.get("restriction") or {}), "period": period}
            return amend(amended)
        if amended.get("businessStatus") is None:
            amended["businessStatus"] = _status_concept(RECEIVED)
        config = self._config(change, next)
        keep = change.principal.operator and ((next.get("restriction") or {}).get("period"))
        if not keep:
            amended["restriction"] = {
                **(amended.get("restriction") or {}),
                "period": self._period(received, config),
            }
        return amend(amended)

    def _period(self, received: int, config: WorkflowConfig) -> dict[str, str]:
        stamp = format_instant(received)
        day = local_date(stamp)
        assert day is not None
        due = add_business_days(day, config.decision_business_days, config.holidays)
        return {"start": stamp, "end": due.isoformat()}

    def _config(self, change: Change, task: dict[str, Any]) -> WorkflowConfig:
        """The plan configuration of the referral: the payor of the member's active Coverage,
        else the caller's organisation (a plan's staff), else the default."""
        if not self.plans.plans:
            return self.plans.default
        payors = self._payors(change.reader, task)
        return self.plans.select([*payors, change.principal.organization])

    def _payors(self, reader: Reader, task: dict[str, Any]) -> Iterable[str | None]:
        member = _ref(task.get("for"))
        if member is None or _local(member) is None:
            return []
        criteria = parse_criteria_string(
            "Coverage", f"beneficiary={_value(member)}&status=active", self.search
        )
        payors: list[str | None] = []
        for version in reader.search(SearchQuery(criteria, count=20)).items:
            body = _body(version) or {}
            payors += [_ref(p) for p in body.get("payor") or ()]
        return payors

    def _open_referral(
        self, change: Change, task: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The member's open ECM referral Task other than this one (the first received that is
        not itself a duplicate), found under the locked (member, program) criteria."""
        member = _ref(task.get("for"))
        if member is None:
            return None
        criteria = parse_criteria_string(
            "Task",
            f"subject={_value(member)}&code={TASK_CODE}&status={','.join(OPEN)}"
            f"&focus:ServiceRequest.category={_value(PROGRAM)}|ecm",
            self.search,
        )
        match: Callable[..., list[Version]] | None = getattr(change.reader, "match", None)
        if match is not None:
            found = match(criteria, 50)
        else:
            found = change.reader.search(SearchQuery(criteria, count=50)).items
        focus = _ref(task.get("focus"))
        candidates = []
        for version in found:
            body = _body(version)
            if version.id == change.id or body is None:
                continue
            if _ref(body.get("focus")) == focus and business_status(body) == DUPLICATE:
                continue
            candidates.append((version.id, body))
        originals = [c for c in candidates if business_status(c[1]) != DUPLICATE]
        chosen = originals or candidates
        return chosen[0] if chosen else None

    # -- returned for correction ---------------------------------------------------------------

    def _returned(self, change: Change, next: dict[str, Any]) -> Verdict:
        if next.get("status") != "requested":
            return self._unprocessable(
                change,
                f"{RETURNED} is a state of a requested referral (not a denial): status is "
                f"{next.get('status')}",
                "businessStatus",
                CORRECTION,
            )
        if not change.principal.operator and not self._owner(change, next):
            return self._forbidden(
                change,
                f"{RETURNED} is set by the plan the referral was sent to (Task.owner)",
                CORRECTION,
            )
        contained = {
            c.get("id"): c
            for c in next.get("contained") or ()
            if isinstance(c, dict) and c.get("resourceType") == "OperationOutcome"
        }
        for i, output in enumerate(next.get("output") or ()):
            if not _is_correction(output):
                continue
            ref = _ref(output.get("valueReference"))
            outcome = contained.get(ref[1:]) if ref and ref.startswith("#") else None
            if outcome is None:
                return self._unprocessable(
                    change,
                    f"a {CORRECTION_NEEDED} output references a contained OperationOutcome "
                    "listing the problems",
                    f"output[{i}].valueReference",
                    CORRECTION,
                )
            issues = [
                x
                for x in outcome.get("issue") or ()
                if isinstance(x, dict) and (x.get("diagnostics") or (x.get("details") or {}))
            ]
            if issues:
                return ALLOW
        return self._unprocessable(
            change,
            f"{RETURNED} lists every problem to correct: an output of type {CORRECTION_NEEDED} "
            "referencing a contained OperationOutcome with an issue per problem (diagnostics "
            "and the expression of the element)",
            "output",
            CORRECTION,
        )

    def _resubmitted(
        self, change: Change, previous: dict[str, Any], next: dict[str, Any]
    ) -> Verdict:
        if not change.principal.operator and not self._requester(change, previous):
            return self._forbidden(
                change,
                "a referral returned for correction is resubmitted by its referrer "
                "(Task.requester)",
                CORRECTION,
            )
        resubmitted = now()
        amended = dict(next)
        amended["businessStatus"] = _status_concept(RECEIVED)
        amended["lastModified"] = format_instant(resubmitted)
        kept = [o for o in amended.get("output") or () if not _is_correction(o)]
        named = {
            _ref(o.get("valueReference")) for o in amended.get("output") or () if _is_correction(o)
        }
        contained = [
            c
            for c in amended.get("contained") or ()
            if not (isinstance(c, dict) and f"#{c.get('id')}" in named)
        ]
        for key, value in (("output", kept), ("contained", contained)):
            if value:
                amended[key] = value
            else:
                amended.pop(key, None)
        config = self._config(change, next)
        if config.resubmission_restarts_clock:
            amended["restriction"] = {
                **(amended.get("restriction") or {}),
                "period": self._period(resubmitted, config),
            }
        else:
            amended["restriction"] = previous.get("restriction")
        return amend(amended)

    # -- what the server owns --------------------------------------------------------------------

    def _server_owned(
        self, change: Change, previous: dict[str, Any], next: dict[str, Any]
    ) -> Verdict | None:
        """The decision date and the duplicate link are the server's (operator excepted)."""
        if change.principal.operator:
            return None
        resubmitting = business_status(previous) == RETURNED and business_status(next) in (
            None,
            RECEIVED,
        )
        if not resubmitting and previous.get("restriction") != next.get("restriction"):
            return self._unprocessable(
                change,
                "the decision date (restriction.period) is set by the server at intake",
                "restriction",
                ACK,
            )
        links = [_links(previous), _links(next)]
        if links[0] != links[1]:
            return self._unprocessable(
                change, "the duplicate link is set by the server at intake", "extension", DUPLICATES
            )
        if business_status(previous) == DUPLICATE and business_status(next) in (
            RECEIVED,
            RETURNED,
        ):
            return self._unprocessable(
                change,
                f"a duplicate referral is not taken in again (it is linked to "
                f"{links[0][0]['valueReference']['reference'] if links[0] else 'another'})",
                "businessStatus",
                DUPLICATES,
            )
        return None

    def _owner(self, change: Change, task: dict[str, Any]) -> bool:
        parties = _parties(change.principal)
        return _acts_as(_ref(task.get("owner")), parties, change.reader)

    def _requester(self, change: Change, task: dict[str, Any]) -> bool:
        parties = _parties(change.principal)
        return _acts_as(_ref(task.get("requester")), parties, change.reader)

    @staticmethod
    def _forbidden(change: Change, why: str, clause: str) -> Verdict:
        return refuse(
            Forbidden(
                f"ECM referral intake: {why} ({clause}, docs/ecm-workflow.md)",
                expression=f"{change.root}.businessStatus",
            )
        )

    @staticmethod
    def _unprocessable(change: Change, why: str, where: str, clause: str) -> Verdict:
        return refuse(
            Unprocessable(
                f"ECM referral intake: {why} ({clause}, docs/ecm-workflow.md)",
                expression=f"{change.root}.{where}",
            )
        )


__all__ = ["ReferralIntake", "business_status", "is_ecm_referral"]
