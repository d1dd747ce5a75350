"""Community Supports eligibility: the CS rule set (data in ``rules/cs-*.json``) and its answer.

The CS rule set has the shape of the ECM one (:mod:`server.ecm.ruleset`) with ``services``
instead of populations: each entry names one or more ``codes`` of the ``community-supports``
CodeSystem that share its criteria (``allOf``), the dates it is in force and its ``clause``.
``definitions`` holds criteria several services use; a node ``{"use": "<name>"}`` stands for
the definition, so each rule is written once. The same engine (:class:`Evaluator`) judges the
baseline and each service on its own criteria; a service's ``determination`` then combines it
with the baseline as ECM does (``docs/cs-eligibility.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

import orjson

from server.ecm.evaluate import Determination, Evaluator, Finding, Judged, determination
from server.ecm.plan import Payor
from server.ecm.record import MemberRecord
from server.ecm.ruleset import RULES, Population, RuleSet, RuleSetError, assemble, group

CURRENT = "cs-iehp-2024.10"


@dataclass(frozen=True, slots=True)
class Service:
    """One Community Support, judged: its own criteria, then with the baseline."""

    judged: Judged
    determination: Determination


@dataclass(frozen=True, slots=True)
class ServicesAnswer:
    as_of: date
    version: str
    baseline: Finding
    services: tuple[Service, ...]
    issues: tuple[tuple[str, str], ...]


def _resolve(node: Any, definitions: Mapping[str, Any], where: str) -> Any:
    """``node`` with every ``{"use": name}`` replaced by the definition ``name``."""
    if isinstance(node, list):
        return [_resolve(item, definitions, f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, Mapping):
        return node
    if "use" in node:
        if set(node) != {"use"} or node["use"] not in definitions:
            raise RuleSetError(f"{where}: unknown definition {node.get('use')!r}")
        return _resolve(definitions[node["use"]], definitions, where)
    return {key: _resolve(value, definitions, f"{where}.{key}") for key, value in node.items()}


def parse(data: Mapping[str, Any]) -> RuleSet:
    def services() -> tuple[tuple[Population, ...], tuple[Population, ...]]:
        definitions = data.get("definitions", {})
        found: list[Population] = []
        for i, entry in enumerate(data["services"]):
            where = f"services[{i}]"
            criteria = _resolve(entry["allOf"], definitions, f"{where}.allOf")
            for code in entry["codes"]:
                found.append(group({**entry, "code": code, "allOf": criteria}, "allOf", where))
        return tuple(found), ()

    return assemble(data, services)


@cache
def cs_rule_set(version: str = CURRENT) -> RuleSet:
    return parse(orjson.loads((RULES / f"{version}.json").read_bytes()))


def evaluate_services(
    evaluator: Evaluator,
    record: MemberRecord,
    as_of: date,
    services: list[str],
    payor: Payor | None = None,
) -> ServicesAnswer:
    """The baseline and each of ``services`` (codes of the evaluator's CS rule set) on
    ``as_of``; a service's determination is ECM's rule with the service as the only group."""
    judgement = evaluator.judge(record, as_of, services, payor)
    base = judgement.baseline.result
    answered = tuple(
        Service(judged, determination(base, [judged.result], [])) for judged in judgement.groups
    )
    return ServicesAnswer(
        as_of, evaluator.rules.version, judgement.baseline, answered, judgement.issues
    )
