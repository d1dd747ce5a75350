"""Who is asking: the principal every request's repository is bound to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``allow_all`` is the local principal of an unauthenticated
    loopback server; real principals (SMART tokens, scopes) come with the auth module.
    ``id`` names the calling client; ``organization`` and ``user`` whom it acts for (references:
    ``Organization/x``, ``Practitioner/y``, ``Patient/z``). ``operator``: the server's own
    operator (the local principal), whom program role rules do not limit."""

    id: str
    allow_all: bool = False
    organization: str | None = None
    user: str | None = None
    operator: bool = False

    def permits(self, interaction: str, type: str | None) -> bool:
        return self.allow_all


LOCAL = Principal("local", allow_all=True, operator=True)
