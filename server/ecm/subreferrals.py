"""Coordination-platform sub-referrals and how they roll up (standards.md §1.8).

A coordination platform that accepts a referral may split it: for each community organisation
it creates a ``filler-order`` ServiceRequest ``basedOn`` the original and a referral Task
``partOf`` the source Task, which it requests (it is their requester) from the organisation
(their owner). Each sub-Task then follows the referral lifecycle on its own, and the source
Task follows its sub-Tasks by this table (sub-Tasks ``entered-in-error`` do not count):

| sub-Tasks | source Task |
|---|---|
| every one completed | ``completed``, with their resulting activities as its ``output`` |
| none open, some rejected, failed or cancelled | ``on-hold``: re-route (a new sub-Task) |
| some in-progress, on-hold or completed, others open | ``in-progress`` |
| none started yet (draft, requested, accepted) | unchanged |

A sub-Task is refused (422) unless its ``requester`` is the source Task's ``owner``, its ``for``
the source's, and its ``focus`` a ``filler-order`` ServiceRequest ``basedOn`` the source's
focus; it is sent (created past ``draft``, or moved out of it) only while the source is
accepted, in progress or on hold (``SPLITTABLE``).

The source Task changes only when the lifecycle allows the move from where it is (an
``accepted`` or ``on-hold`` Task may go ``in-progress``; nothing moves a terminal one). The
change is a write derived in the same unit as the sub-Task's, made as the organisation that
split the referral (the source Task's owner and the sub-Tasks' requester: the platform).
"""

from __future__ import annotations

from collections.abc import Iterable

FILLER_ORDER = "filler-order"
#: The source Task's statuses in which its sub-referrals are sent.
SPLITTABLE = frozenset({"accepted", "in-progress", "on-hold"})
COMPLETED = "completed"
STOPPED = frozenset({"rejected", "failed", "cancelled"})
STARTED = frozenset({"in-progress", "on-hold", COMPLETED})
IGNORED = frozenset({"entered-in-error"})


def rolled_up(statuses: Iterable[str]) -> str | None:
    """The source Task's status for its sub-Tasks' ``statuses`` (None: leave it)."""
    counted = [s for s in statuses if s not in IGNORED]
    if not counted:
        return None
    if all(s == COMPLETED for s in counted):
        return COMPLETED
    finished = all(s == COMPLETED or s in STOPPED for s in counted)
    if finished:
        return "on-hold"
    if any(s in STARTED for s in counted):
        return "in-progress"
    return None
