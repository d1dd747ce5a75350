"""Care relationships as an access policy: an organisation reaches the members it serves, and
of each only the data classes its relationship needs.

The relationships are rows of the ``access_grant`` table (``grants.py``), kept in the same
transaction as the Coverage, EpisodeOfCare, CareTeam, Task and ServiceRequest they come from.
The policy narrows every interaction of a principal acting for an organisation
(``Principal.organization``) by one ``GrantClause`` (``search/query.py``), compiled into the
statement the door runs (``store/sql/query.py``): no decision is cached in the process, so a
new referral grants access and an ended relationship removes it at the next request on every
worker.

``Matrix`` is the plan's configuration (``docs/security.md``, "Relationships and data
classes"): which resource types make up each data class, which classes each relationship
kind reaches, which kinds also reach the single resources their rows name (a referral and
its supporting information), the grace period after a relationship ends, and which purposes
of use each kind serves (a principal reaches through a kind only when its purposes include
one of them). Types outside the Patient compartment (Organization, Practitioner, Location,
definitions...) are directory data every organisation reads; a type of the compartment that
no class lists is reached by no relationship (``AuditEvent``).

Principals: an operator (``--role admin``, the local operator) is not narrowed; the
coordination platform (``settings.coordination_platform``) reaches the classes ``platform``
lists for every member (it routes every referral); any other principal acting for an
organisation reaches what its relationships grant; a principal acting for none reaches
nothing. Writes are narrowed like reads: a write must leave a version the caller reaches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.auth.emergency import ETREAT
from server.auth.grants import KINDS, PART2_LABELS
from server.auth.interactions import WRITES, Interaction
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing, where
from server.auth.principal import Principal
from server.fhir.instant import now_us
from server.search.query import (
    AllClause,
    AnyClause,
    Clause,
    GrantClause,
    ReferenceClause,
    ReferenceValue,
    TypeClause,
)
from server.search.registry import patient_compartment

if TYPE_CHECKING:
    from server.writes.rules import Rule

DAY_US = 86_400_000_000
SECOND_US = 1_000_000
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
PLATFORM = "platform"

#: the default data classes (types of the Patient compartment; ``clinical`` also takes every
#: compartment type no other class lists, but AuditEvent)
DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "demographics": ("Patient", "RelatedPerson", "Person"),
    "coverage": (
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "EnrollmentRequest",
        "Claim",
        "ClaimResponse",
        "ExplanationOfBenefit",
        "Account",
        "ChargeItem",
        "Invoice",
    ),
    "consent": ("Consent",),
    "care-management": (
        "EpisodeOfCare",
        "CareTeam",
        "CarePlan",
        "Goal",
        "Task",
        "ServiceRequest",
        "Communication",
        "CommunicationRequest",
        "Appointment",
        "AppointmentResponse",
        "Schedule",
        "Flag",
        "RequestGroup",
    ),
    "social": ("QuestionnaireResponse",),
    "population": ("Group", "List", "MeasureReport"),
}
NO_CLASS = frozenset({"AuditEvent"})

_PROVIDER = ("demographics", "coverage", "consent", "care-management", "social", "clinical")
_ALL = (*_PROVIDER, "population")
DEFAULT_KINDS: dict[str, tuple[str, ...]] = {
    "plan": _ALL,
    "ecm-provider": _PROVIDER,
    "care-team": _PROVIDER,
    "referral-owner": ("demographics", "consent", "own"),
    "referral-requester": ("demographics",),
    PLATFORM: ("demographics", "consent", "care-management"),
}
DEFAULT_SCOPED = ("referral-owner", "referral-requester")
#: what makes a resource an organisation's own (the pseudo-class ``own``): the parameters
#: of its type that name the organisation
DEFAULT_OWN: dict[str, tuple[str, ...]] = {
    "Task": ("owner",),
    "Procedure": ("performer",),
    "Communication": ("sender",),
}
#: the pseudo-class of writes ``referral``: the referral ServiceRequests and Tasks a scoped
#: kind's own rows name (the requester's referral and its Task), never other types they name
REFERRAL = "referral"
REFERRAL_TYPES = ("ServiceRequest", "Task")
#: the classes each kind may write (create, update, patch, delete) of the members it serves
DEFAULT_WRITES: dict[str, tuple[str, ...]] = {
    "plan": (*_ALL, "own"),
    "ecm-provider": ("care-management", "clinical", "social", "own"),
    "care-team": ("care-management", "clinical", "social", "own"),
    "referral-owner": ("own",),
    "referral-requester": (REFERRAL,),
    PLATFORM: ("care-management",),
}
DEFAULT_GRACE_DAYS: dict[str, float] = {"referral-owner": 30, "referral-requester": 30}
DEFAULT_PURPOSES: dict[str, tuple[str, ...]] = {
    "plan": ("HPAYMT", "HOPERAT", "TREAT", "CAREMGT", "COVERAGE"),
    "ecm-provider": ("TREAT", "CAREMGT", "ETREAT"),
    "care-team": ("TREAT", "CAREMGT", "ETREAT"),
    "referral-owner": ("TREAT", "CAREMGT", "ETREAT"),
    "referral-requester": ("TREAT", "CAREMGT", "ETREAT"),
    PLATFORM: ("HOPERAT", "CAREMGT", "TREAT"),
}


_PARTS = (
    "consent",
    "covered_types",
    "part2_labels",
    "classes",
    "kinds",
    "scoped",
    "grace_days",
    "purposes",
    "writes",
    "own",
    "plans",
    "consent_recorders",
)


class MatrixError(ValueError):
    """A data-class matrix that cannot be used as given."""


@cache
def _compartment() -> dict[str, tuple[str, ...]]:
    return {t: tuple(sorted(codes)) for t, codes in patient_compartment().items()}


@dataclass(frozen=True)
class Matrix:
    """Data classes by relationship kind (``docs/security.md``): ``classes`` (class → types),
    ``kinds`` (kind → classes), ``scoped`` (kinds whose rows also reach the resources they
    name), ``grace_days`` (kind → days a relationship still reaches after it ended) and
    ``purposes`` (kind → the purposes of use it serves)."""

    classes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    kinds: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_KINDS))
    scoped: tuple[str, ...] = DEFAULT_SCOPED
    grace_days: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GRACE_DAYS))
    purposes: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_PURPOSES)
    )
    writes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_WRITES))
    own: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_OWN))
    plans: tuple[str, ...] = ()
    consent_recorders: tuple[str, ...] = ()
    consent: bool = True
    covered_types: tuple[str, ...] = ("prov", "ins", "pay")
    part2_labels: tuple[str, ...] = tuple(sorted(f"{s}|{c}" for s, c in PART2_LABELS))

    def __post_init__(self) -> None:
        compartment = _compartment()
        known = {*self.classes, "clinical", "own", REFERRAL}
        for name, types in self.classes.items():
            unknown = [t for t in types if t not in compartment]
            if unknown:
                raise MatrixError(
                    f"data class {name!r}: {', '.join(unknown)} not of the Patient compartment"
                )
        for kind, classes in (*self.kinds.items(), *self.writes.items()):
            if kind not in (*KINDS, PLATFORM):
                raise MatrixError(f"unknown relationship kind {kind!r}")
            missing = [c for c in classes if c not in known]
            if missing:
                raise MatrixError(f"kind {kind!r}: unknown data class {', '.join(missing)}")
        for kind in (*self.scoped, *self.grace_days, *self.purposes):
            if kind not in (*KINDS, PLATFORM):
                raise MatrixError(f"unknown relationship kind {kind!r}")
        if any(days < 0 for days in self.grace_days.values()):
            raise MatrixError("a grace period is never negative")
        for type, params in self.own.items():
            if type not in compartment or not params:
                raise MatrixError(f"own: {type} is not of the Patient compartment, or no parameter")
        for org in (*self.plans, *self.consent_recorders):
            if not org.startswith("Organization/"):
                raise MatrixError(f"{org!r}: plans and consent recorders are Organization/<id>")

    def class_of(self, type: str) -> str | None:
        """The data class of a Patient compartment type (None: no class reaches it)."""
        for name, types in self.classes.items():
            if type in types:
                return name
        return None if type in NO_CLASS else "clinical"

    def reaches(self, kind: str, type: str, write: bool = False) -> bool:
        """Whether ``kind`` reaches (``write``: may write) every resource of ``type`` of its
        members."""
        found = self.class_of(type)
        classes = (self.writes if write else self.kinds).get(kind, ())
        return found is not None and found in classes

    def writes_referral(self, kind: str, type: str) -> bool:
        """Whether ``kind`` writes the referral ServiceRequests and Tasks its scoped rows name
        (the pseudo-class ``referral`` of ``writes``)."""
        return (
            type in REFERRAL_TYPES
            and kind in self.scoped
            and REFERRAL in self.writes.get(kind, ())
        )

    def owns(self, kind: str, type: str, write: bool = False) -> bool:
        """Whether ``kind`` reaches (``write``: may write) its own resources of ``type``."""
        classes = (self.writes if write else self.kinds).get(kind, ())
        return type in self.own and "own" in classes

    @classmethod
    def load(cls, path: str | Path) -> Matrix:
        """A plan's matrix from a JSON file: any of ``_PARTS`` (each replaces the default of
        its part)."""
        try:
            data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MatrixError(f"access matrix {path}: {exc}") from exc
        if not isinstance(data, dict) or set(data) - set(_PARTS):
            raise MatrixError(f"access matrix {path}: an object of {', '.join(_PARTS)}")
        try:
            parts: dict[str, Any] = {}
            for name in ("classes", "kinds", "purposes", "writes", "own"):
                if name in data:
                    parts[name] = {str(k): tuple(map(str, v)) for k, v in data[name].items()}
            if "consent" in data:
                if not isinstance(data["consent"], bool):
                    raise TypeError("consent is true or false")
                parts["consent"] = data["consent"]
            for name in ("scoped", "plans", "consent_recorders", "covered_types", "part2_labels"):
                if name in data:
                    parts[name] = tuple(map(str, data[name]))
            if "grace_days" in data:
                parts["grace_days"] = {str(k): float(v) for k, v in data["grace_days"].items()}
        except (AttributeError, TypeError, ValueError) as exc:
            raise MatrixError(f"access matrix {path}: {exc}") from exc
        return cls(**parts)


@lru_cache(maxsize=64)
def _outside() -> tuple[str, ...]:
    from server.fhir.resource_types import RESOURCE_TYPES

    return tuple(sorted(t for t in RESOURCE_TYPES if t not in _compartment()))


class RelationshipPolicy:
    def __init__(self, matrix: Matrix | None = None, platform: str | None = None) -> None:
        self.matrix = matrix or Matrix()
        self.platform = platform
        self._shapes: dict[tuple[str, tuple[str, ...], str | None, bool], Clause | None] = {}
        self._glass: dict[tuple[str, str | None], Clause | None] = {}
        # the narrowing of the current second, per organisation, kinds, type, write and glass
        self._timed: dict[
            tuple[str, tuple[str, ...], str | None, bool, bool], tuple[int, Narrowing]
        ] = {}

    # -- which kinds a principal reaches through

    def kinds(self, principal: Principal) -> tuple[str, ...]:
        """The relationship kinds whose purposes the principal's purposes of use include."""
        purposes = set(principal.purposes)
        served = self.matrix.purposes
        return tuple(k for k in KINDS if not served.get(k) or purposes & set(served[k]))

    def _platform_types(self, principal: Principal, write: bool) -> tuple[str, ...]:
        purposes = set(principal.purposes)
        served = self.matrix.purposes.get(PLATFORM)
        if served and not purposes & set(served):
            return ()
        return tuple(
            t for t in sorted(_compartment()) if self.matrix.reaches(PLATFORM, t, write)
        )

    # -- the policy

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        if principal.operator:
            return EVERYTHING
        organization = principal.organization
        if organization is None:
            return NOTHING
        write = interaction in WRITES
        if type is not None and type not in _compartment():
            # directory data and definitions: read by every organisation, written by operators
            return NOTHING if write else EVERYTHING
        if write and type == "Consent" and organization in self.matrix.consent_recorders:
            return EVERYTHING  # who may record which Consent: ConsentRecorders
        if self.platform is not None and organization == self.platform:
            types = self._platform_types(principal, write)
            if type is not None:
                return EVERYTHING if type in types else NOTHING
            return where(TypeClause(types if write else (*types, *_outside())))
        kinds = self.kinds(principal)
        glass = not write and ETREAT in principal.purposes
        # the statement's time to the second: the narrowing is reused for a second (and
        # ``sql/query.py`` caches its compiled form by clause); periods are dates, grace
        # periods days
        second = now_us() // SECOND_US * SECOND_US
        key = (organization, kinds, type, write, glass)
        timed = self._timed.get(key)
        if timed is not None and timed[0] == second:
            return timed[1]
        shape = self._shape(organization, kinds, type, write)
        if glass:
            # break the glass (asserted: ``emergency.py``): any member, consent still applied
            emergency = self._emergency(organization, type)
            if emergency is not None:
                shape = emergency if shape is None else AnyClause((shape, emergency))
        narrowing = NOTHING if shape is None else where(_at(shape, second))
        self._timed[key] = (second, narrowing)
        return narrowing

    def _shape(
        self, organization: str, kinds: tuple[str, ...], type: str | None, write: bool
    ) -> Clause | None:
        """The clause of an organisation reaching (``write``: writing) through ``kinds``
        (its time set per request), built once per organisation, kinds and type."""
        key = (organization, kinds, type, write)
        if key in self._shapes:
            return self._shapes[key]
        matrix = self.matrix
        types = sorted(_compartment()) if type is None else [type]
        reach = tuple(
            (t, _compartment()[t], reaching)
            for t in types
            if t != "Patient"
            and (reaching := tuple(k for k in kinds if matrix.reaches(k, t, write)))
        )
        include_self = tuple(
            k for k in kinds if "Patient" in types and matrix.reaches(k, "Patient", write)
        )
        # the single resources a referral's rows name are read, never written, through them
        # (a requester writes its own referral: ``_requested`` below)
        scoped = () if write else tuple(k for k in kinds if k in matrix.scoped)
        grace = tuple(
            (k, int(matrix.grace_days[k] * DAY_US)) for k in kinds if k in matrix.grace_days
        )
        parts: list[Clause] = []
        if type is None and not write:
            # directory data, first: the cheapest test decides every directory row at once
            parts.append(TypeClause(_outside()))
        consent = self._consent()
        if reach or include_self or scoped:
            parts.append(
                GrantClause(organization, reach, include_self, scoped, grace, 0, *consent)
            )
        for t in types:
            owners = tuple(k for k in kinds if matrix.owns(k, t, write))
            if owners:
                own = _own(organization, t, matrix.own[t], owners, grace, consent)
                parts.append(own if type is not None else AllClause((TypeClause((t,)), own)))
        if write and type in REFERRAL_TYPES:
            writers = tuple(k for k in kinds if matrix.writes_referral(k, type))
            if writers:
                parts.append(_requested(organization, writers, grace))
        found: Clause | None = None
        if parts:
            found = parts[0] if len(parts) == 1 else AnyClause(tuple(parts))
        if len(self._shapes) < 4096:
            self._shapes[key] = found
        return found

    def _emergency(self, organization: str, type: str | None) -> Clause | None:
        """Break the glass: the classes the kinds serving ETREAT read, of any member whose
        release of information (deny, covered entity or permit, Part 2 permit) lets the
        organisation have them; built once per organisation and type."""
        key = (organization, type)
        if key in self._glass:
            return self._glass[key]
        matrix = self.matrix
        kinds = tuple(k for k in KINDS if ETREAT in matrix.purposes.get(k, ()))
        types = sorted(_compartment()) if type is None else [type]
        reach = tuple(
            (t, _compartment()[t], (ETREAT,))
            for t in types
            if t != "Patient" and any(matrix.reaches(k, t) for k in kinds)
        )
        include_self = (
            (ETREAT,)
            if "Patient" in types and any(matrix.reaches(k, "Patient") for k in kinds)
            else ()
        )
        found: Clause | None = None
        if reach or include_self:
            found = GrantClause(
                organization, reach, include_self, (), (), 0, *self._consent(), emergency=True
            )
        if len(self._glass) < 4096:
            self._glass[key] = found
        return found

    def _consent(self) -> tuple[bool, tuple[tuple[str, str], ...], tuple[str, ...]]:
        """The consent conditions of the grant clauses (``GrantClause``)."""
        matrix = self.matrix
        if not matrix.consent:
            return False, (), ()
        covered = tuple((ORGANIZATION_TYPE, code) for code in matrix.covered_types)
        return True, covered, matrix.part2_labels

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        """By organisation and type: whether the member's relationships reach the version is
        the narrowing's join, which the facts alone cannot tell."""
        if principal.operator:
            return True
        organization = principal.organization
        if organization is None:
            return False
        write = interaction in WRITES
        if facts.type not in _compartment():
            return not write
        if write and facts.type == "Consent" and organization in self.matrix.consent_recorders:
            return True
        if self.platform is not None and organization == self.platform:
            return facts.type in self._platform_types(principal, write)
        return True

    def rules(self) -> list[Rule]:
        """The write rules that come with the policy (``grant_rules.py``): no self-granting,
        Consent written by the plan or a consent recorder only."""
        from server.auth.grant_rules import ConsentRecorders, NoSelfGrant

        return [NoSelfGrant(self), ConsentRecorders(self.matrix)]


def _own(
    organization: str,
    type: str,
    params: tuple[str, ...],
    kinds: tuple[str, ...],
    grace: tuple[tuple[str, int], ...],
    consent: tuple[bool, tuple[tuple[str, str], ...], tuple[str, ...]],
) -> Clause:
    """Resources of ``type`` naming the organisation under one of ``params``, of a member it
    serves through one of ``kinds``."""
    org = ReferenceValue("Organization", organization.removeprefix("Organization/"))
    naming = [ReferenceClause(p, (org,)) for p in params]
    named: Clause = naming[0] if len(naming) == 1 else AnyClause(tuple(naming))
    reach = ((type, _compartment()[type], kinds),)
    member = GrantClause(organization, reach, (), (), grace, 0, *consent)
    return AllClause((named, member))


def _requested(
    organization: str, kinds: tuple[str, ...], grace: tuple[tuple[str, int], ...]
) -> Clause:
    """A referral (ServiceRequest or Task) naming the organisation as its ``requester``, that
    a row of one of ``kinds`` scopes to itself: what a referrer writes of its own referral.
    Writing its own referral discloses nothing of the member, so no release of information
    is asked for; reading it back is the kind's read classes and the member's ROI."""
    org = ReferenceValue("Organization", organization.removeprefix("Organization/"))
    return AllClause(
        (ReferenceClause("requester", (org,)), GrantClause(organization, (), (), kinds, grace, 0))
    )


def _at(shape: Clause, now: int) -> Clause:
    """``shape`` with the time of its grant clauses set to ``now``."""
    if isinstance(shape, GrantClause):
        return replace(shape, now=now)
    if isinstance(shape, AnyClause):
        return AnyClause(tuple(_at(c, now) for c in shape.alternatives))
    if isinstance(shape, AllClause):
        return AllClause(tuple(_at(c, now) for c in shape.clauses))
    return shape


def matrix_of(path: str | None) -> Matrix:
    return Matrix() if path is None else Matrix.load(path)


def policies(
    enabled: bool, matrix: str | None, platform: str | None
) -> Sequence[RelationshipPolicy]:
    """The relationship policy the settings ask for (none when off)."""
    return [RelationshipPolicy(matrix_of(matrix), platform)] if enabled else []
