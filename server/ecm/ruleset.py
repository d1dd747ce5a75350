"""The eligibility rule set: data in ``rules/<version>.json``, checked when it is loaded.

A rule set has a ``version``, a ``baseline`` node, ``populations`` (each a POF code, the dates
it is in force — ``from``/``to``, inclusive — its ``clause`` and ``allOf`` criteria) and
``exclusions`` (a code of ``ecm-exclusion-reason``, its ``clause`` and ``anyOf`` criteria). A
POF may appear more than once with non-overlapping dates (a definition that changed). Criteria
are nodes: ``{"kind": ..., "id"?, "clause", "from"?, "to"?, ...}``; a node with an ``id`` is
reported in the answer, a node out of force on ``asOf`` is left out. The kinds and their fields
are :data:`KINDS`; :mod:`server.ecm.evaluate` gives each its meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import orjson

RULES = Path(__file__).parent / "rules"
CURRENT = "mccp2032-2024.11.1"

Node = Mapping[str, Any]

#: kind -> the fields it requires
KINDS: Mapping[str, frozenset[str]] = {
    "all": frozenset({"nodes"}),
    "any": frozenset({"nodes"}),
    "not": frozenset({"node"}),
    "age": frozenset(),
    "coverage": frozenset({"valueSet"}),
    "program": frozenset({"codes", "state"}),
    "condition": frozenset({"valueSets"}),
    "finding": frozenset({"valueSets", "lookbackMonths"}),
    "flag": frozenset({"code", "lookbackMonths"}),
    "observation-value": frozenset({"code", "lookbackMonths"}),
    "encounters": frozenset({"encounter", "min", "months"}),
    "pregnant-or-postpartum": frozenset(),
    "race": frozenset({"valueSets"}),
    "housing-loss": frozenset({"code"}),
    "attestation": frozenset({"code"}),
    "other-pof": frozenset(),
    "exiting": frozenset(),
    "readings": frozenset({"terms", "readings", "ambiguity"}),
}
PROGRAM_STATES = frozenset({"active", "recent", "active-or-recent", "aged-out", "transitioning"})
ENCOUNTER_KINDS = frozenset({"ed", "stay", "unplanned-stay", "typed"})


class RuleSetError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Population:
    code: str
    start: date | None
    end: date | None
    clause: str
    criteria: tuple[Node, ...]
    refers_to_other_pof: bool = False  # an ``other-pof`` node among its criteria

    def in_force(self, day: date) -> bool:
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    title: str
    changelog: tuple[str, ...]
    attestation_months: int
    baseline: Node
    populations: tuple[Population, ...]
    exclusions: tuple[Population, ...]

    @property
    def pof_codes(self) -> list[str]:
        return list(dict.fromkeys(p.code for p in self.populations))

    def codes_for(self, pof: str | None) -> list[str]:
        """The POF codes an answer reports: all, or those of ``pof`` (a variant such as
        ``homelessness-adult``, or a parent such as ``homelessness``); [] when none matches."""
        return [c for c in self.pof_codes if pof is None or c == pof or c.startswith(f"{pof}-")]

    def population(self, code: str, day: date) -> Population | None:
        """The definition of POF ``code`` in force on ``day`` (None when none is)."""
        return next((p for p in self.populations if p.code == code and p.in_force(day)), None)

    def first(self, code: str) -> Population:
        return min(
            (p for p in self.populations if p.code == code), key=lambda p: p.start or date.min
        )

    def value_sets(self) -> set[str]:
        found: set[str] = set()
        for node in self._nodes():
            found.update(node.get("valueSets", ()))
            if "valueSet" in node:
                found.add(node["valueSet"])
            found.update(node.get("reasonValueSets", ()))
            found.update(node.get("typeValueSets", ()))
        return found

    def attestation_codes(self) -> set[str]:
        """The criterion codes the rules read attestations of."""
        return {
            str(code)
            for node in self._nodes()
            for code in (
                node.get("code") if node["kind"] == "attestation" else None,
                node.get("attestation"),
            )
            if code
        }

    def _nodes(self) -> Iterator[Node]:
        groups = (*self.populations, *self.exclusions)
        return walk((self.baseline, *(n for g in groups for n in g.criteria)))


def _children(node: Node) -> list[Node]:
    """A node's children: ``nodes``, ``terms`` (of ``readings``), ``node`` and an
    attestation's ``askWhen``."""
    return [
        *node.get("nodes", ()),
        *node.get("terms", ()),
        *(node[k] for k in ("node", "askWhen") if k in node),
    ]


def reading_terms(expression: Any) -> Iterator[str]:
    """The term ids a reading's expression names: a term id, or ``{"all"|"any": [...]}``."""
    if isinstance(expression, str):
        yield expression
        return
    if not isinstance(expression, Mapping) or len(expression) != 1:
        raise RuleSetError(f"a reading is a term id or {{all|any: [...]}}, got {expression!r}")
    ((op, items),) = expression.items()
    if op not in ("all", "any") or not isinstance(items, list) or not items:
        raise RuleSetError(f"a reading combines with all or any a list, got {expression!r}")
    for item in items:
        yield from reading_terms(item)


def walk(roots: Iterable[Node]) -> Iterator[Node]:
    """Every node of the trees under ``roots``."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_children(node))


@cache
def iso_date(text: str) -> date:
    """A rule date (``from``, ``to``, exception bounds), parsed once."""
    return date.fromisoformat(text)


def in_force(node: Node, day: date) -> bool:
    start, end = node.get("from"), node.get("to")
    return (start is None or iso_date(start) <= day) and (end is None or day <= iso_date(end))


def check_node(node: Node, where: str) -> None:
    kind = str(node.get("kind"))
    if kind not in KINDS:
        raise RuleSetError(f"{where}: unknown kind {kind!r}")
    missing = KINDS[kind] - node.keys()
    if missing:
        raise RuleSetError(f"{where}: {kind} needs {', '.join(sorted(missing))}")
    if kind == "program" and node["state"] not in PROGRAM_STATES:
        raise RuleSetError(f"{where}: unknown program state {node['state']!r}")
    if kind == "encounters" and node["encounter"] not in ENCOUNTER_KINDS:
        raise RuleSetError(f"{where}: unknown encounter kind {node['encounter']!r}")
    if kind == "encounters" and (node["encounter"] == "typed") != ("typeValueSets" in node):
        raise RuleSetError(f"{where}: typeValueSets goes with (and only with) encounter typed")
    if kind == "observation-value" and "min" not in node and "max" not in node:
        raise RuleSetError(f"{where}: observation-value needs min or max")
    if kind == "exiting" and not node.get("codes") and not node.get("stays"):
        raise RuleSetError(f"{where}: exiting needs codes (programs) or stays")
    if kind == "readings":
        ids = [term.get("id") for term in node["terms"]]
        if None in ids or len(set(ids)) != len(ids):
            raise RuleSetError(f"{where}: every term of readings has its own id")
        if len(node["readings"]) < 2:
            raise RuleSetError(f"{where}: readings lists at least two readings")
        for i, reading in enumerate(node["readings"]):
            if not reading.get("text"):
                raise RuleSetError(f"{where}.readings[{i}]: a reading needs its text")
            unknown = set(reading_terms(reading.get("expression"))) - set(ids)
            if unknown:
                raise RuleSetError(f"{where}.readings[{i}]: unknown terms {sorted(unknown)}")
    if node.get("id") is not None and not node.get("clause"):
        raise RuleSetError(f"{where}: reported criterion {node['id']} cites no clause")
    for key in ("from", "to"):
        if key in node:
            date.fromisoformat(node[key])
    for key in ("nodes", "terms"):
        for i, child in enumerate(node.get(key, ())):
            check_node(child, f"{where}.{key}[{i}]")
    for key in ("node", "askWhen"):
        if key in node:
            check_node(node[key], f"{where}.{key}")


def group(data: Mapping[str, Any], key: str, where: str) -> Population:
    """A POF, an exclusion or a service: ``code``, ``from``/``to``, ``clause`` and the criteria
    under ``key``, checked."""
    criteria = tuple(data[key])
    for i, node in enumerate(criteria):
        check_node(node, f"{where}.{key}[{i}]")
    start, end = data.get("from"), data.get("to")
    return Population(
        data["code"],
        date.fromisoformat(start) if start else None,
        date.fromisoformat(end) if end else None,
        data["clause"],
        criteria,
        any(node.get("kind") == "other-pof" for node in walk(criteria)),
    )


def parse(data: Mapping[str, Any]) -> RuleSet:
    return assemble(
        data,
        lambda: (
            tuple(
                group(p, "allOf", f"populations[{i}]") for i, p in enumerate(data["populations"])
            ),
            tuple(group(e, "anyOf", f"exclusions[{i}]") for i, e in enumerate(data["exclusions"])),
        ),
    )


def assemble(
    data: Mapping[str, Any],
    groups: Callable[[], tuple[tuple[Population, ...], tuple[Population, ...]]],
) -> RuleSet:
    """A rule set from its file: the header fields, the baseline and the ``groups`` (the
    populations or services, and the exclusions) ``groups()`` parses; any malformation is a
    :class:`RuleSetError`, and definitions of one code must not overlap."""
    try:
        check_node(data["baseline"], "baseline")
        populations, exclusions = groups()
        rules = RuleSet(
            data["version"],
            data.get("title", ""),
            tuple(str(line) for line in data.get("changelog", ())),
            int(data["attestationMonths"]),
            data["baseline"],
            populations,
            exclusions,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RuleSetError(f"rule set is malformed: {exc}") from exc
    check_dates(rules)
    return rules


def check_dates(rules: RuleSet) -> None:
    """Definitions of one code must not overlap in time."""
    for code in rules.pof_codes:
        versions = sorted(
            (p for p in rules.populations if p.code == code), key=lambda p: p.start or date.min
        )
        for before, after in zip(versions, versions[1:], strict=False):
            if before.end is None or after.start is None or before.end >= after.start:
                raise RuleSetError(f"{code}: definitions overlap")


@cache
def rule_set(version: str = CURRENT) -> RuleSet:
    return parse(orjson.loads((RULES / f"{version}.json").read_bytes()))
