"""Every contract test runs against both stores: SQLite (a tmp file) and PostgreSQL.

One database and one app per module and store; the data tables are emptied before each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Acting,
    TestClient,
    clear_store,
    fhir_client,
    postgres_database,
    sqlite_url,
)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """A database for this module on the store under test."""
    if request.param == "sqlite":
        folder: Path = tmp_path_factory.mktemp("sqlite")
        yield sqlite_url(folder / "fhir.db")
    else:
        postgres_url: str = request.getfixturevalue("postgres_url")
        with postgres_database(postgres_url) as url:
            yield url


@pytest.fixture(scope="module")
def _module_client(database_url: str) -> Iterator[TestClient]:
    with fhir_client(database_url) as client:
        yield client


@pytest.fixture
def client(_module_client: TestClient, database_url: str) -> TestClient:
    """An HTTP client for the app on an empty store (SQLite or PostgreSQL)."""
    clear_store(database_url)
    return _module_client


@pytest.fixture
def make_client(client: TestClient, database_url: str
                ) -> Callable[..., AbstractContextManager[TestClient]]:
    """Another app, with other Settings, on the same (emptied) database."""

    def make(**overrides: Any) -> AbstractContextManager[TestClient]:
        return fhir_client(database_url, **overrides)

    return make


@pytest.fixture(scope="module")
def acting() -> Acting:
    """Who the callers of ``acting_client`` are: set with ``acting.as_(principal)``."""
    return Acting()


@pytest.fixture(scope="module")
def acting_client(
    request: pytest.FixtureRequest, database_url: str, acting: Acting
) -> Iterator[TestClient]:
    """An app whose callers are ``acting``'s principal, with the coordination platform the
    test module names (``PLATFORM_ORGANIZATION``)."""
    platform = getattr(request.module, "PLATFORM_ORGANIZATION", None)
    with fhir_client(database_url, principals=acting, coordination_platform=platform) as client:
        yield client
