"""Who is asking: the principal every request's repository is bound to."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from server.auth.scopes import ScopeSet

DEFAULT_PURPOSES = ("TREAT", "HPAYMT", "HOPERAT")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``allow_all`` is the local principal of an unauthenticated
    loopback server; a SMART client's principal carries the ``scopes`` of its access token
    (``server/auth/scopes.py``).
    ``id`` names the calling client; ``organization`` and ``user`` whom it acts for (references:
    ``Organization/x``, ``Practitioner/y``, ``Patient/z``). ``operator``: the server's own
    operator (the local principal, or a client registered with ``--role admin``), whom program
    role rules do not limit. ``role``: ``admin`` | ``auditor`` | None; ``purposes``: the
    purposes of use the client may assert (v3 ActReason codes). What a principal without
    ``allow_all`` may reach is decided by the application's access policies (``policy.py``),
    which read its fields: its ``scopes`` (``scope_policy.py``), later care relationships.
    ``patient``: the id of the Patient of a launch's patient context (``patient/`` scopes
    reach that patient's compartment only); None for backend services."""

    id: str
    allow_all: bool = False
    organization: str | None = None
    user: str | None = None
    operator: bool = False
    scopes: ScopeSet | None = None
    role: str | None = None
    purposes: tuple[str, ...] = DEFAULT_PURPOSES
    patient: str | None = None

    @property
    def key(self) -> str:
        """The whole principal as one stable string (every field, sorted): what owns an
        asynchronous job, so only the very same principal (the same client acting for the same
        organisation and user, with the same rights) sees its status and result."""
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS, default=_plain).decode()


def _plain(value: object) -> object:
    """A set (a scope's letters) as its sorted members, so ``key`` is stable."""
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} in a principal")


LOCAL = Principal("local", allow_all=True, operator=True)
