"""Server rules that require a profile for a kind of resource, whatever ``meta.profile`` says.

A profile states its rule in the StructureDefinition itself, with the extension
``http://calaim-fhir.org/fhir/StructureDefinition/profile-required-for`` holding a FHIR search
on its base type (``ServiceRequest?category=<calaim-program>|ecm``): every resource the search
would match must conform to the profile. The search is evaluated in memory by the same matcher
as every other search, so any parameter, modifier or chain works
(``Task?focus:ServiceRequest.category=...`` follows the reference through ``resolve``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidSearch
from server.search.index import Indexer
from server.search.match import Matcher, compile_matcher
from server.search.parse import parse_criteria_string
from server.search.rows import IndexRows
from server.search.service import SearchService

REQUIRED_FOR = "http://calaim-fhir.org/fhir/StructureDefinition/profile-required-for"

# (type, id) -> the target resource, or None when it cannot be found
Lookup = Callable[[str, str], dict[str, Any] | None]


class ProfileRuleError(Exception):
    """A ``profile-required-for`` search that does not parse."""


@dataclass(frozen=True, slots=True)
class _Rule:
    profile: str
    type: str
    query: str
    matcher: Matcher
    codes: frozenset[str]


class _Subset:
    """Index rows of only the parameters a rule's search names (chains included): a rule is
    checked on every write, and extracting every parameter would cost more than the check.
    One per ``required`` call, shared by its rules: rules naming the same parameters
    (``Observation?code=...`` of two profiles) extract them from a resource once."""

    def __init__(self, indexer: Indexer) -> None:
        self._indexer = indexer
        self._done: list[tuple[dict[str, Any], frozenset[str], IndexRows]] = []
        self.codes: frozenset[str] = frozenset()

    def rows(self, type: str, resource: dict[str, Any]) -> IndexRows:
        for seen, codes, rows in self._done:
            if seen is resource and codes == self.codes:
                return rows
        rows = self._indexer.rows(type, resource, self.codes)
        self._done.append((resource, self.codes, rows))
        return rows


def _codes(criteria: str) -> frozenset[str]:
    """Every parameter code a query string names, through chains and modifiers."""
    names = [pair.partition("=")[0] for pair in criteria.split("&")]
    return frozenset(part for name in names for part in re.split(r"[.:]", name) if part)


class ProfileRules:
    """The ``profile-required-for`` rules of a set of StructureDefinitions."""

    def __init__(self, definitions: Iterable[Mapping[str, Any]], search: SearchService) -> None:
        self._search = search
        self._rules: dict[str, list[_Rule]] = {}
        for sd in definitions:
            for ext in sd.get("extension", []):
                if ext.get("url") != REQUIRED_FOR:
                    continue
                query = str(ext.get("valueString", ""))
                type, _, criteria = query.partition("?")
                if type != sd.get("type"):
                    raise ProfileRuleError(
                        f"{sd.get('url')}: profile-required-for must search {sd.get('type')}"
                    )
                try:
                    parsed = parse_criteria_string(type, criteria, search.context)
                except InvalidSearch as exc:
                    raise ProfileRuleError(f"{sd.get('url')}: {query}: {exc}") from exc
                matcher = compile_matcher(parsed)
                rule = _Rule(str(sd["url"]), type, query, matcher, _codes(criteria))
                self._rules.setdefault(type, []).append(rule)

    def describe(self) -> list[tuple[str, str]]:
        """``(profile url, search)`` of every rule."""
        return [(r.profile, r.query) for rules in self._rules.values() for r in rules]

    def required(self, resource: dict[str, Any], lookup: Lookup | None = None) -> list[str]:
        """The profiles ``resource`` must conform to under the rules (chained criteria that
        need a target ``lookup`` cannot find count as not matching)."""
        rules = self._rules.get(str(resource.get("resourceType")))
        if not rules:
            return []
        out = []
        resolve = lookup or _nothing
        subset = _Subset(self._search.indexer)
        for rule in rules:
            subset.codes = rule.codes
            if rule.matcher(
                rule.type,
                resource,
                subset,
                id=resource.get("id") or "",
                last_updated=0,
                resolve=resolve,
                referrers=_no_referrers,
            ):
                out.append(rule.profile)
        return out


def _nothing(type: str, id: str) -> dict[str, Any] | None:
    return None


def _no_referrers(
    source_type: str, param: str, target_type: str, target_id: str
) -> list[tuple[str, dict[str, Any]]]:
    return []
