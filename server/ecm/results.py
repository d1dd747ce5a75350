"""The four answers a criterion can give, and how ``all`` and ``any`` combine them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Result = Literal["met", "not-met", "needs-attestation", "insufficient-data"]

MET: Result = "met"
NOT_MET: Result = "not-met"
NEEDS_ATTESTATION: Result = "needs-attestation"
INSUFFICIENT: Result = "insufficient-data"

# all(): the first of these present wins; any(): the first of its own order
_ALL_ORDER: tuple[Result, ...] = (NOT_MET, INSUFFICIENT, NEEDS_ATTESTATION, MET)
_ANY_ORDER: tuple[Result, ...] = (MET, NEEDS_ATTESTATION, INSUFFICIENT, NOT_MET)


def all_of(results: Iterable[Result]) -> Result:
    """not-met if any is, else insufficient-data, else needs-attestation, else met (an empty
    conjunction holds)."""
    present = set(results)
    return next((r for r in _ALL_ORDER if r in present), MET)


def any_of(results: Iterable[Result]) -> Result:
    """met if any is, else needs-attestation, else insufficient-data, else not-met."""
    present = set(results)
    return next((r for r in _ANY_ORDER if r in present), NOT_MET)


def negate(result: Result) -> Result:
    flipped: dict[Result, Result] = {MET: NOT_MET, NOT_MET: MET}
    return flipped.get(result, result)
