"""Who is asking: the principal every request's repository is bound to."""

from __future__ import annotations

from dataclasses import dataclass

from server.auth.scopes import ScopeSet

DEFAULT_PURPOSES = ("TREAT", "HPAYMT", "HOPERAT")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``allow_all`` is the local principal of an unauthenticated
    loopback server; a SMART client's principal carries the ``scopes`` of its access token
    (``server/auth/scopes.py``), whose union decides each interaction.
    ``id`` names the calling client; ``organization`` and ``user`` whom it acts for (references:
    ``Organization/x``, ``Practitioner/y``, ``Patient/z``). ``operator``: the server's own
    operator (the local principal, or a client registered with ``--role admin``), whom program
    role rules do not limit. ``role``: ``admin`` | ``auditor`` | None; ``purposes``: the
    purposes of use the client may assert (v3 ActReason codes)."""

    id: str
    allow_all: bool = False
    organization: str | None = None
    user: str | None = None
    operator: bool = False
    scopes: ScopeSet | None = None
    role: str | None = None
    purposes: tuple[str, ...] = DEFAULT_PURPOSES

    def permits(self, interaction: str, type: str | None) -> bool:
        if self.allow_all:
            return True
        return self.scopes is not None and self.scopes.permits(interaction, type)


LOCAL = Principal("local", allow_all=True, operator=True)
