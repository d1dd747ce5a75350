"""The write rules of the relationship policy (``relationships.py``): no self-granting, and
who records a Consent.

``NoSelfGrant``: a write that creates or widens a relationship (a new grant row: Task
``owner``/``requester``, ServiceRequest ``performer``/``requester``, CareTeam participant,
EpisodeOfCare ``managingOrganization``, Coverage ``payor``) is allowed only to a principal
whose organisation already holds a live relationship with the member, before the write, or
to one of the plan's Organizations (``Matrix.plans``). A member the caller does not serve is
refused the same way whether it exists or not.

``ConsentRecorders``: a Consent is written (created, updated, deleted) only by the plan or a
registered consent recorder (``Matrix.consent_recorders``), never by an organisation its
provisions name as an actor.

Operators and the server's own derived writes are not limited by either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from server.auth.grants import KINDS, RELATIONSHIP_TYPES, grants, stored_reader
from server.auth.principal import Principal
from server.errors import Forbidden
from server.fhir.instant import now_us
from server.ports import Reader
from server.search.query import GrantClause
from server.writes.rules import ALLOW, Change, Rule, Verdict, refuse

if TYPE_CHECKING:
    from server.auth.relationships import Matrix, RelationshipPolicy

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
        for member, _org, kind in added:
            if not self._serves(change.reader, organization, member, stamp):
                element = _ELEMENTS.get((change.type, kind), "")
                return refuse(
                    Forbidden(
                        f"Not permitted: a {change.type} that gives an organisation access to a"
                        " member this client's organisation does not serve",
                        expression=f"{change.root}.{element}" if element else change.root,
                    )
                )
        return ALLOW

    def _serves(self, reader: Reader, organization: str, member: str, now: int) -> bool:
        """Whether ``organization`` holds a live relationship of any kind with ``member``."""
        matrix = self.policy.matrix
        grace = tuple((k, int(d * 86_400_000_000)) for k, d in matrix.grace_days.items())
        live = GrantClause(organization, (), KINDS, (), grace, now)
        return reader.read("Patient", member, (live,)) is not None


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
                        "Not permitted: a Consent is never written by an organisation it"
                        " permits",
                        expression=f"{change.root}.provision",
                    )
                )
        return ALLOW
