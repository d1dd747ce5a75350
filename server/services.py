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
from server.operations.registry import Operations
from server.operations.registry import operations as all_operations
from server.search.service import SearchService, build_search_service
from server.settings import Settings
from server.store.conformance_store import ConformanceStore
from server.validation_service import Validation, build_validation


@dataclass(frozen=True, slots=True)
class Services:
    """``search``: SearchParameters, the indexer and the search parsing context;
    ``validation``: the profile validation of writes; ``definitions``: the conformance
    resources served from memory (read, search); ``operations``: the operations the server
    runs, from the OperationDefinitions (router, batch entries, CapabilityStatement)."""

    settings: Settings
    search: SearchService
    validation: Validation
    definitions: ConformanceStore
    operations: Operations


def build_services(
    settings: Settings,
    *,
    search: SearchService | None = None,
    operations: Operations | None = None,
) -> Services:
    """The services of ``settings`` (``search``: one already built for them; ``operations``:
    default, those of the package's OperationDefinitions). Compiles every profile: a bad one
    stops here."""
    search = search if search is not None else build_search_service(settings)
    return Services(
        settings,
        search,
        build_validation(settings, search),
        ConformanceStore(conformance(), search.indexer),
        default_operations() if operations is None else operations,
    )


def default_operations() -> Operations:
    """The operations of the package's OperationDefinitions (``profiles/operations/``)."""
    return Operations(tuple(all_operations()))
