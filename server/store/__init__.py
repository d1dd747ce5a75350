"""Storage: the ``Repository`` port and its SQL adapter for SQLite and PostgreSQL."""

from __future__ import annotations

from server.search.service import search_service
from server.settings import Settings
from server.store.sql import reindex
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import open_dialect


def open_store(settings: Settings) -> SqlRepository:
    """Open the configured database, bring its schema up to date and check durability. Every
    version written is indexed by the configuration's search indexer."""
    dialect = open_dialect(
        settings.database_url,
        pool_size=settings.pg_pool_size,
        busy_timeout_ms=settings.busy_timeout_ms,
        query_budget_ms=settings.query_budget_ms,
    )
    service = search_service(settings)
    repo = SqlRepository(dialect, service.indexer)
    pending: list[frozenset[str]] = []
    repo.migrate(then=lambda conn: pending.append(reindex.sync(conn, service.registry)))
    service.registry.set_pending(pending[0])
    return repo
