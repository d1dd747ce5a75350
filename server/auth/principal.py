"""Who is asking: the principal every request's repository is bound to."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``allow_all`` is the local principal of an unauthenticated
    loopback server; real principals (SMART tokens, scopes) come with the auth module.
    ``id`` names the calling client; ``organization`` and ``user`` whom it acts for (references:
    ``Organization/x``, ``Practitioner/y``, ``Patient/z``). ``operator``: the server's own
    operator (the local principal), whom program role rules do not limit. What a principal
    without ``allow_all`` may reach is decided by the application's access policies
    (``policy.py``), which read its fields (later: SMART scopes, care relationships)."""

    id: str
    allow_all: bool = False
    organization: str | None = None
    user: str | None = None
    operator: bool = False

    @property
    def key(self) -> str:
        """The whole principal as one stable string (every field, sorted): what owns an
        asynchronous job, so only the very same principal (the same client acting for the same
        organisation and user, with the same rights) sees its status and result."""
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS).decode()


LOCAL = Principal("local", allow_all=True, operator=True)
