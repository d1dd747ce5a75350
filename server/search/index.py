"""The search index of a resource: the rows every search parameter of its type extracts.

Each parameter's FHIRPath expression is compiled once (``server.fhir.fhirpath``, in its search
subset) and its values are normalised into rows by ``values.to_rows``. A composite parameter
yields, for each value of its own expression (a *root*), the rows of each component under
``<code>#<i>``, all sharing the root's group number, and only when every component has a
value there. An expression is not run on a resource that has none of the properties it reads
first (``search_root_keys``): most of a type's expressions select nothing on most resources.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from server.fhir.fhirpath import Evaluator as Extractor
from server.fhir.fhirpath import Node, compile_search_expression, search_root_keys
from server.search.bindings import bound_system
from server.search.registry import COLUMN_PARAMS, Registry, SearchParam
from server.search.rows import IndexRows
from server.search.sensitivity import Labeller
from server.search.values import IndexContext, to_rows

log = logging.getLogger(__name__)

_TABLES = ("token", "string", "reference", "date", "number", "quantity", "uri")


@dataclass(frozen=True, slots=True)
class _Part:
    """One component of a composite: its row key, parameter type and expression."""

    key: str
    type: str
    expression: str


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to index one parameter of one resource type."""

    param: SearchParam
    extractor: Extractor
    parts: tuple[_Part, ...] = ()  # composite components; empty for other parameters
    system: str = ""  # the code system of a token parameter's codes (``bindings.py``)
    # the resource's properties one of which the expression needs to select anything
    # (``search_root_keys``); None: it is run on every resource
    keys: tuple[str, ...] | None = None


# a composite component's rows on one root during one ``rows`` call (``Indexer._component``)
_Memo = dict[tuple[int, str, str, str], tuple[Any, tuple[tuple[Any, ...], ...]]]


def _any_in(keys: tuple[str, ...], resource: dict[str, Any]) -> bool:
    for key in keys:
        if key in resource:
            return True
    return False


class Indexer:
    """Index rows of resources under one registry, server base and local zone."""

    def __init__(
        self, registry: Registry, base: str, zone: ZoneInfo, labeller: Labeller | None = None
    ) -> None:
        self.registry = registry
        self.labeller = labeller  # sensitive data labelled on write (sensitivity.py)
        self.context = IndexContext(base.rstrip("/"), zone)
        self._plans: dict[str, tuple[_Plan, ...]] = {}
        self._extractors: dict[tuple[str, str], Extractor | None] = {}
        self._warned: set[tuple[str, ...]] = set()

    def rows(
        self, type: str, resource: dict[str, Any], only: frozenset[str] | None = None
    ) -> IndexRows:
        """The de-duplicated index rows of ``resource`` (of resource type ``type``); with
        ``only``, the rows of those parameter codes alone."""
        plans = self._plans.get(type)
        if plans is None:
            plans = self._plans[type] = self._plan(type)
        out = IndexRows()
        memo: _Memo = {}
        for plan in plans:
            param = plan.param
            if only is not None and param.code not in only:
                continue
            keys = plan.keys
            if keys is not None and not _any_in(keys, resource):
                continue
            nodes = self._run(plan.extractor, resource, resource, type, param.url)
            if plan.parts:
                self._composite(plan, nodes, resource, out, memo)
            else:
                for node in nodes:
                    to_rows(param.code, 0, param.type, node, self.context, out, plan.system)
        for name in _TABLES:
            rows = getattr(out, name)
            if len(rows) > 1:
                setattr(out, name, list(dict.fromkeys(rows)))
        if self.labeller is not None and only is None:
            self.labeller.label(out)
        return out

    # -- plans -----------------------------------------------------------------------------

    def _plan(self, type: str) -> tuple[_Plan, ...]:
        plans = []
        for param in self.registry.indexed(type).values():
            if param.code in COLUMN_PARAMS:
                continue
            extractor = self._extractor(type, param.expression, param.url)
            if extractor is None:
                continue
            found = search_root_keys(param.expression, type)
            keys = None if found is None else tuple(sorted(found))
            if param.type != "composite":
                system = bound_system(type, param.expression) if param.type == "token" else None
                plans.append(_Plan(param, extractor, system=system or "", keys=keys))
                continue
            parts = self._parts(type, param)
            if parts:
                plans.append(_Plan(param, extractor, parts, keys=keys))
        return tuple(plans)

    def _parts(self, type: str, param: SearchParam) -> tuple[_Part, ...]:
        parts = []
        for index, component in enumerate(param.components):
            definition = self.registry.by_url(component.definition)
            if definition is None or definition.type not in _TABLES:
                self._warn_once(
                    (type, param.url),
                    "search parameter %s is not indexed for %s: component %s is not indexable",
                    param.url,
                    type,
                    component.definition,
                )
                return ()
            parts.append(_Part(f"{param.code}#{index}", definition.type, component.expression))
        return tuple(parts)

    def _extractor(self, context: str, expression: str, url: str) -> Extractor | None:
        """The compiled ``expression`` on ``context``; None (logged once) when it cannot be."""
        key = (context, expression)
        if key not in self._extractors:
            try:
                self._extractors[key] = compile_search_expression(expression, context)
            except ValueError as error:
                self._extractors[key] = None
                self._warn_once(
                    (context, url),
                    "search parameter %s is not indexed for %s: %s",
                    url,
                    context,
                    error,
                )
        return self._extractors[key]

    # -- evaluation ------------------------------------------------------------------------

    def _run(
        self, extractor: Extractor, focus: Any, resource: dict[str, Any], context: str, url: str
    ) -> list[Node]:
        """The nodes ``extractor`` selects; none (logged once) when it fails on this data."""
        try:
            return extractor(focus, resource)
        except Exception:  # an index row must never make a write fail
            self._warn_once(
                ("run", context, url),
                "search parameter %s failed on a %s; its rows are left out",
                url,
                context,
                exc_info=True,
            )
            return []

    def _composite(
        self, plan: _Plan, roots: list[Node], resource: dict[str, Any], out: IndexRows, memo: _Memo
    ) -> None:
        """Component rows of each root (group = the root's 1-based number) that has a value
        for every component; rows other components derive (``:text``...) are left out."""
        url = plan.param.url
        for number, (root_type, root) in enumerate(roots, start=1):
            found: list[tuple[_Part, tuple[tuple[Any, ...], ...]]] = []
            for part in plan.parts:
                values = self._component(part, root_type, root, resource, url, memo)
                if not values:
                    break
                found.append((part, values))
            else:
                for part, values in found:
                    getattr(out, part.type).extend((part.key, number, *v) for v in values)

    def _component(
        self,
        part: _Part,
        root_type: str,
        root: Any,
        resource: dict[str, Any],
        url: str,
        memo: _Memo,
    ) -> tuple[tuple[Any, ...], ...]:
        """A component's own rows on one root, without their key and group: the same
        component of several composites (``code`` of every ``code-value-*``) on the same root
        is extracted once per resource."""
        key = (id(root), root_type, part.expression, part.type)
        known = memo.get(key)
        if known is not None:
            return known[1]
        values: tuple[tuple[Any, ...], ...] = ()
        extractor = self._extractor(root_type, part.expression, url)
        if extractor is not None:
            scratch = IndexRows()
            for node in self._run(extractor, root, resource, root_type, url):
                to_rows(part.key, 0, part.type, node, self.context, scratch)
            values = tuple(row[2:] for row in getattr(scratch, part.type) if row[0] == part.key)
        memo[key] = (root, values)  # the root kept alive: its id stays its own
        return values

    def _warn_once(self, key: tuple[str, ...], message: str, *args: Any, **kw: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args, **kw)
