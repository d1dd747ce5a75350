"""The referral Task lifecycle, enforced on every write (docs/closed-loop.md).

Gravity SDOH Clinical Care defines the referral Task's statuses, the moves between them and who
sets each one (standards.md §1.5); the Patient Task has its own diagram (§1.6); the requester
alone controls ``ServiceRequest.status`` (§1.7 step 3). :class:`ReferralLifecycle` is a program
rule (``server/writes/rules.py``): it sees the stored version and the proposed one inside the
write's unit, so two racing transitions serialise and the second is judged against the first's
result.

- **Transitions** (422): the moves of the diagram; terminal states stay terminal (a rejected
  referral is retried with a new Task); ``entered-in-error`` from any state. A create states
  where a referral is now: ``draft`` or ``requested``, or — recording a referral whose earlier
  steps happened elsewhere — a later status, when the caller holds every role the path to it
  needs (the operator loading records; a sobering center recording its retroactive stay).
- **Roles** (403): the requester's organisation sets ``draft``, ``requested`` and
  ``entered-in-error``; the referral target (``owner``) the statuses of the work; either
  cancels. The target changes only ``status``, ``statusReason``, ``businessStatus``,
  ``output`` and ``note``; ``owner`` is set by the requester or the coordination platform, or
  claimed once, while absent, by an organisation for itself. A Patient app changes only
  ``status``, ``statusReason`` and ``output`` of its own Patient Task. The local operator is
  exempt from role rules, not from the others.
- **Fields** (422): after ``requested`` the Task's ``for``, ``focus``, ``requester``,
  ``intent`` and ``code`` never change; ``rejected``, ``cancelled``, ``on-hold`` and ``failed``
  need a ``statusReason``; ``completed`` needs an ``output`` of type ``resulting-activity``:
  a completed Procedure ``basedOn`` the referral (an absolute reference is accepted with a
  warning) or a coded activity.
- **Stamp**: ``Task.lastModified`` is the server's: set on every status or ``businessStatus``
  change, kept otherwise (a client value is replaced).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from server.auth.principal import Principal
from server.ecm.subreferrals import FILLER_ORDER, SPLITTABLE, rolled_up
from server.errors import Forbidden, Unprocessable
from server.fhir.instant import format_instant, now_us
from server.fhir.outcome import Issue
from server.fhir.references import local_target, reference_type
from server.ports import Reader, Version
from server.search.parse import SearchContext, parse_criteria_string
from server.search.query import SearchQuery
from server.writes.rules import ALLOW, Change, Rule, Verdict, refuse
from server.writes.write import Write

# -- the machines ----------------------------------------------------------------------------

REQUESTER = "requester"
TARGET = "target"
PLATFORM = "coordination platform"
PATIENT = "patient"
OTHER = "other organisation"
OPERATOR = "operator"

ERROR = "entered-in-error"
TERMINAL = frozenset({"rejected", "cancelled", "completed", "failed", ERROR})
NEEDS_REASON = frozenset({"rejected", "cancelled", "on-hold", "failed"})

TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
SDOHCC_CODES = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
SDC_CODES = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
RESULTING_ACTIVITY = "resulting-activity"
CS_CODES = "http://calaim-fhir.org/fhir/CodeSystem/community-supports"
SOBERING_CENTERS = "sobering-centers"


@dataclass(frozen=True, slots=True)
class Machine:
    """One Task lifecycle: ``moves`` from each status (None: the start, a create), who sets
    each status, and the clause that says so."""

    name: str
    statuses: frozenset[str]
    moves: Mapping[str | None, frozenset[str]]
    set_by: Mapping[str, frozenset[str]]
    worker: str  # the role that does the work: the referral target, the Patient
    editable: frozenset[str]  # what the worker may change
    clause: str

    def allows(self, before: str | None, after: str) -> bool:
        if before == ERROR:
            return False
        if after == ERROR and before is not None:
            return True
        return after in self.moves.get(before, frozenset())

    def path(self, status: str) -> list[str]:
        """The shortest path of statuses from the start to ``status`` (empty: unreachable)."""
        paths: dict[str, list[str]] = {s: [s] for s in self.moves[None]}
        frontier = list(paths)
        while frontier:
            nxt: list[str] = []
            for here in frontier:
                for there in (*self.moves.get(here, ()), ERROR):
                    if there not in paths and self.allows(here, there):
                        paths[there] = [*paths[here], there]
                        nxt.append(there)
            frontier = nxt
        return paths.get(status, [])


_EITHER = frozenset({REQUESTER, TARGET})
REFERRAL = Machine(
    name="referral Task",
    statuses=frozenset(
        {
            "draft",
            "requested",
            "accepted",
            "rejected",
            "cancelled",
            "in-progress",
            "on-hold",
            "failed",
            "completed",
            ERROR,
        }
    ),
    moves={
        None: frozenset({"draft", "requested"}),
        "draft": frozenset({"requested"}),
        "requested": frozenset({"accepted", "rejected", "cancelled"}),
        "accepted": frozenset({"in-progress", "on-hold", "cancelled", "completed", "failed"}),
        "in-progress": frozenset({"on-hold", "cancelled", "completed", "failed"}),
        "on-hold": frozenset({"in-progress", "cancelled", "completed", "failed"}),
    },
    set_by={
        "draft": frozenset({REQUESTER}),
        "requested": frozenset({REQUESTER}),
        ERROR: frozenset({REQUESTER}),
        "cancelled": _EITHER,
        **{
            s: frozenset({TARGET})
            for s in ("accepted", "rejected", "in-progress", "on-hold", "failed", "completed")
        },
    },
    worker=TARGET,
    # ``contained``: resources the outputs reference (the problems of a referral returned for
    # correction, docs/ecm-workflow.md)
    editable=frozenset({"status", "statusReason", "businessStatus", "output", "note", "contained"}),
    clause="Gravity SDOHCC referral Task lifecycle (standards.md §1.5)",
)
PATIENT_TASK = Machine(
    name="Patient Task",
    statuses=frozenset(
        {"ready", "in-progress", "on-hold", "cancelled", "failed", "completed", ERROR}
    ),
    moves={
        None: frozenset({"ready"}),
        "ready": frozenset({"in-progress", "on-hold", "cancelled", "completed", "failed"}),
        "in-progress": frozenset({"on-hold", "cancelled", "completed", "failed"}),
        "on-hold": frozenset({"in-progress", "cancelled", "completed", "failed"}),
    },
    set_by={
        "ready": frozenset({REQUESTER}),
        ERROR: frozenset({REQUESTER}),
        "cancelled": frozenset({REQUESTER, PATIENT}),
        **{s: frozenset({PATIENT}) for s in ("in-progress", "on-hold", "failed", "completed")},
    },
    worker=PATIENT,
    editable=frozenset({"status", "statusReason", "output"}),
    clause="Gravity SDOHCC Patient Task lifecycle (standards.md §1.6)",
)

_MAX_SPLIT = 200  # sub-Tasks of one source Task considered by the roll-up
#: Elements that never change once a referral has been requested (standards.md §1.4).
FIXED_AFTER_REQUEST = ("for", "focus", "requester", "intent", "code")
#: Elements whose change makes a sub-referral be judged again.
_SPLIT_ELEMENTS = frozenset({"partOf", "for", "focus", "requester"})
#: Elements no comparison of versions looks at: the server's own.
_SERVER_OWNED = frozenset({"meta", "id", "resourceType", "lastModified"})
_PATIENT_TASK_CODES = {
    SDOHCC_CODES: frozenset({"make-contact", "review-material", "general-information"}),
    SDC_CODES: frozenset({"complete-questionnaire"}),
}


# -- what a Task is ---------------------------------------------------------------------------


def _codes(concept: Any) -> Iterable[tuple[str | None, str | None]]:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            if isinstance(coding, dict):
                yield coding.get("system"), coding.get("code")


def _ref(value: Any) -> str | None:
    if isinstance(value, dict):
        ref = value.get("reference")
        return ref if isinstance(ref, str) else None
    return None


def _ref_type(ref: str | None) -> str | None:
    """The resource type a literal reference names (relative or absolute)."""
    return reference_type(ref) if ref else None


def _local(ref: str | None) -> tuple[str, str] | None:
    """``(type, id)`` of a relative reference to this server."""
    return local_target(ref) if ref else None


def _body(found: Version | None) -> dict[str, Any] | None:
    if found is None or found.body is None:
        return None
    body: dict[str, Any] = orjson.loads(found.body)
    return body


def _read(reader: Reader, key: tuple[str, str]) -> dict[str, Any] | None:
    return _body(reader.read(*key))


def machine_of(task: dict[str, Any]) -> Machine | None:
    """The lifecycle a Task follows: a referral Task (code ``fulfill`` with a ServiceRequest
    focus, standards.md §1.4), a Patient Task (a Gravity patient code, owned by a Patient or
    RelatedPerson, §1.6), or none (other Tasks are not the program's)."""
    codes = set(_codes(task.get("code")))
    if (TASK_CODE, "fulfill") in codes and _ref_type(_ref(task.get("focus"))) == "ServiceRequest":
        return REFERRAL
    if _ref_type(_ref(task.get("owner"))) in ("Patient", "RelatedPerson") and any(
        code in _PATIENT_TASK_CODES.get(system or "", ()) for system, code in codes
    ):
        return PATIENT_TASK
    return None


def stamped(previous: dict[str, Any] | None, next: dict[str, Any]) -> dict[str, Any] | None:
    """``next`` with the server's ``lastModified``: now on a create and on a change of
    ``status`` or ``businessStatus``, the stored value otherwise (None: already so)."""
    if previous is None or (
        previous.get("status") != next.get("status")
        or previous.get("businessStatus") != next.get("businessStatus")
    ):
        stamp: Any = format_instant(now_us())
    else:
        stamp = previous.get("lastModified")
    if next.get("lastModified") == stamp:
        return None
    amended = dict(next)
    if stamp is None:
        amended.pop("lastModified", None)
    else:
        amended["lastModified"] = stamp
    return amended


# -- who the caller is for a Task ----------------------------------------------------------------


def _parties(principal: Principal) -> frozenset[str]:
    return frozenset(p for p in (principal.organization, principal.user) if p)


def _acts_as(ref: str | None, parties: frozenset[str], reader: Reader) -> bool:
    """Whether the referenced requester/owner is one of ``parties``: itself, or a
    PractitionerRole of one of them."""
    if not ref or not parties:
        return False
    if ref in parties:
        return True
    local = _local(ref)
    if local is None or local[0] != "PractitionerRole":
        return False
    role = _read(reader, local)
    if role is None:
        return False
    return _ref(role.get("organization")) in parties or _ref(role.get("practitioner")) in parties


# -- the rule ------------------------------------------------------------------------------------


class ReferralLifecycle(Rule):
    """The referral and Patient Task lifecycles, the requester's ServiceRequest status and the
    roll-up of sub-referrals (``subreferrals.py``). ``platform``: the coordination platform's
    organisation (``Organization/x``), which may route referrals (set ``owner``); ``search``
    finds a source Task's sub-Tasks."""

    name = "referral-lifecycle"
    types = frozenset({"Task", "ServiceRequest"})

    def __init__(self, search: SearchContext, platform: str | None = None) -> None:
        self.search = search
        self.platform = platform

    def prepare(
        self, write: Write, resource: dict[str, Any], stored: Version | None
    ) -> dict[str, Any] | None:
        """The ``lastModified`` stamp, decided outside the unit from the version stored then
        (``check`` decides again only when another version was stored meanwhile)."""
        if write.type != "Task":
            return None
        previous = _body(stored)
        if machine_of(previous or resource) is None and machine_of(resource) is None:
            return None
        return stamped(previous, resource)

    def check(self, change: Change) -> Verdict:
        if change.type == "ServiceRequest":
            return self._service_request(change)
        previous, next = change.previous, change.next
        machine = machine_of(previous or next or {})
        if previous is not None and machine is None and next is not None:
            machine = machine_of(next)
        if machine is None:
            return ALLOW
        if next is None:
            return self._delete(change, machine, previous)
        verdict = _Judgement(self, change, machine, previous, next).verdict()
        if verdict.refusal is not None or machine is not REFERRAL:
            return verdict
        if previous is not None and previous.get("status") == next.get("status"):
            return verdict
        source = self._roll_up(change, verdict.next or next)
        if source is None:
            return verdict
        return replace(verdict, derived=(*verdict.derived, source))

    # -- sub-referrals: the source Task follows its sub-Tasks ------------------------------

    def _roll_up(self, change: Change, task: dict[str, Any]) -> Write | None:
        parents = [_local(_ref(p)) for p in task.get("partOf") or ()]
        key = next((p for p in parents if p is not None and p[0] == "Task"), None)
        if key is None:
            return None
        source = _read(change.reader, key)
        if source is None or machine_of(source) is not REFERRAL:
            return None
        splitter = _ref(source.get("owner"))
        if splitter is None or _ref(task.get("requester")) != splitter:
            return None  # not a split made by the source Task's target
        siblings = {change.id: task}
        criteria = parse_criteria_string("Task", f"part-of=Task/{key[1]}", self.search)
        page = change.reader.search(SearchQuery(criteria, count=_MAX_SPLIT))
        for version in page.items:
            if version.id != change.id and version.body is not None:
                siblings[version.id] = orjson.loads(version.body)
        before = source.get("status")
        after = rolled_up(str(s.get("status")) for s in siblings.values())
        if after is None or after == before or not REFERRAL.allows(before, after):
            return None
        updated = {**source, "status": after}
        if after == "completed":
            outputs = list(source.get("output") or [])
            for sibling in siblings.values():
                for output in sibling.get("output") or ():
                    resulting = any(c == RESULTING_ACTIVITY for _, c in _codes(output.get("type")))
                    if resulting and output not in outputs:
                        outputs.append(output)
            updated["output"] = outputs
            updated.pop("statusReason", None)
        elif after == "on-hold":
            stopped = sorted(
                f"Task/{id} {s.get('status')}"
                for id, s in siblings.items()
                if s.get("status") in ("rejected", "failed", "cancelled")
            )
            updated["statusReason"] = {
                "text": "Sub-referrals ended without the service, to be re-routed: "
                + ", ".join(stopped)
            }
        else:
            updated.pop("statusReason", None)
        acting = Principal("calaim-fhir", allow_all=True, organization=splitter)
        return Write("update", "Task", id=key[1], resource=updated, principal=acting)

    # -- ServiceRequest.status: the requester's ---------------------------------------------

    def _service_request(self, change: Change) -> Verdict:
        previous, next = change.previous, change.next
        if previous is None or next is None or change.principal.operator:
            return ALLOW
        if previous.get("status") == next.get("status"):
            return ALLOW
        if _acts_as(_ref(previous.get("requester")), _parties(change.principal), change.reader):
            return ALLOW
        return refuse(
            Forbidden(
                f"ServiceRequest.status {previous.get('status')} -> {next.get('status')}: only "
                "the requester changes the status of its referral (role: "
                f"{_role_name(change.principal)}; Gravity SDOHCC ServiceRequest, "
                "standards.md §1.7 step 3)",
                expression=f"{change.root}.status",
            )
        )

    # -- delete: only a requester's draft -------------------------------------------------

    def _delete(self, change: Change, machine: Machine, previous: dict[str, Any] | None) -> Verdict:
        if previous is None or change.principal.operator:
            return ALLOW
        status = previous.get("status")
        if not _acts_as(_ref(previous.get("requester")), _parties(change.principal), change.reader):
            return refuse(
                Forbidden(
                    f"Delete of a {machine.name} ({status}): only the requester deletes its "
                    f"draft (role: {_role_name(change.principal)}; {machine.clause})",
                    expression=change.root,
                )
            )
        if status != "draft":
            return refuse(
                Unprocessable(
                    f"Delete of a {machine.name} that is {status}: the history of a referral "
                    f"stays; set status {ERROR} instead ({machine.clause})",
                    expression=f"{change.root}.status",
                )
            )
        return ALLOW


def _role_name(principal: Principal) -> str:
    who = principal.organization or principal.user or principal.id
    return f"{OTHER} {who}" if principal.organization else f"caller {who}"


class _Judgement:
    """One create or update of a lifecycle Task, judged."""

    def __init__(
        self,
        rule: ReferralLifecycle,
        change: Change,
        machine: Machine,
        previous: dict[str, Any] | None,
        next: dict[str, Any],
    ) -> None:
        self.rule, self.change, self.machine = rule, change, machine
        self.previous, self.next = previous, next
        self.root = change.root
        self.before: str | None = None if previous is None else previous.get("status")
        self.after: Any = next.get("status")
        self.move = f"{self.before or '(new)'} -> {self.after}"
        self.principal = change.principal
        self.warnings: list[Issue] = []

    # -- issues -----------------------------------------------------------------------------

    def _unprocessable(self, why: str, element: str, clause: str | None = None) -> Verdict:
        return refuse(
            Unprocessable(
                f"{self.machine.name} {self.move}: {why} ({clause or self.machine.clause})",
                expression=f"{self.root}.{element}" if element else self.root,
            )
        )

    def _forbidden(self, why: str, roles: Iterable[str], element: str) -> Verdict:
        held = ", ".join(sorted(roles)) or _role_name(self.principal)
        return refuse(
            Forbidden(
                f"{self.machine.name} {self.move}: {why} (role: {held}; {self.machine.clause} "
                "'Set by', docs/closed-loop.md)",
                expression=f"{self.root}.{element}",
            )
        )

    # -- the judgement ----------------------------------------------------------------------

    def verdict(self) -> Verdict:
        machine, before, after = self.machine, self.before, self.after
        if after not in machine.statuses:
            return self._unprocessable(
                f"'{after}' is not a {machine.name} status (allowed: "
                f"{', '.join(sorted(machine.statuses))})",
                "status",
            )
        changed = self._changed()
        if before is not None and machine_of(self.next) is not machine:
            return self._unprocessable("a Task does not change its lifecycle", "code")
        if before == after:
            if before in TERMINAL and changed:
                return self._unprocessable(
                    f"a {before} Task stays as it is (terminal state); "
                    + (
                        "retry with a new Task" if before == "rejected" else f"only {ERROR} remains"
                    ),
                    sorted(changed)[0],
                )
        elif before is None:
            if not machine.path(after):
                return self._unprocessable("not a status a Task starts from", "status")
        elif not machine.allows(before, after):
            why = "not a transition of the lifecycle"
            if before in TERMINAL:
                why += f" ({before} is a terminal state)"
            if before == "rejected":
                why += "; a rejected referral is retried with a new Task"
            return self._unprocessable(why, "status")
        if before is not None and before != "draft" and machine is REFERRAL:
            for element in FIXED_AFTER_REQUEST:
                if element in changed:
                    return self._unprocessable(
                        f"{element} does not change after the referral is requested",
                        element,
                        "standards.md §1.4, docs/closed-loop.md",
                    )
        if not self.principal.operator:
            refused = self._roles(changed)
            if refused is not None:
                return refused
        if machine is REFERRAL and after != ERROR:
            refused = self._subreferral(changed)
            if refused is not None:
                return refused
        if before != after:
            refused = self._evidence()
            if refused is not None:
                return refused
        amended = None if self.change.prepared else stamped(self.previous, self.next)
        return Verdict(next=amended, warnings=tuple(self.warnings))

    def _changed(self) -> set[str]:
        previous, next = self.previous or {}, self.next
        keys = (set(previous) | set(next)) - _SERVER_OWNED
        return {k for k in keys if previous.get(k) != next.get(k)}

    # -- roles -------------------------------------------------------------------------------

    def _roles(self, changed: set[str]) -> Verdict | None:
        machine, reader = self.machine, self.change.reader
        parties = _parties(self.principal)
        basis = self.previous if self.previous is not None else self.next
        roles: set[str] = set()
        if _acts_as(_ref(basis.get("requester")), parties, reader):
            roles.add(REQUESTER)
        owner = _ref(basis.get("owner"))
        if _acts_as(owner, parties, reader):
            roles.add(machine.worker)
        if self.rule.platform is not None and self.rule.platform == self.principal.organization:
            roles.add(PLATFORM)
        if "owner" in changed and self.previous is not None:
            claim = owner is None and _ref(self.next.get("owner")) in parties
            if claim and machine is REFERRAL and self.principal.organization:
                roles.add(TARGET)
            elif not roles & {REQUESTER, PLATFORM}:
                return self._forbidden(
                    "owner is set by the requester or the coordination platform (or claimed "
                    "once, while absent, by an organisation for itself)",
                    roles,
                    "owner",
                )
        if self.previous is None:
            return self._may_create(roles)
        if self.before != self.after:
            may = machine.set_by.get(self.after, frozenset())
            if not roles & may:
                return self._forbidden(
                    f"{self.after} is set by the {' or the '.join(sorted(may))}", roles, "status"
                )
        if roles & {REQUESTER, PLATFORM} and machine is REFERRAL:
            return None
        if REQUESTER in roles:
            return None
        if machine.worker in roles:
            editable = machine.editable | ({"owner"} if "owner" in changed else set())
            extra = sorted(changed - editable)
            if extra:
                return self._forbidden(
                    f"the {machine.worker} changes only {', '.join(sorted(machine.editable))}, "
                    f"not {extra[0]}",
                    roles,
                    extra[0],
                )
            return None
        if not changed and roles:
            return None  # a party to the Task sending it again unchanged
        return self._forbidden(
            "neither the requester nor the referral target of this Task"
            if machine is REFERRAL
            else "neither the requester nor the owner of this Patient Task",
            roles,
            sorted(changed)[0] if changed else "status",
        )

    def _may_create(self, roles: set[str]) -> Verdict | None:
        """A create: the caller holds every role the path to the status needs."""
        machine = self.machine
        if machine is REFERRAL and TARGET in roles and self._sobering():
            roles = roles | {REQUESTER}  # a sobering center records its retroactive stay
        for status in machine.path(self.after):
            may = machine.set_by.get(status, frozenset())
            if not roles & may:
                return self._forbidden(
                    f"a Task created {self.after} records {status}, set by the "
                    f"{' or the '.join(sorted(may))}",
                    roles,
                    "status" if status == self.after else "requester",
                )
        return None

    def _sobering(self) -> bool:
        """Whether the referral is for a sobering center (standards.md §2.2: exempt from
        closed-loop tracking, retroactive authorization)."""
        local = _local(_ref(self.next.get("focus")))
        if local is None:
            return False
        request = _read(self.change.reader, local)
        if request is None:
            return False
        return (CS_CODES, SOBERING_CENTERS) in set(_codes(request.get("code")))

    # -- sub-referrals: what a split must be ---------------------------------------------------

    def _subreferral(self, changed: set[str]) -> Verdict | None:
        """A referral Task ``partOf`` a local referral Task is a sub-referral (standards.md
        §1.8): requested by the source Task's owner (the platform that accepted it), for the same
        member, its focus a ``filler-order`` ServiceRequest ``basedOn`` the source's focus; and
        sent only while the source is accepted, in progress or on hold (the operator, recording
        finished referrals, is exempt from that order, not from the rest)."""
        next, reader = self.next, self.change.reader
        sources = [
            (i, local)
            for i, part in enumerate(next.get("partOf") or ())
            if (local := _local(_ref(part))) is not None and local[0] == "Task"
        ]
        if not sources:
            return None
        sending = self.after != "draft" and (self.previous is None or self.before == "draft")
        if self.previous is not None and not sending and not changed & _SPLIT_ELEMENTS:
            return None
        clause = "standards.md §1.8, docs/closed-loop.md"
        for i, key in sources:
            where = f"partOf[{i}]"
            source = _read(reader, key)
            if source is None:
                return self._unprocessable(f"the source Task/{key[1]} is not stored", where, clause)
            if machine_of(source) is not REFERRAL:
                return self._unprocessable(
                    f"Task/{key[1]} is not a referral Task: a referral is part only of another "
                    "referral",
                    where,
                    clause,
                )
            owner = _ref(source.get("owner"))
            if owner is None:
                return self._unprocessable(
                    f"the source Task/{key[1]} has no owner: only the organisation a referral "
                    "was routed to splits it",
                    where,
                    clause,
                )
            if _ref(next.get("requester")) != owner:
                return self._unprocessable(
                    f"a sub-referral is requested by the organisation the source Task/{key[1]} "
                    f"was routed to ({owner})",
                    "requester",
                    clause,
                )
            if _ref(next.get("for")) != _ref(source.get("for")):
                return self._unprocessable(
                    f"a sub-referral is for the member of the source Task/{key[1]} "
                    f"({_ref(source.get('for'))})",
                    "for",
                    clause,
                )
            refused = self._filler_order(_ref(source.get("focus")), key[1], clause)
            if refused is not None:
                return refused
            status = source.get("status")
            if sending and not self.principal.operator and status not in SPLITTABLE:
                return self._unprocessable(
                    f"the source Task/{key[1]} is {status}: a referral is split once it is "
                    f"accepted, while it is {', '.join(sorted(SPLITTABLE))}",
                    where,
                    clause,
                )
        return None

    def _filler_order(self, original: str | None, source_id: str, clause: str) -> Verdict | None:
        focus = _ref(self.next.get("focus"))
        if focus is not None and "://" in focus:
            self.warnings.append(
                Issue(
                    "warning",
                    "informational",
                    f"{focus} is on another server: the server did not check that it is a "
                    "filler order of the source referral",
                    f"{self.root}.focus",
                )
            )
            return None
        local = _local(focus)
        request = None if local is None else _read(self.change.reader, local)
        if (
            local is None
            or local[0] != "ServiceRequest"
            or request is None
            or request.get("intent") != FILLER_ORDER
            or original not in {_ref(b) for b in request.get("basedOn") or ()}
        ):
            return self._unprocessable(
                f"the focus of a sub-referral is a {FILLER_ORDER} ServiceRequest basedOn the "
                f"focus of the source Task/{source_id} ({original})",
                "focus",
                clause,
            )
        return None

    # -- evidence -----------------------------------------------------------------------------

    def _evidence(self) -> Verdict | None:
        after, next = self.after, self.next
        if after in NEEDS_REASON:
            reason = next.get("statusReason")
            if not isinstance(reason, dict) or not (reason.get("text") or reason.get("coding")):
                return self._unprocessable(
                    f"{after} needs a statusReason (the Reason for Referral Loop Closure)",
                    "statusReason",
                    "ecmtask-1; standards.md §1.4, §2.2",
                )
        if after == "completed" and self.machine is REFERRAL:
            return self._completed_output()
        return None

    def _completed_output(self) -> Verdict | None:
        outputs = self.next.get("output") or []
        focus = _ref(self.next.get("focus"))
        problems: list[tuple[str, str]] = []
        for i, output in enumerate(outputs):
            if not isinstance(output, dict):
                continue
            if not any(code == RESULTING_ACTIVITY for _, code in _codes(output.get("type"))):
                continue
            where = f"output[{i}]"
            if isinstance(output.get("valueCodeableConcept"), dict):
                return None
            ref = _ref(output.get("valueReference"))
            if ref is None:
                problems.append((where, "is neither a Procedure reference nor a coded activity"))
                continue
            if "://" in ref:
                self.warnings.append(
                    Issue(
                        "warning",
                        "informational",
                        f"{ref} is on another server: the server did not check that it is a "
                        "completed Procedure based on the referral",
                        f"{self.root}.{where}.valueReference",
                    )
                )
                return None
            problem = self._procedure(ref, focus)
            if problem is None:
                return None
            problems.append((f"{where}.valueReference", problem))
        if problems:
            where, problem = problems[0]
            return self._unprocessable(
                f"the resulting activity {problem}", where, "standards.md §1.7"
            )
        return self._unprocessable(
            f"completed needs an output of type {RESULTING_ACTIVITY}: a completed Procedure "
            "based on the referral, or a coded activity",
            "output",
            "standards.md §1.7",
        )

    def _procedure(self, ref: str, focus: str | None) -> str | None:
        local = _local(ref)
        if local is None or local[0] != "Procedure":
            return f"{ref} is not a Procedure"
        procedure = _read(self.change.reader, local)
        if procedure is None:
            return f"{ref} is not stored"
        if procedure.get("status") != "completed":
            return f"{ref} is {procedure.get('status')}, not completed"
        based_on = {_ref(b) for b in procedure.get("basedOn") or ()}
        if focus is not None and (focus in based_on or self._fills(based_on, focus)):
            return None
        return f"{ref} is not basedOn the referral {focus} (or a filler order of it)"

    def _fills(self, requests: set[str | None], focus: str) -> bool:
        """Whether one of ``requests`` is a ServiceRequest ``basedOn`` ``focus`` (the filler
        order of a sub-referral, standards.md §1.8)."""
        for ref in requests:
            local = _local(ref)
            if local is None or local[0] != "ServiceRequest":
                continue
            request = _read(self.change.reader, local)
            if request is not None and focus in {_ref(b) for b in request.get("basedOn") or ()}:
                return True
        return False


__all__ = ["PATIENT_TASK", "REFERRAL", "ReferralLifecycle", "machine_of", "stamped"]
