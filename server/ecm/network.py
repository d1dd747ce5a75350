"""The plan's ECM network, as the data records it (docs/ecm-workflow.md, "Assignment").

A **contracted ECM provider** is an organisation providing an active ``ecm-provider-service``
HealthcareService of category ``ecm``; a **letter of agreement** (seed 003 VI.G.3.c: the
existing provider "agrees to a letter of agreement") is such a HealthcareService carrying the
``letter-of-agreement`` extension with its period — an agreement, not a contract. Read here
once, for ``$ecm-assign`` (``assignment_facts.py``) and for continuity of care
(``continuity.py``); there is no configured list of the same providers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from server.ecm.calendar import local_date

BASE = "http://calaim-fhir.org/fhir"
LOA_EXT = f"{BASE}/StructureDefinition/letter-of-agreement"
CALAIM_PROGRAM = f"{BASE}/CodeSystem/calaim-program"
#: the search of the network's services: active, category ``ecm``
SERVICES = f"service-category={CALAIM_PROGRAM}|ecm&active=true"
IN_NETWORK = "in-network"
LETTER_OF_AGREEMENT = "letter-of-agreement"


@dataclass(frozen=True, slots=True)
class Agreement:
    """What an ECM HealthcareService says of its provider's place in the network:
    ``provider`` (``providedBy``) and, under a letter of agreement, its period (either end may be
    open); None: a contract."""

    provider: str
    letter_of_agreement: tuple[date | None, date | None] | None

    def in_force(self, day: date) -> bool:
        """Whether the agreement holds on ``day`` (a contract: while the service is active)."""
        if self.letter_of_agreement is None:
            return True
        start, end = self.letter_of_agreement
        return (start is None or start <= day) and (end is None or day <= end)


def agreement(service: dict[str, Any]) -> Agreement | None:
    """The agreement an active ECM HealthcareService records (None: not one)."""
    provider = (service.get("providedBy") or {}).get("reference")
    if service.get("active") is False or not isinstance(provider, str) or not any(
        c.get("system") == CALAIM_PROGRAM and c.get("code") == "ecm"
        for cat in service.get("category") or ()
        for c in (cat or {}).get("coding") or ()
        if isinstance(c, dict)
    ):
        return None
    loa = None
    for e in service.get("extension") or ():
        if isinstance(e, dict) and e.get("url") == LOA_EXT:
            period = e.get("valuePeriod") or {}
            loa = (local_date(period.get("start")), local_date(period.get("end")))
    return Agreement(provider, loa)


def standing(services: Iterable[dict[str, Any]], provider: str, day: date) -> str | None:
    """How ``provider`` is in the network on ``day`` by ``services``: ``in-network`` (it provides
    a contracted ECM service), ``letter-of-agreement`` (only a letter of agreement in force on
    ``day``), None: neither."""
    found = [a for s in services if (a := agreement(s)) is not None and a.provider == provider]
    if any(a.letter_of_agreement is None for a in found):
        return IN_NETWORK
    if any(a.in_force(day) for a in found):
        return LETTER_OF_AGREEMENT
    return None


__all__ = [
    "IN_NETWORK",
    "LETTER_OF_AGREEMENT",
    "LOA_EXT",
    "SERVICES",
    "Agreement",
    "agreement",
    "standing",
]
