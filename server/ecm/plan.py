"""Plan configuration of the eligibility rules: the choices the policy leaves to the health plan.

Each value has a default and a setting (``CALAIM_FHIR_*``, :mod:`server.settings`); every answer
that rests on one names it in the criterion's explanation. ``docs/eligibility.md`` lists them
with the clause that leaves the choice open.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.ecm.codes import split

COMPLEX_SOCIAL_FACTOR = "http://calaim-fhir.org/fhir/ValueSet/ecm-elig-complex-social-factor"


@dataclass(frozen=True, slots=True)
class PlanConfig:
    #: ``(system, value)`` of the plan Organization's identifier (VI.A.1 "assigned to" the plan);
    #: None: any Medi-Cal managed care payor counts, and the answer says so
    identifier: tuple[str, str] | None = None
    #: days ahead an expected release date makes custody "transitioning" (VI.A.4.e.1, VI.A.5.d.1)
    release_horizon_days: int = 90
    #: days after which pregnancy evidence with no delivery is stale (VI.A.4.h.1; seed 000)
    pregnancy_stale_days: int = 300
    #: days before (evidence) and after (loss date) ``asOf`` of "imminently lose housing in the
    #: next 30 days" (VI.A.4.a.2.e, VI.A.4.b.2.e, VI.A.5.a.1.e)
    housing_loss_days: int = 30
    #: whether a youth released from an adult facility counts for VI.A.5.d.1 ("youth
    #: correctional facility"); the explanation says which reading was applied
    youth_adult_facility: bool = True
    #: the ValueSet of complex social factors (VI.A.4.d.3, VI.A.4.f.2)
    complex_social_factor: str = COMPLEX_SOCIAL_FACTOR
    #: days after a discharge during which a member is still "exiting" an inpatient stay or
    #: recuperative care (Community Supports, short-term post-hospitalization housing, seed 004)
    discharge_days: int = 7

    @staticmethod
    def parse_identifier(token: str | None) -> tuple[str, str] | None:
        """``system|value`` -> (system, value); None or empty -> None. A token without both
        parts is a ValueError."""
        if not token:
            return None
        system, value = split(token)
        if not system or not value or "|" not in token:
            raise ValueError(f"a plan identifier is system|value, got {token!r}")
        return system, value

    @property
    def identifier_token(self) -> str | None:
        return None if self.identifier is None else "|".join(self.identifier)


DEFAULT = PlanConfig()


@dataclass(frozen=True, slots=True)
class Payor:
    """The plan as a Coverage names it: its identifier, and the references (``Organization/id``,
    absolute URLs, inline fullUrls) that resolve to an Organization carrying it."""

    identifier: tuple[str, str] | None
    references: frozenset[str] = frozenset()

    def pays(self, coverage: Mapping[str, Any]) -> bool:
        """Whether one of ``Coverage.payor`` names the plan, by reference or by identifier."""
        for payor in coverage.get("payor") or []:
            if not isinstance(payor, Mapping):
                continue
            if payor.get("reference") in self.references:
                return True
            ident = payor.get("identifier")
            if isinstance(ident, Mapping) and (
                (ident.get("system"), ident.get("value")) == self.identifier
            ):
                return True
        return False
