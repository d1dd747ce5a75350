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
from typing import Any

from server.auth.grants import KINDS
from server.auth.interactions import Interaction
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing, where
from server.auth.principal import Principal
from server.fhir.instant import now_us
from server.search.query import AnyClause, Clause, GrantClause, TypeClause
from server.search.registry import patient_compartment

DAY_US = 86_400_000_000
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
DEFAULT_KINDS: dict[str, tuple[str, ...]] = {
    "plan": (
        "demographics",
        "coverage",
        "consent",
        "care-management",
        "social",
        "clinical",
        "population",
    ),
    "ecm-provider": _PROVIDER,
    "care-team": _PROVIDER,
    "referral-owner": ("demographics", "consent"),
    "referral-requester": ("demographics",),
    PLATFORM: ("demographics", "consent", "care-management"),
}
DEFAULT_SCOPED = ("referral-owner", "referral-requester")
DEFAULT_GRACE_DAYS: dict[str, float] = {"referral-owner": 30, "referral-requester": 30}
DEFAULT_PURPOSES: dict[str, tuple[str, ...]] = {
    "plan": ("HPAYMT", "HOPERAT", "TREAT", "CAREMGT", "COVERAGE"),
    "ecm-provider": ("TREAT", "CAREMGT", "ETREAT"),
    "care-team": ("TREAT", "CAREMGT", "ETREAT"),
    "referral-owner": ("TREAT", "CAREMGT", "ETREAT"),
    "referral-requester": ("TREAT", "CAREMGT", "ETREAT"),
    PLATFORM: ("HOPERAT", "CAREMGT", "TREAT"),
}


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

    def __post_init__(self) -> None:
        compartment = _compartment()
        known = {*self.classes, "clinical"}
        for name, types in self.classes.items():
            unknown = [t for t in types if t not in compartment]
            if unknown:
                raise MatrixError(
                    f"data class {name!r}: {', '.join(unknown)} not of the Patient compartment"
                )
        for kind, classes in self.kinds.items():
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

    def class_of(self, type: str) -> str | None:
        """The data class of a Patient compartment type (None: no class reaches it)."""
        for name, types in self.classes.items():
            if type in types:
                return name
        return None if type in NO_CLASS else "clinical"

    def reaches(self, kind: str, type: str) -> bool:
        found = self.class_of(type)
        return found is not None and found in self.kinds.get(kind, ())

    @classmethod
    def load(cls, path: str | Path) -> Matrix:
        """A plan's matrix from a JSON file: any of ``classes``, ``kinds``, ``scoped``,
        ``grace_days``, ``purposes`` (each replaces the default of its part)."""
        try:
            data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MatrixError(f"access matrix {path}: {exc}") from exc
        if not isinstance(data, dict) or set(data) - {
            "classes",
            "kinds",
            "scoped",
            "grace_days",
            "purposes",
        }:
            raise MatrixError(
                f"access matrix {path}: an object of classes, kinds, scoped, grace_days, purposes"
            )
        try:
            parts: dict[str, Any] = {}
            for name in ("classes", "kinds", "purposes"):
                if name in data:
                    parts[name] = {str(k): tuple(map(str, v)) for k, v in data[name].items()}
            if "scoped" in data:
                parts["scoped"] = tuple(map(str, data["scoped"]))
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
        self._shapes: dict[tuple[str, tuple[str, ...], str | None], Clause | None] = {}

    # -- which kinds a principal reaches through

    def kinds(self, principal: Principal) -> tuple[str, ...]:
        """The relationship kinds whose purposes the principal's purposes of use include."""
        purposes = set(principal.purposes)
        served = self.matrix.purposes
        return tuple(k for k in KINDS if not served.get(k) or purposes & set(served[k]))

    def _platform_types(self, principal: Principal) -> tuple[str, ...]:
        purposes = set(principal.purposes)
        served = self.matrix.purposes.get(PLATFORM)
        if served and not purposes & set(served):
            return ()
        return tuple(t for t in sorted(_compartment()) if self.matrix.reaches(PLATFORM, t))

    # -- the policy

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        if principal.operator:
            return EVERYTHING
        organization = principal.organization
        if organization is None:
            return NOTHING
        if type is not None and type not in _compartment():
            return EVERYTHING  # directory data and definitions
        if self.platform is not None and organization == self.platform:
            types = self._platform_types(principal)
            if type is not None:
                return EVERYTHING if type in types else NOTHING
            return where(TypeClause((*types, *_outside())))
        kinds = self.kinds(principal)
        shape = self._shape(organization, kinds, type)
        if shape is None:
            return NOTHING
        return where(_at(shape, now_us()))

    def _shape(self, organization: str, kinds: tuple[str, ...], type: str | None) -> Clause | None:
        """The clause of an organisation reaching through ``kinds`` (its time set per
        request), built once per organisation, kinds and type."""
        key = (organization, kinds, type)
        if key in self._shapes:
            return self._shapes[key]
        matrix = self.matrix
        types = sorted(_compartment()) if type is None else [type]
        reach = tuple(
            (t, _compartment()[t], reaching)
            for t in types
            if t != "Patient" and (reaching := tuple(k for k in kinds if matrix.reaches(k, t)))
        )
        include_self = tuple(
            k for k in kinds if "Patient" in types and matrix.reaches(k, "Patient")
        )
        scoped = tuple(k for k in kinds if k in matrix.scoped)
        grace = tuple(
            (k, int(matrix.grace_days[k] * DAY_US)) for k in kinds if k in matrix.grace_days
        )
        found: Clause | None = None
        if reach or include_self or scoped:
            found = GrantClause(organization, reach, include_self, scoped, grace, 0)
            if type is None:
                found = AnyClause((found, TypeClause(_outside())))
        elif type is None:
            found = TypeClause(_outside())  # no relationship can reach: directory data only
        if len(self._shapes) < 4096:
            self._shapes[key] = found
        return found

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        """By organisation and type: whether the member's relationships reach the version is
        the narrowing's join, which the facts alone cannot tell."""
        if principal.operator:
            return True
        organization = principal.organization
        if organization is None:
            return False
        if facts.type not in _compartment():
            return True
        if self.platform is not None and organization == self.platform:
            return facts.type in self._platform_types(principal)
        return True


def _at(shape: Clause, now: int) -> Clause:
    """``shape`` with the time of its grant clauses set to ``now``."""
    if isinstance(shape, GrantClause):
        return replace(shape, now=now)
    if isinstance(shape, AnyClause):
        return AnyClause(tuple(_at(c, now) for c in shape.alternatives))
    return shape


def matrix_of(path: str | None) -> Matrix:
    return Matrix() if path is None else Matrix.load(path)


def policies(
    enabled: bool, matrix: str | None, platform: str | None
) -> Sequence[RelationshipPolicy]:
    """The relationship policy the settings ask for (none when off)."""
    return [RelationshipPolicy(matrix_of(matrix), platform)] if enabled else []
