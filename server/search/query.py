"""The typed search query: what a parsed search means, independent of any store."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass(frozen=True, slots=True)
class IdClause:
    """``_id=a,b``: the resource id is one of these."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenClause:
    """``identifier=[system]|[code]`` alternatives; None means "any", "" means "none"."""

    param: str
    values: tuple[tuple[str | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class DateClause:
    """``_lastUpdated=[prefix]value`` alternatives, each a prefix and a [start, end) range."""

    param: str
    values: tuple[tuple[str, int, int], ...]


Clause = IdClause | TokenClause | DateClause


@dataclass(frozen=True, slots=True)
class Criteria:
    """Search criteria in normal form: a type, its sorted (name, value) pairs and their meaning.

    The normal form ``key`` is also the lock name of conditional interactions, so two requests
    that mean the same search serialise against each other.
    """

    type: str
    params: tuple[tuple[str, str], ...]
    clauses: tuple[Clause, ...]

    @property
    def key(self) -> str:
        return f"{self.type}?{urlencode(self.params)}"
