"""The services of one server, built once by the composition root and handed down.

``create_app`` (``server/app.py``) and the command line (``server/cli.py``) build one
``Services`` from the settings (``build_services``); the API reads it from the application
(``server/api/context.py`` ``services_of``), operations get it with their ``Call``. Nothing
looks a service up by settings: a test that needs another search registry, validation or
definitions store builds one and passes it to ``create_app(services=...)``.

Pure data stays cached where it is parsed (the conformance package, compiled FHIRPath, the R4
schema): it does not depend on the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.fhir.conformance import conformance
from server.search.service import SearchService, build_search_service
from server.settings import Settings
from server.store.conformance_store import ConformanceStore
from server.validation_service import Validation, build_validation


@dataclass(frozen=True, slots=True)
class Services:
    """``search``: SearchParameters, the indexer and the search parsing context;
    ``validation``: the profile validation of writes; ``definitions``: the conformance
    resources served from memory (read, search)."""

    settings: Settings
    search: SearchService
    validation: Validation
    definitions: ConformanceStore


def build_services(settings: Settings, *, search: SearchService | None = None) -> Services:
    """The services of ``settings`` (``search``: one already built for them). Compiles every
    profile: a bad one stops here."""
    search = search if search is not None else build_search_service(settings)
    return Services(
        settings,
        search,
        build_validation(settings, search),
        ConformanceStore(conformance(), search.indexer),
    )
