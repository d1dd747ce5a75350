"""The search parameters the server knows: the R4 definitions plus ``profiles/searchparameters``.

The R4 SearchParameters are vendored data (``server.fhir.definitions.r4_search_parameters``);
custom ones are SearchParameter resources in ``profiles/searchparameters/`` (one file each, read
by ``server.fhir.conformance.read_folder``) or in the folder the settings name. A custom
parameter with the same code and base type as an R4 one replaces it for that type.

Each parameter carries a digest of its definition. The store remembers which digests its index
rows were built with; a parameter whose digest it does not know yet is *pending*: it is
indexed on every write but neither searchable nor advertised until ``calaim-fhir reindex`` has
filled its rows for the resources stored before it appeared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from server.fhir.conformance import read_folder
from server.fhir.definitions import PROFILES, r4_search_parameters
from server.fhir.definitions import patient_compartment as patient_compartment  # re-exported
from server.fhir.resource_types import RESOURCE_TYPES
from server.search.bindings import bound_system

# parameters whose values live in ``resource`` columns, not index rows
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
SEARCH_TYPES = frozenset(
    {"number", "date", "string", "token", "reference", "composite", "quantity", "uri"}
)


@dataclass(frozen=True, slots=True)
class Component:
    """One component of a composite parameter: the component's definition and its expression
    relative to the composite's own expression."""

    definition: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri
    url: str
    base: tuple[str, ...]
    expression: str
    description: str
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    custom: bool = False
    digest: str = ""
    resource: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _digest(definition: Mapping[str, Any]) -> str:
    """What the index rows depend on: code, type, base, expression, targets, components and,
    for a token parameter whose codes carry the system of their required binding, those
    systems (``bindings.py``)."""
    keys = ("code", "type", "base", "expression", "target", "component")
    relevant = {k: definition.get(k) for k in keys}
    if definition.get("type") == "token":
        expression = definition.get("expression", "")
        systems = {t: bound_system(t, expression) for t in definition.get("base", ())}
        bound = {t: s for t, s in systems.items() if s}
        if bound:
            relevant["bound-systems"] = bound
    return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _param(definition: Mapping[str, Any], *, custom: bool) -> SearchParam:
    return SearchParam(
        code=definition["code"],
        type=definition["type"],
        url=definition["url"],
        base=tuple(definition["base"]),
        expression=definition.get("expression", ""),
        description=definition.get("description", ""),
        targets=tuple(definition.get("target", ())),
        components=tuple(
            Component(c["definition"], c["expression"]) for c in definition.get("component", ())
        ),
        custom=custom,
        digest=_digest(definition),
        resource=definition,
    )


class Registry:
    """Search parameters by resource type and code, and by canonical URL."""

    def __init__(self, base: Iterable[Mapping[str, Any]], custom: Iterable[Mapping[str, Any]]):
        self._by_url: dict[str, SearchParam] = {}
        self._by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in RESOURCE_TYPES}
        for definitions, is_custom in ((base, False), (custom, True)):
            for definition in definitions:
                if definition.get("type") not in SEARCH_TYPES or not definition.get("expression"):
                    continue
                param = _param(definition, custom=is_custom)
                self._by_url[param.url] = param
                for base_type in param.base:
                    types = (
                        RESOURCE_TYPES
                        if base_type in ("Resource", "DomainResource")
                        else (base_type,)
                    )
                    for type in types:
                        if type in self._by_type:
                            self._by_type[type][param.code] = param
        self._pending: frozenset[str] = frozenset()

    # -- lookups ----------------------------------------------------------------------------

    def all(self) -> list[SearchParam]:
        """Every known parameter (pending ones included), in URL order."""
        return [self._by_url[url] for url in sorted(self._by_url)]

    def indexed(self, type: str) -> Mapping[str, SearchParam]:
        """Every parameter whose rows are written for ``type`` (pending ones included)."""
        return self._by_type.get(type, {})

    def for_type(self, type: str) -> dict[str, SearchParam]:
        """The searchable parameters of ``type`` by code (pending ones left out)."""
        return {
            code: p for code, p in self._by_type.get(type, {}).items() if p.url not in self._pending
        }

    def get(self, type: str, code: str) -> SearchParam | None:
        param = self._by_type.get(type, {}).get(code)
        return None if param is None or param.url in self._pending else param

    def by_url(self, url: str) -> SearchParam | None:
        return self._by_url.get(url)

    # -- pending parameters (reindex) -----------------------------------------------------

    def digests(self) -> dict[str, str]:
        """``{url: digest}`` of every parameter."""
        return {url: p.digest for url, p in self._by_url.items()}

    @property
    def pending(self) -> frozenset[str]:
        return self._pending

    def set_pending(self, urls: Iterable[str]) -> None:
        self._pending = frozenset(urls)


def load_registry(folder: Path | None = None) -> Registry:
    """A fresh registry of the R4 parameters and the custom ones in ``folder`` (default: the
    package's ``profiles/searchparameters``)."""
    custom = read_folder(folder or PROFILES / "searchparameters", "SearchParameter")
    return Registry(r4_search_parameters(), custom)
