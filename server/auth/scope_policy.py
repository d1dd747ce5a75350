"""SMART scopes as an access policy of the door (``policy.py``).

The principal of an access token carries its granted scopes (``Principal.scopes``,
``scopes.py``). For each interaction and type the policy answers what the union of those
scopes allows: a type and interaction no scope covers → ``NOTHING`` (the door answers 403),
covered → ``EVERYTHING``. Each interaction needs its own letter only (``scopes.NEEDS``): an
update needs ``u``, not ``r`` as well — the door reads a write's target under the write's
own interaction (``Unit.target``).

Type ``None``:

- a system-level search or history (``search-system``, ``history-system``) needs a wildcard
  scope with ``s``; the door checks each type a ``_type`` names besides;
- any other interaction of no single type (what an ``_include`` or a chain over several
  target types reads) reaches the types some scope covers for it: one ``TypeClause`` spanning
  them (everything with a wildcard scope, nothing without a scope).

A principal without scopes (not a token's) reaches nothing through this policy. The app
installs it whenever authentication is on (``server/app.py``); with authentication off
every request is the local operator's (``allow_all``), which no policy narrows.
"""

from __future__ import annotations

from server.auth.interactions import Interaction
from server.auth.policy import EVERYTHING, NOTHING, Facts, Narrowing, where
from server.auth.principal import Principal
from server.search.query import TypeClause

SYSTEM_LEVEL = frozenset({Interaction.SEARCH_SYSTEM, Interaction.HISTORY_SYSTEM})


class SmartScopes:
    def narrowing(
        self, principal: Principal, interaction: Interaction, type: str | None
    ) -> Narrowing:
        scopes = principal.scopes
        if scopes is None:
            return NOTHING
        if type is not None or interaction in SYSTEM_LEVEL:
            return EVERYTHING if scopes.permits(interaction, type) else NOTHING
        types = scopes.types(interaction)
        if types is None:
            return EVERYTHING
        return where(TypeClause(types)) if types else NOTHING

    def admits(self, principal: Principal, interaction: Interaction, facts: Facts) -> bool:
        return principal.scopes is not None and principal.scopes.permits(interaction, facts.type)
