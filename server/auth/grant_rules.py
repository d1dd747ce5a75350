"""The write rules of the relationship policy (``relationships.py``): no self-granting, and
who records a Consent.

``NoSelfGrant``: a write that creates or widens a relationship (a new grant row: Task
``owner``/``requester``, ServiceRequest ``performer``/``requester``, CareTeam participant,
EpisodeOfCare ``managingOrganization``, Coverage ``payor``) is allowed only to a principal
whose organisation already holds a live relationship with the member, before the write, or
to one of the plan's Organizations (``Matrix.plans``). A member the caller does not serve is
refused the same way whether it exists or not.

**Intake from any source** (seed 003 VI.D.5; decision 0027): the creation of an ECM
referral — an ``ecm-referral`` ServiceRequest, or a Task whose ``focus``/``basedOn`` names
one — whose ``requester`` is the caller's own organisation may add rows for a member the
caller does not serve, and only these: the caller's ``referral-requester`` rows (its own
referral, its Task and what the matrix gives that kind) and ``referral-owner`` rows of
the plan (an Organization of ``Matrix.plans``, or one holding a live ``plan`` relationship
with the member: its Coverage's payor). The member must exist. A requester's relationship
never counts as serving the member for another write's grants, so the intake cannot be
chained into granting anyone else.

``ConsentRecorders``: a Consent is written (created, updated, deleted) only by the plan or a
registered consent recorder (``Matrix.consent_recorders``), never by an organisation its
provisions name as an actor.

Operators and the server's own derived writes are not limited by either.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from server.auth.grants import (
    KINDS,
    RELATIONSHIP_TYPES,
    grants,
    organizations,
    references,
    stored_reader,
)
from server.auth.principal import Principal
from server.ecm.intake import is_ecm_referral
from server.errors import Forbidden
from server.fhir.instant import now_us
from server.ports import Reader
from server.search.query import GrantClause
from server.writes.rules import ALLOW, Change, Rule, Verdict, refuse


class Matrix(Protocol):
    """What the rules read of the relationship matrix (``relationships.Matrix``: the policy
    there builds these rules, so this module does not import it)."""

    @property
    def plans(self) -> tuple[str, ...]: ...
    @property
    def consent_recorders(self) -> tuple[str, ...]: ...
    @property
    def grace_days(self) -> Mapping[str, float]: ...


class RelationshipPolicy(Protocol):
    """The policy the rules come with (``relationships.RelationshipPolicy``)."""

    @property
    def matrix(self) -> Matrix: ...


# the element of each source type whose organisation a grant kind comes from
_ELEMENTS = {
    ("Task", "referral-owner"): "owner",
    ("Task", "referral-requester"): "requester",
    ("ServiceRequest", "referral-owner"): "performer",
    ("ServiceRequest", "referral-requester"): "requester",
    ("CareTeam", "care-team"): "participant",
    ("EpisodeOfCare", "ecm-provider"): "managingOrganization",
    ("Coverage", "plan"): "payor",
}


REQUESTER, OWNER = "referral-requester", "referral-owner"
#: the kinds by which an organisation serves a member, for granting others: a referral's
#: requester does not (anyone may refer, VI.D.5)
SERVING = tuple(k for k in KINDS if k != REQUESTER)


def _limited(change: Change) -> str | None:
    """The organisation of a principal these rules limit (None: not limited)."""
    principal: Principal = change.principal
    if principal.allow_all or principal.operator or change.depth > 0:
        return None
    return principal.organization


class NoSelfGrant(Rule):
    name = "no-self-granting"
    types = RELATIONSHIP_TYPES

    def __init__(self, policy: RelationshipPolicy) -> None:
        self.policy = policy

    def check(self, change: Change) -> Verdict:
        organization = _limited(change)
        if organization is None or organization in self.policy.matrix.plans:
            return ALLOW
        read = stored_reader(change.reader.read)
        stamp = now_us()
        before = _keys(grants(change.type, change.id, change.previous or {}, stamp, read))
        after = _keys(
            grants(change.type, change.id, change.next or {}, stamp, read) if change.next else []
        )
        added = sorted(after - before)
        intake: bool | None = None  # decided once, when a row needs it
        for member, org, kind in added:
            if self._serves(change.reader, organization, member, stamp):
                continue
            if intake is None:
                intake = self._intake(change, organization)
            if not intake or not self._taken(
                change.reader, organization, (member, org, kind), stamp
            ):
                element = _ELEMENTS.get((change.type, kind), "")
                return refuse(
                    Forbidden(
                        f"Not permitted: a {change.type} that gives an organisation access to a"
                        " member this client's organisation does not serve",
                        expression=f"{change.root}.{element}" if element else change.root,
                    )
                )
        return ALLOW

    def _serves(
        self, reader: Reader, organization: str, member: str, now: int,
        kinds: tuple[str, ...] = SERVING,
    ) -> bool:
        """Whether ``organization`` holds a live relationship of one of ``kinds`` with
        ``member``."""
        matrix = self.policy.matrix
        grace = tuple((k, int(d * 86_400_000_000)) for k, d in matrix.grace_days.items())
        live = GrantClause(organization, (), kinds, (), grace, now)
        return reader.read("Patient", member, (live,)) is not None

    def _intake(self, change: Change, organization: str) -> bool:
        """Whether the write creates an ECM referral the caller's organisation requests
        (seed 003 VI.D.5: referrals come from any source)."""
        resource = change.next
        if change.previous is not None or resource is None or not _referral(change):
            return False
        return organizations(resource.get("requester")) == [organization]

    def _taken(
        self, reader: Reader, organization: str, row: tuple[str, str, str], now: int
    ) -> bool:
        """Whether an intake may add ``row`` for an existing member: the caller's own
        requester row, or an owner row of the plan (``Matrix.plans``, or an organisation
        holding a live ``plan`` relationship with the member)."""
        member, org, kind = row
        current = reader.read("Patient", member)
        if current is None or current.deleted:
            return False
        if kind == REQUESTER:
            return org == organization
        return kind == OWNER and (
            org in self.policy.matrix.plans or self._serves(reader, org, member, now, ("plan",))
        )


def _referral(change: Change) -> bool:
    """An ECM referral: an ``ecm-referral`` ServiceRequest, or a Task whose ``focus`` or
    ``basedOn`` names one (as stored in the unit: a transaction's own ServiceRequest too)."""
    resource = change.next or {}
    if change.type == "ServiceRequest":
        return is_ecm_referral(resource)
    if change.type != "Task":
        return False
    read = stored_reader(change.reader.read)
    for element in ("focus", "basedOn"):
        for type, id in references(resource.get(element)):
            if type == "ServiceRequest" and is_ecm_referral(read(type, id)):
                return True
    return False


def _keys(rows: list[tuple[Any, ...]]) -> set[tuple[str, str, str]]:
    """(member, organisation, kind) of the member-wide rows."""
    return {(r[0], r[1], r[2]) for r in rows if not r[5] and r[2] in KINDS}


def _actors(provision: Any) -> Iterator[str]:
    if not isinstance(provision, dict):
        return
    for actor in provision.get("actor") or ():
        if isinstance(actor, dict):
            ref = actor.get("reference")
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                yield ref["reference"]
    for nested in provision.get("provision") or ():
        yield from _actors(nested)


class ConsentRecorders(Rule):
    name = "consent-recorders"
    types = frozenset({"Consent"})

    def __init__(self, matrix: Matrix) -> None:
        self.matrix = matrix

    def check(self, change: Change) -> Verdict:
        organization = _limited(change)
        if organization is None:
            return ALLOW
        if organization not in (*self.matrix.plans, *self.matrix.consent_recorders):
            return refuse(
                Forbidden(
                    "Not permitted: a Consent is written by the plan or a registered consent"
                    " recorder",
                    expression=change.root,
                )
            )
        for body in (change.previous, change.next):
            if body is not None and organization in set(_actors(body.get("provision"))):
                return refuse(
                    Forbidden(
                        "Not permitted: a Consent is never written by an organisation it permits",
                        expression=f"{change.root}.provision",
                    )
                )
        return ALLOW
