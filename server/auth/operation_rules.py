"""The operations table as rules: what a caller must be permitted before an operation runs.

Each operation's implementation (``server/operations/call.py``) carries its own entry
(``Implementation.needs``): a list of ``Needs``, each naming a resource type and the interactions
of which the caller's access (``policy.Access``, the door's decisions) must permit at least
one. The entry is checked before the operation runs (403 naming what is missing); what the
operation then reads and writes goes through the door as every request does — an operation
that judges the whole record reads with the system reader and answers a restricted caller
through its output policy (``server/operations/output.py``), so its entry is all it needs.

=====================  ==================================================================
``$ecm-eligibility``   member mode: ``r`` on Patient (the member's record is read whole, by
                       the system reader; evidence only where the caller may read it)
``$ecm-eligibility``   population mode (``Group/[id]``, ``[base]``): ``s`` on Patient and
                       ``c`` on List; the members are those the caller's view holds
``$cs-eligibility``    ``r`` on Patient (as the ECM member mode)
``$validate``          any interaction on the type validated (nothing beyond the type)
``$ecm-assign``        ``r`` on Patient, ``c`` and ``u`` on Task, CareTeam and EpisodeOfCare
                       (preview and commit alike; a commit's writes are each decided by the
                       door as well)
``$ecm-screen``        no entry: each read and write is decided by the door
``$transitions``       no entry: each read is decided by the door
terminology            nothing (code systems and value sets are public definitions)
=====================  ==================================================================

``CALL_TYPE`` in a ``Needs`` stands for the type the operation is called on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.auth.interactions import Interaction
from server.auth.policy import Access

CALL_TYPE = ""
ANY = frozenset(Interaction)


@dataclass(frozen=True, slots=True)
class Needs:
    """Any one of ``interactions`` on ``type`` (``CALL_TYPE``: the type called on)."""

    type: str
    interactions: frozenset[Interaction]

    @classmethod
    def of(cls, type: str, *interactions: Interaction) -> Needs:
        return cls(type, frozenset(interactions))


def refusal(access: Access, needs: Iterable[Needs], call_type: str) -> str | None:
    """Why ``access`` may not run an operation with these needs on ``call_type``; None when
    it may."""
    if access.unrestricted:
        return None
    for need in needs:
        type = need.type or call_type
        if not type:
            continue
        if not any(access.narrowing(i, type).permitted for i in need.interactions):
            wanted = " or ".join(sorted(need.interactions)) if need.interactions != ANY else "any"
            return f"The operation needs {wanted} access to {type}"
    return None
