"""Shared pytest fixtures.

PostgreSQL: the tests run against a throwaway cluster that `scripts/test` starts and
exports as CALAIM_FHIR_TEST_DATABASE_URL. Tests never skip for want of it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

TEST_DATABASE_URL_ENV = "CALAIM_FHIR_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test database (postgresql://postgres@127.0.0.1:<port>/calaim_test)."""
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if not url:
        pytest.fail(
            f"{TEST_DATABASE_URL_ENV} is not set: run the tests through `scripts/test`, "
            "which starts a throwaway PostgreSQL cluster and sets it",
            pytrace=False,
        )
    return url


@pytest.fixture
def fresh_pg_database(postgres_url: str) -> Iterator[str]:
    """A new, empty database in the test cluster; yields its URL, drops it afterwards."""
    name = f"calaim_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(postgres_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store for one test, on each store: a SQLite file, or a PostgreSQL
    database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fhir.db'}"
    else:
        yield request.getfixturevalue("fresh_pg_database")
