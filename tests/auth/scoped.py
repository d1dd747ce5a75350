"""An app whose only access policy is the SMART scope policy, acting as whichever principal
a test sets (``Acting``), with a scene the local operator wrote first."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from server.auth.principal import LOCAL
from server.auth.scope_policy import SmartScopes
from server.search.service import build_search_service
from server.settings import Settings
from tests.support import FHIR_JSON, Acting, TestClient, fhir_client


@contextmanager
def scoped_app(
    database_url: str, acting: Acting, scene: Iterable[dict[str, Any]]
) -> Iterator[TestClient]:
    policy = SmartScopes(build_search_service(Settings(database_url=database_url)).context)
    acting.as_(LOCAL)  # the scene is the operator's
    with fhir_client(database_url, principals=acting, policies=[policy]) as client:
        for resource in scene:
            response = client.put(
                f"/fhir/{resource['resourceType']}/{resource['id']}",
                json=resource,
                headers={"Content-Type": FHIR_JSON},
            )
            assert response.status_code in (200, 201), response.text
        yield client
