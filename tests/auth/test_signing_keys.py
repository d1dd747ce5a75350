"""The access-token signing keys across workers: workers starting together on an empty store
agree on one key; ``calaim-fhir key rotate`` leaves the tokens already issued valid, and a
token signed with a key another worker has just loaded verifies at once everywhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from server.auth.keys import SigningKeys
from server.cli import app as cli
from server.search.service import build_search_service
from server.settings import Settings
from server.store.sql.opening import open_store
from tests.auth.conftest import ORGANIZATION, TOKEN_URL
from tests.auth.partners import Partner, token_form
from tests.support import TestClient, fhir_client

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def store(fresh_store_url: str) -> Iterator[Any]:
    settings = Settings(database_url=fresh_store_url)
    repo = open_store(settings, build_search_service(settings))
    try:
        yield repo.auth
    finally:
        repo.close()


def test_workers_starting_together_agree_on_one_first_key(store: Any) -> None:
    workers = [SigningKeys(store) for _ in range(4)]
    start = threading.Barrier(len(workers))

    def ensure(keys: SigningKeys) -> None:
        start.wait()
        keys.ensure()

    threads = [threading.Thread(target=ensure, args=(keys,)) for keys in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    rows = store.keys()
    assert len(rows) == 1
    assert {keys.current().kid for keys in workers} == {rows[0][0]}


def test_a_key_added_elsewhere_verifies_before_the_next_reload(store: Any) -> None:
    frozen = 1_000_000.0  # no time passes: only a lookup can find the new key
    here = SigningKeys(store, clock=lambda: frozen)
    here.ensure()
    elsewhere = SigningKeys(store, clock=lambda: frozen)
    elsewhere.ensure()
    first = here.current().kid
    assert elsewhere.current().kid == first  # ensure added no second key
    rotated = elsewhere.rotate()
    found = here.key(rotated)
    assert found is not None and found.kid == rotated
    assert here.key(first) is not None  # retired, still verifies
    assert here.key("no-such-key") is None
    assert here.key("") is None


def test_rotation_keeps_issued_tokens_and_new_tokens_verify_on_older_workers(
    fresh_store_url: str, tmp_path: Path
) -> None:
    def token(app: TestClient, partner: Partner) -> dict[str, str]:
        response = app.post("/fhir/auth/token", headers=FORM, data=token_form(
            partner.assertion(TOKEN_URL), "system/Patient.rs"))
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    with fhir_client(fresh_store_url) as local:
        local.put("/fhir/Organization/partner-org",
                  json={"resourceType": "Organization", "id": "partner-org"},
                  headers={"Content-Type": "application/fhir+json"})
        local.put("/fhir/Patient/k1", json={"resourceType": "Patient", "id": "k1"},
                  headers={"Content-Type": "application/fhir+json"})
    partner = Partner("RS384")
    partner.register(fresh_store_url, tmp_path, scope="system/Patient.rs",
                     organization=ORGANIZATION)
    # the subject is the signing keys: what the token's scope reaches, care relationships (on
    # by default) turned off explicitly
    with fhir_client(fresh_store_url, auth="smart", access_relationships=False) as older:
        before = token(older, partner)
        old_kids = {key["kid"] for key in older.get("/fhir/auth/jwks").json()["keys"]}
        assert len(old_kids) == 1
        result = CliRunner().invoke(cli, ["key", "rotate", "--database-url", fresh_store_url])
        assert result.exit_code == 0, result.output
        with fhir_client(fresh_store_url, auth="smart", access_relationships=False) as newer:
            jwks = newer.get("/fhir/auth/jwks").json()["keys"]
            assert {key["kid"] for key in jwks} > old_kids  # the retired key still listed
            after = token(newer, partner)
            assert newer.get("/fhir/Patient/k1", headers=before).status_code == 200
        assert older.get("/fhir/Patient/k1", headers=before).status_code == 200
        assert older.get("/fhir/Patient/k1", headers=after).status_code == 200
