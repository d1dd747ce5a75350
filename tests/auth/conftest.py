"""The SMART tests run over HTTP against both stores, on apps with authentication on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract import conftest as contract
from tests.support import BASE, TestClient, fhir_client

database_url = contract.database_url  # the same fixture: a database on each store

TOKEN_URL = BASE + "/auth/token"
ORGANIZATION = "Organization/partner-org"


@pytest.fixture(scope="module")
def local(database_url: str) -> Iterator[TestClient]:
    """The operator's loopback app (authentication off) on the same database: for set-up."""
    with fhir_client(database_url) as client:
        client.put(
            "/fhir/Organization/partner-org",
            json={"resourceType": "Organization", "id": "partner-org", "name": "Partner"},
            headers={"Content-Type": "application/fhir+json"},
        )
        yield client


@pytest.fixture(scope="module")
def smart(database_url: str, local: TestClient) -> Iterator[TestClient]:
    """The app with SMART backend services on (``--auth smart``) and care relationships
    explicitly off: these tests' subject is the tokens and their scopes alone, which decide
    what a partner reaches when an operator turns relationships off
    (``CALAIM_FHIR_ACCESS_RELATIONSHIPS=false``). The default app is ``related``."""
    with fhir_client(database_url, auth="smart", access_relationships=False) as client:
        yield client


@pytest.fixture(scope="module")
def related(database_url: str, local: TestClient) -> Iterator[TestClient]:
    """The app as it is by default with authentication on: SMART backend services and the
    care relationships narrowing every partner (``CALAIM_FHIR_ACCESS_RELATIONSHIPS`` unset)."""
    with fhir_client(database_url, auth="smart") as client:
        yield client


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")
