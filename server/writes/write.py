"""What the pipeline takes and gives back: one ``Write``, its ``Written`` result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from server.auth.principal import Principal
from server.fhir.outcome import Issue
from server.ports import WriteResult
from server.search.query import Criteria

Interaction = Literal["create", "update", "patch", "delete"]
Patch = Callable[[dict[str, Any]], dict[str, Any]]
"""A patch: the current resource -> the patched one (raises ``Unprocessable`` when it cannot
be applied). It must not change its argument."""

METHODS: dict[str, Interaction] = {
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(slots=True)
class Write:
    """One write, whoever asks for it.

    - ``create``: ``resource``; ``id`` only when the caller chose it in advance (a transaction);
      ``condition`` makes it a conditional create (``If-None-Exist``).
    - ``update``: ``resource`` and ``id``, or ``condition`` (a conditional update).
    - ``patch``: ``patch`` and ``id`` or ``condition``.
    - ``delete``: ``id`` or ``condition``.

    ``resource`` is the body as received (the pipeline checks that it is a resource of
    ``type``); ``condition`` a search query string (``identifier=x|1``); ``if_match`` a version
    number; ``expression`` the path errors point at (a Bundle entry:
    ``Bundle.entry[3].resource``). ``principal``: only for a write a program rule derives, the
    principal the rules judge it as (an organisation the rule acts for); None: the cause's."""

    interaction: Interaction
    type: str
    id: str | None = None
    resource: Any = None
    patch: Patch | None = None
    condition: str | None = None
    if_match: int | None = None
    expression: str = ""
    principal: Principal | None = None


@dataclass(slots=True)
class Written:
    """What a write did. ``result`` is the version written (or matched, for a conditional
    create that found one; the absent or already deleted resource for a delete that changed
    nothing); a conditional delete has its ``criteria`` and ``deleted``: how many it deleted.
    ``warnings`` are the profile validation's."""

    write: Write
    result: WriteResult | None
    deleted: int = 0
    warnings: list[Issue] = field(default_factory=list)
    criteria: Criteria | None = None
