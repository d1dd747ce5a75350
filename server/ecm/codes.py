"""ValueSet membership for the rules, over the server's terminology.

A ValueSet is expanded once. ICD-10-CM is hierarchical by construction: a concept of the
ValueSet (``F20``) also covers every code that starts with it (``F20.9``, ``F209``), so a plan
can list categories instead of every billable code. Other systems match exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from server.fhir.terminology import Code, Terminology

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


class UnknownValueSet(LookupError):
    pass


class Codes:
    def __init__(self, terminology: Terminology) -> None:
        self._terminology = terminology
        self._sets: dict[str, frozenset[Code]] = {}

    def expansion(self, url: str) -> frozenset[Code]:
        found = self._sets.get(url)
        if found is None:
            expanded = self._terminology.expand(url)
            if expanded is None:
                raise UnknownValueSet(url)
            found = frozenset(
                (s, c.replace(".", "")) if s == ICD10CM else (s, c) for s, c in expanded
            )
            self._sets[url] = found
        return found

    def has(self, urls: Iterable[str], system: str | None, code: str | None) -> bool:
        if not system or not code:
            return False
        keys = _keys(system, code)
        return any(not keys.isdisjoint(self.expansion(url)) for url in urls)

    def coded(self, urls: Iterable[str], concept: Any) -> bool:
        """Whether a CodeableConcept (or a Coding) has a coding in one of the ValueSets."""
        return any(self.has(urls, s, c) for s, c in codings(concept))


def _keys(system: str, code: str) -> frozenset[Code]:
    if system != ICD10CM:
        return frozenset({(system, code)})
    flat = code.replace(".", "")
    return frozenset((system, flat[:n]) for n in range(3, len(flat) + 1))


def codings(concept: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) of a CodeableConcept, a Coding, or a list of either."""
    if isinstance(concept, list):
        return [pair for item in concept for pair in codings(item)]
    if not isinstance(concept, Mapping):
        return []
    if "coding" in concept:
        return [
            (c.get("system"), c.get("code"))
            for c in concept.get("coding") or []
            if isinstance(c, Mapping)
        ]
    if "code" in concept or "system" in concept:
        return [(concept.get("system"), concept.get("code"))]
    return []


def split(token: str) -> Code:
    """``system|code`` -> (system, code)."""
    system, _, code = token.partition("|")
    return system, code
