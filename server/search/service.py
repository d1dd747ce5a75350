"""The search machinery of one server configuration: registry, indexer and parsing context.

One ``SearchService`` per server: the composition root (``server/app.py``) builds it and hands
it down; the store indexes with its ``indexer`` and the API parses with its ``context``, so
both read the same parameter definitions, base URL and zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from server.fhir.conformance import conformance
from server.search.index import Indexer
from server.search.parse import SearchContext
from server.search.registry import Registry, load_registry
from server.search.sensitivity import Labeller
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class SearchService:
    registry: Registry
    indexer: Indexer
    context: SearchContext


def build_search_service(settings: Settings) -> SearchService:
    """The search machinery of ``settings`` (loads the SearchParameters: build it once)."""
    folder = settings.search_parameters_dir
    registry = load_registry(Path(folder)) if folder else load_registry()
    zone = ZoneInfo(settings.search_timezone)
    base = settings.fhir_base
    context = SearchContext(
        registry=registry,
        base=base,
        zone=zone,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        default_total=settings.default_total,
        expand=conformance().terminology.expand,
    )
    labeller = Labeller.load(settings.access_sensitivity)
    return SearchService(registry, Indexer(registry, base, zone, labeller), context)
