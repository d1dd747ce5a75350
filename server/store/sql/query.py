"""Compile ``Criteria`` into one SQL WHERE clause over the ``resource`` table (alias ``r``)."""

from __future__ import annotations

from typing import Any

from server.search.query import Clause, Criteria, DateClause, IdClause, TokenClause

_COLUMNS = {"_lastUpdated": "r.last_updated"}


def _token(clause: TokenClause, args: list[Any]) -> str:
    alternatives = []
    for system, code in clause.values:
        parts = ["t.rtype = r.rtype", "t.id = r.id", "t.param = ?"]
        args.append(clause.param)
        if code is not None:
            parts.append("t.code = ?")
            args.append(code)
        if system is not None:
            parts.append("t.system = ?")
            args.append(system)
        alternatives.append("(" + " AND ".join(parts) + ")")
    return "EXISTS (SELECT 1 FROM search_token t WHERE " + " OR ".join(alternatives) + ")"


def _date(clause: DateClause, args: list[Any]) -> str:
    column = _COLUMNS[clause.param]
    alternatives = []
    for prefix, start, end in clause.values:
        if prefix == "eq":
            alternatives.append(f"({column} >= ? AND {column} < ?)")
            args.extend((start, end))
        elif prefix == "ne":
            alternatives.append(f"({column} < ? OR {column} >= ?)")
            args.extend((start, end))
        elif prefix in ("gt", "sa"):
            alternatives.append(f"{column} >= ?")
            args.append(end)
        elif prefix == "ge":
            alternatives.append(f"{column} >= ?")
            args.append(start)
        elif prefix in ("lt", "eb"):
            alternatives.append(f"{column} < ?")
            args.append(start)
        else:  # le
            alternatives.append(f"{column} < ?")
            args.append(end)
    return "(" + " OR ".join(alternatives) + ")"


def _clause(clause: Clause, args: list[Any]) -> str:
    if isinstance(clause, IdClause):
        args.extend(clause.ids)
        return "r.id IN (" + ", ".join("?" for _ in clause.ids) + ")"
    if isinstance(clause, TokenClause):
        return _token(clause, args)
    return _date(clause, args)


def where(criteria: Criteria) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) selecting live resources matching ``criteria``."""
    args: list[Any] = [criteria.type]
    parts = ["r.rtype = ?", "r.deleted = 0"]
    parts.extend(_clause(clause, args) for clause in criteria.clauses)
    return " AND ".join(parts), args
