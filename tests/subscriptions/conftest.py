"""The subscription tests' fixtures: a real receiver on 127.0.0.1 and a server on each store
whose deliverer polls often and gives up after two seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.subscriptions.receiver import Receiver, receiver
from tests.support import TestClient, fhir_client, sqlite_url


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as rec:
        yield rec


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "fhir.db")
    return str(request.getfixturevalue("fresh_pg_database"))


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with fhir_client(
        database,
        subscription_allow_http_loopback=True,
        subscription_poll_seconds=0.05,
        subscription_backoff_max_seconds=0.2,
        subscription_retry_hours=2 / 3600,  # two seconds
    ) as c:
        yield c
