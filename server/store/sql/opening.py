"""Opening the configured store: the composition root's one way to the SQL adapter."""

from __future__ import annotations

from server.search.service import SearchService
from server.settings import Settings
from server.store.sql import reindex
from server.store.sql.adapter import SqlRepository
from server.store.sql.dialect import open_dialect


def open_store(settings: Settings, search: SearchService) -> SqlRepository:
    """Open the configured database, bring its schema up to date and check durability. Every
    version written is indexed by ``search``'s indexer; parameters whose index rows are not
    yet complete are marked pending in its registry."""
    dialect = open_dialect(
        settings.database_url,
        pool_size=settings.pg_pool_size,
        busy_timeout_ms=settings.busy_timeout_ms,
        query_budget_ms=settings.query_budget_ms,
    )
    repo = SqlRepository(dialect, search.indexer)
    pending: list[frozenset[str]] = []
    repo.migrate(then=lambda conn: pending.append(reindex.sync(conn, search.registry)))
    search.registry.set_pending(pending[0])
    return repo
