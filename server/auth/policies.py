"""Two access policies (``policy.py``): by security label, and by a patient's compartment.

``LabelPolicy``: a restricted principal reaches only resources that carry a given security
label in ``meta.security`` (``_security`` search rows); what it writes must carry it too.

``CompartmentPolicy``: a restricted principal acting for a patient (``Principal.user`` =
``Patient/<id>``, or whom ``patient_of`` names) reaches the resources of that patient's
compartment (R4 CompartmentDefinition ``patient``, the Patient included) and the resources
of other types those resources refer to (their Practitioners, Organizations, Locations...),
so ``_include`` of a Practitioner works; it writes only inside the compartment. A principal
acting for no patient reaches nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache

from server.auth.interactions import WRITES, Interaction
from server.auth.policy import NOTHING, Facts, Narrowing, where
from server.auth.principal import Principal
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.query import (
    AnyClause,
    LabelClause,
    OwnerClause,
    ReferencedClause,
    TokenClause,
)
from server.search.registry import patient_compartment

SECURITY = "_security"
SEARCHES = frozenset({Interaction.SEARCH_TYPE, Interaction.SEARCH_SYSTEM})


class LabelPolicy:
    def __init__(self, system: str, code: str) -> None:
        self.label = (system, code)
        # searches find labelled resources through their ``_security`` index rows; every
        # other interaction decides on the version's own labels facts, which a deletion and
        # an older version keep (410 for a deletion the caller could see, history by version)
        self._search = where(TokenClause(SECURITY, ((system, code),)))
        self._facts = where(LabelClause(system, code))

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        return self._search if interaction in SEARCHES else self._facts

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return self.label in facts.labels


def _patient_user(principal: Principal) -> str | None:
    user = principal.user or ""
    return user.removeprefix("Patient/") if user.startswith("Patient/") else None


@cache
def _outside() -> tuple[str, ...]:
    """The types outside the Patient compartment (a member may refer to them)."""
    inside = {"Patient", *patient_compartment()}
    return tuple(sorted(t for t in RESOURCE_TYPES if t not in inside))


@lru_cache(maxsize=4096)
def _member(patient: str) -> OwnerClause:
    """Membership of ``patient``'s compartment, by the owners facts written at index time."""
    return OwnerClause(patient)


@lru_cache(maxsize=4096)
def _view(patient: str, type: str | None, write: bool) -> Narrowing:
    """What a principal acting for ``patient`` reaches of ``type`` (built once per patient)."""
    inside = type is None or type == "Patient" or type in patient_compartment()
    member = _member(patient)
    if write:
        return where(member) if inside else NOTHING
    if type is None:
        return where(AnyClause((member, ReferencedClause(member, _outside()))))
    if inside:
        return where(member)
    return where(ReferencedClause(member, (type,)))


class CompartmentPolicy:
    def __init__(self, patient_of: Callable[[Principal], str | None] = _patient_user) -> None:
        self._patient_of = patient_of

    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        patient = self._patient_of(principal)
        if patient is None:
            return NOTHING
        return _view(patient, type, interaction in WRITES)

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        patient = self._patient_of(principal)
        if patient is None:
            return False
        if facts.type == "Patient" or facts.type in patient_compartment():
            return f"Patient/{patient}" in facts.owners
        # outside the compartment: whether a member refers to it is the narrowing's join;
        # the facts of the resource alone cannot tell, and writes of such types are refused
        return interaction not in WRITES
